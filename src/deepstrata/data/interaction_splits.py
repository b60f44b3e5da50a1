"""Splits of an interaction log that never let the future in: leave-last-out and temporal.

Leave-last-out holds out each user's last event (test) and second to last (validation),
ordered by time; the history a prediction sees holds only that user's earlier events.
The temporal split cuts the whole log at two points in time, so training holds only
events strictly before every validation and test event. Users too short to evaluate
are counted in the split's ``counts``, not dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepstrata.data.interaction_log import InteractionLog
from deepstrata.errors import ConfigError, DataError


@dataclass(frozen=True)
class EvalSet:
    """Users to evaluate, each with the history a prediction may see and the held-out targets.

    CSR layout: user ``users[r]`` has history ``history[history_ptr[r]:history_ptr[r+1]]``
    (item indices in time order) and targets ``targets[target_ptr[r]:target_ptr[r+1]]``.
    """

    users: np.ndarray
    history_ptr: np.ndarray
    history: np.ndarray
    target_ptr: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def histories(self, rows: range | np.ndarray) -> list[np.ndarray]:
        return [self.history[self.history_ptr[r]:self.history_ptr[r + 1]] for r in rows]

    def target_lists(self, rows: range | np.ndarray) -> list[np.ndarray]:
        return [self.targets[self.target_ptr[r]:self.target_ptr[r + 1]] for r in rows]


def _eval_set(users: list[int], histories: list[np.ndarray], targets: list[np.ndarray]) -> EvalSet:
    def csr(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        ptr = np.zeros(len(parts) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(p) for p in parts]) if parts else []
        flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
        return ptr, flat

    h_ptr, h = csr(histories)
    t_ptr, t = csr(targets)
    return EvalSet(np.asarray(users, dtype=np.int64), h_ptr, h, t_ptr, t)


@dataclass(frozen=True)
class RecSplit:
    """Training events (time-ordered per user) and the validation and test sets."""

    method: str
    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    train_times: np.ndarray
    val: EvalSet
    test: EvalSet
    counts: dict

    def train_sequences(self) -> list[np.ndarray]:
        """Each user's training items in time order (empty for users with none)."""
        return _group(self.train_users, self.train_items, self.num_users)

    def describe(self) -> dict:
        return {"method": self.method, "train": int(len(self.train_users)), "val": int(len(self.val)),
                "test": int(len(self.test)), **self.counts}


def _user_order(log: InteractionLog) -> np.ndarray:
    """Event indices sorted by user, then time, then file order."""
    return np.lexsort((np.arange(len(log)), log.times, log.users))


def _group(users: np.ndarray, items: np.ndarray, num_users: int) -> list[np.ndarray]:
    bounds = np.searchsorted(users, np.arange(num_users + 1))
    return [items[bounds[u]:bounds[u + 1]] for u in range(num_users)]


def leave_last_out(log: InteractionLog) -> RecSplit:
    """Per user by time: validation = second to last event, test = last, training = the rest.

    Users with two events give one to training and one to test; users with one event
    train only. Both are counted, not dropped.
    """
    order = _user_order(log)
    users, items, times = log.users[order], log.items[order], log.times[order]
    bounds = np.searchsorted(users, np.arange(log.num_users + 1))
    lengths = np.diff(bounds)
    keep = np.ones(len(users), dtype=bool)
    val_u, val_h, val_t, test_u, test_h, test_t = [], [], [], [], [], []
    for u in np.flatnonzero(lengths >= 2):
        start, end = bounds[u], bounds[u + 1]
        seq = items[start:end]
        test_u.append(int(u))
        test_h.append(seq[:-1])
        test_t.append(seq[-1:])
        keep[end - 1] = False
        if end - start >= 3:
            val_u.append(int(u))
            val_h.append(seq[:-2])
            val_t.append(seq[-2:-1])
            keep[end - 2] = False
    counts = {
        "users": int(log.num_users), "items": int(log.num_items), "interactions": int(len(log)),
        "users_without_interactions": int((lengths == 0).sum()),
        "users_single_interaction": int((lengths == 1).sum()),
        "users_not_in_test": int((lengths < 2).sum()),
        "users_not_in_val": int((lengths < 3).sum()),
    }
    return RecSplit("leave-last-out", log.num_users, log.num_items, users[keep], items[keep], times[keep],
                    _eval_set(val_u, val_h, val_t), _eval_set(test_u, test_h, test_t), counts)


def temporal_split(log: InteractionLog, val_fraction: float = 0.1, test_fraction: float = 0.1) -> RecSplit:
    """Cut the log at two moments: training strictly before validation, validation before test.

    A user is evaluated on a period when they have events in it and a history before it;
    their targets are the items of that period. Users with no earlier history (cold
    users) and targets never seen in training are counted.
    """
    if not log.has_time:
        raise ConfigError(f"{log.source}: the temporal split needs a time column (--time-column)")
    ordered = np.sort(log.times)
    n = len(ordered)
    t_val = ordered[min(n - 1, int(round(n * (1.0 - val_fraction - test_fraction))))]
    t_test = ordered[min(n - 1, int(round(n * (1.0 - test_fraction))))]
    if t_val == ordered[0] or t_test <= t_val:
        raise DataError(f"{log.source}: too few distinct times for a temporal split "
                        f"(validation starts at {t_val:g}, test at {t_test:g})")
    period = np.where(log.times < t_val, 0, np.where(log.times < t_test, 1, 2))
    order = _user_order(log)
    users, items, period = log.users[order], log.items[order], period[order]
    bounds = np.searchsorted(users, np.arange(log.num_users + 1))
    sets = []
    cold = {1: 0, 2: 0}
    for part in (1, 2):
        e_u, e_h, e_t = [], [], []
        for u in range(log.num_users):
            seq, when = items[bounds[u]:bounds[u + 1]], period[bounds[u]:bounds[u + 1]]
            targets = seq[when == part]
            if not len(targets):
                continue
            history = seq[when < part]
            if not len(history):
                cold[part] += 1
                continue
            e_u.append(u)
            e_h.append(history)
            e_t.append(targets)
        sets.append(_eval_set(e_u, e_h, e_t))
    train = period == 0
    seen = np.zeros(log.num_items, dtype=bool)
    seen[items[train]] = True
    counts = {
        "users": int(log.num_users), "items": int(log.num_items), "interactions": int(len(log)),
        "val_starts": float(t_val), "test_starts": float(t_test),
        "cold_users_not_in_val": cold[1], "cold_users_not_in_test": cold[2],
        "test_targets_unseen_in_training": int((~seen[sets[1].targets]).sum()),
        "users_single_interaction": int((np.diff(bounds) == 1).sum()),
    }
    return RecSplit("temporal", log.num_users, log.num_items, users[train], items[train], log.times[order][train],
                    sets[0], sets[1], counts)


def split_log(log: InteractionLog, method: str = "leave-last-out", *, val_fraction: float = 0.1,
              test_fraction: float = 0.1) -> RecSplit:
    if method == "leave-last-out":
        return leave_last_out(log)
    if method == "temporal":
        return temporal_split(log, val_fraction, test_fraction)
    raise ConfigError(f"--split: got {method!r}, expected leave-last-out or temporal")
