"""The interaction log a run saves and loads back: ``.npz`` arrays and a JSON vocabulary.

A recommender run must recommend for the same users and items it was trained on, so it
keeps its log. The arrays are written without pickles, and loading checks them against
the vocabulary, so a damaged, cut or swapped file is a ``RunError`` naming it rather than
recommendations for the wrong users.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from deepstrata.data.interaction_log import InteractionLog


def save_log(log: InteractionLog) -> tuple[bytes, dict]:
    """The log as ``.npz`` bytes (no pickles) plus a JSON-able vocabulary."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, users=log.users, items=log.items, times=log.times)
    vocab = {"user_ids": list(log.user_ids), "item_ids": list(log.item_ids), "titles": log.titles,
             "source": log.source, "format": log.format, "notes": list(log.notes), "has_time": log.has_time}
    return buffer.getvalue(), vocab


def load_log(npz_path: Path, vocab_path: Path) -> InteractionLog:
    """The log a run saved (``save_log``), checked: a damaged or inconsistent file is a ``RunError`` naming it.

    Arrays are read without pickles; every index must point into the vocabulary, and the
    three arrays must be equally long, so a file cut short or swapped for another run's
    cannot give recommendations for the wrong users.
    """
    from deepstrata import runfiles
    from deepstrata.errors import RunError

    for path in (npz_path, vocab_path):
        if not path.is_file():
            raise RunError(f"{path}: not found; the run did not save its interaction log")
    arrays = runfiles.read_npz(npz_path, ("users", "items", "times"))
    users, items, times = arrays["users"], arrays["items"], arrays["times"]
    vocab = runfiles.read_json(vocab_path)
    user_ids = runfiles.string_list(vocab, "user_ids", vocab_path)
    item_ids = runfiles.string_list(vocab, "item_ids", vocab_path)
    source = runfiles.field(vocab, "source", str, vocab_path)
    fmt = runfiles.field(vocab, "format", str, vocab_path)
    titles = vocab.get("titles", {})
    notes = vocab.get("notes", [])
    if not isinstance(titles, dict) or not isinstance(notes, list):
        raise runfiles.damaged(vocab_path, "'titles' must be an object and 'notes' a list")
    if not len(users) == len(items) == len(times):
        raise runfiles.damaged(npz_path, f"arrays of different lengths (users {len(users)}, items {len(items)}, "
                                         f"times {len(times)})")
    for name, values, ids in (("users", users, user_ids), ("items", items, item_ids)):
        if values.dtype.kind not in "iu":
            raise runfiles.damaged(npz_path, f"{name} are {values.dtype}, expected integer indices")
        if len(values) and (values.min() < 0 or values.max() >= len(ids)):
            raise runfiles.damaged(npz_path, f"{name} index {int(values.max())} is outside the {len(ids)} ids "
                                             f"of {vocab_path.name}")
    return InteractionLog(users, items, times,
                          tuple(user_ids), tuple(item_ids), source, fmt,
                          dict(titles), tuple(str(n) for n in notes),
                          bool(vocab.get("has_time", True)))
