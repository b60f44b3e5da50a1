"""The interaction log itself: events with ids mapped to indices, one per (user, item).

Readers (``interaction_readers``) give a ``RawLog`` of string ids as the file has them;
this module turns it into the ``InteractionLog`` everything downstream uses: contiguous
user and item indices (a known vocabulary keeps its indices, so a run can be updated
with new events), and repeated (user, item) events merged into their latest, counted
in the notes. Splits, the saved log and the recommenders all work on this one type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class InteractionLog:
    """A cleaned log: one event per (user, item), ids mapped to contiguous indices.

    ``users``/``items`` index ``user_ids``/``item_ids``; ``times`` orders events (the
    file order when the log has no time column). ``titles`` maps item ids to titles
    where the data has them.
    """

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    source: str
    format: str
    titles: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    has_time: bool = True

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class RawLog:
    """Events as read, ids still strings, before mapping and de-duplication."""

    users: list[str]
    items: list[str]
    times: np.ndarray
    source: str
    format: str
    titles: dict[str, str]
    notes: tuple[str, ...]
    has_time: bool


def _sorted_ids(ids: set[str] | list[str]) -> list[str]:
    """Numeric ids in numeric order, other ids in text order (stable across runs)."""
    ids = list(ids)
    try:
        return sorted(ids, key=lambda value: (float(value), value))
    except ValueError:
        return sorted(ids)


def extend_vocab(known: tuple[str, ...] | list[str], seen: list[str]) -> tuple[str, ...]:
    """Known ids keep their index; new ids are appended in sorted order."""
    index = set(known)
    return tuple(known) + tuple(_sorted_ids({value for value in seen if value not in index}))


def build_log(raw: RawLog, *, user_ids: tuple[str, ...] = (), item_ids: tuple[str, ...] = ()) -> InteractionLog:
    """Map ids to indices (extending the given vocabularies) and merge duplicate events.

    A (user, item) pair seen more than once keeps its latest event: the user's current
    state, and no item is both in a user's history and a target.
    """
    user_vocab = extend_vocab(user_ids, raw.users)
    item_vocab = extend_vocab(item_ids, raw.items)
    user_index = {value: i for i, value in enumerate(user_vocab)}
    item_index = {value: i for i, value in enumerate(item_vocab)}
    users = np.fromiter((user_index[u] for u in raw.users), dtype=np.int64, count=len(raw.users))
    items = np.fromiter((item_index[i] for i in raw.items), dtype=np.int64, count=len(raw.items))
    return _dedupe(InteractionLog(users, items, raw.times, user_vocab, item_vocab, raw.source, raw.format,
                                  dict(raw.titles), raw.notes, raw.has_time))


def _dedupe(log: InteractionLog, extra_note: bool = True) -> InteractionLog:
    order = np.lexsort((np.arange(len(log)), log.times))
    keys = log.users[order] * max(log.num_items, 1) + log.items[order]
    _, last_from_end = np.unique(keys[::-1], return_index=True)
    keep = np.sort(order[len(order) - 1 - last_from_end])
    merged = len(log) - len(keep)
    notes = log.notes
    if merged and extra_note:
        notes = notes + (f"{merged} repeated (user, item) events merged into their latest",)
    return InteractionLog(log.users[keep], log.items[keep], log.times[keep], log.user_ids, log.item_ids,
                          log.source, log.format, log.titles, notes, log.has_time)


def merge_logs(old: InteractionLog, new: RawLog) -> tuple[InteractionLog, dict]:
    """``old`` plus the events of ``new``: old ids keep their indices, new ids are appended."""
    added = build_log(new, user_ids=old.user_ids, item_ids=old.item_ids)
    times = added.times
    if not new.has_time:
        times = times + (old.times.max() + 1.0 if len(old) else 0.0)
    combined = InteractionLog(
        np.concatenate([old.users, added.users]), np.concatenate([old.items, added.items]),
        np.concatenate([old.times, times]), added.user_ids, added.item_ids,
        f"{old.source} + {new.source}", old.format, {**old.titles, **added.titles}, old.notes, old.has_time,
    )
    merged = _dedupe(combined, extra_note=False)
    stats = {
        "new_events": int(len(added)),
        "new_users": int(added.num_users - old.num_users),
        "new_items": int(added.num_items - old.num_items),
        "merged_duplicates": int(len(combined) - len(merged)),
    }
    return merged, stats
