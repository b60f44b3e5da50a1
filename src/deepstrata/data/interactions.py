"""Interaction logs: who interacted with what, and when — read, cleaned, id-mapped and split.

Readers accept a CSV/TSV with a header, Parquet (with the optional ``pyarrow``), and the
MovieLens formats ``u.data`` (100K), ``ratings.dat`` (1M/10M) and ``ratings.csv``
(20M/25M/latest), recognised by name or, for a header-less file, by shape. A directory
holding one of those files stands for it; MovieLens titles (``u.item``, ``movies.dat``,
``movies.csv``) next to it are picked up.

Nothing is dropped silently: merged duplicate events, rows below ``min_rating`` and
users too short to evaluate are counted in ``notes`` and in the split's ``counts``.

Splits never let the future in. Leave-last-out holds out each user's last event (test)
and second to last (validation), ordered by time; the history a prediction sees holds
only that user's earlier events. The temporal split cuts the whole log at two points in
time, so training holds only events strictly before every validation and test event.
(Leave-last-out is per user: another user's training events may be later than this
user's test event; the temporal split is the one with a global time order.)

This module is the public face: ``read_interactions`` and re-exports of the parts, which
live in ``interaction_readers`` (files into a ``RawLog``), ``interaction_log`` (id mapping,
merging), ``interaction_saved`` (the log a run keeps) and ``interaction_splits``.
"""

from __future__ import annotations

from pathlib import Path

from deepstrata.data.interaction_log import InteractionLog, RawLog, build_log, extend_vocab, merge_logs
from deepstrata.data.interaction_readers import (HEADERLESS_NAMES, ITEM_NAMES, MOVIELENS_FILES, RATING_NAMES,
                                                 TIME_NAMES, USER_NAMES, detect_format, read_raw_log,
                                                 resolve_source)
from deepstrata.data.interaction_saved import load_log, save_log
from deepstrata.data.interaction_splits import EvalSet, RecSplit, leave_last_out, split_log, temporal_split

__all__ = [
    "HEADERLESS_NAMES", "ITEM_NAMES", "MOVIELENS_FILES", "RATING_NAMES", "TIME_NAMES", "USER_NAMES",
    "EvalSet", "InteractionLog", "RawLog", "RecSplit",
    "build_log", "detect_format", "extend_vocab", "leave_last_out", "load_log", "merge_logs", "read_interactions",
    "read_raw_log", "resolve_source", "save_log", "split_log", "temporal_split",
]


def read_interactions(source: str | Path, **options) -> InteractionLog:
    """Read, check, map and de-duplicate an interaction log (see ``read_raw_log`` for options)."""
    return build_log(read_raw_log(source, **options))
