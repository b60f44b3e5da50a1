"""Train / validation / test splits that are the same for every model on a seed.

Deep models and classical baselines are compared on one split, so the split is a pure
function of the labels and a seed: stratified per class, no example in two parts, and an
official test split (when the format ships one) is kept as the test set and never
used for model selection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from deepstrata.errors import DataError
from deepstrata.split_rule import RULE


class Labelled(Protocol):
    """What ``split_dataset`` needs: ``ImageDataset`` or anything shaped like it."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None


@dataclass
class Positions:
    """A ``Labelled`` whose ``x`` are the examples' positions: how data that is not a tensor (texts, a
    run's training source in an update) goes through ``split_dataset``, the one split rule."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None


@dataclass
class Splits:
    """Three disjoint parts; ``test_is_official`` says the test part came with the data.

    ``notes`` state the split rule where it matters: when small classes give nothing to
    validation or test (``split_notes``); a run records them with its data notes.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    test_is_official: bool
    notes: list[str] = field(default_factory=list)


def split_notes(y: np.ndarray, *, val_fraction: float, test_fraction: float, official: bool) -> list[str]:
    """What the split rule did to classes too small to give an example to validation (or test).

    With 3 images per class and the default fractions, every class keeps 2 for training and
    gives 1 to test and none to validation: the validation split is empty. That is stated,
    with what follows from it, rather than left for a later step to fail on.
    """
    counts = np.bincount(y)[np.unique(y)] if len(y) else np.zeros(0, dtype=np.int64)
    test = np.zeros_like(counts) if official else np.minimum(np.round(test_fraction * counts), counts - 1)
    rest = (counts - test).astype(np.int64)
    val = np.minimum(np.round(val_fraction * rest), rest - 1).astype(np.int64)
    notes = []
    no_test = int(((test == 0) & (test_fraction > 0)).sum()) if not official else 0
    no_val = int(((val == 0) & (val_fraction > 0)).sum())
    if no_test:
        notes.append(f"split rule: {RULE}; {no_test} of {len(counts)} classes (the smallest has {counts.min()} "
                     "examples) give none to test")
    if no_val:
        empty = int(val.sum()) == 0
        notes.append(f"split rule: {RULE}; {no_val} of {len(counts)} classes (the smallest keeps {rest.min()} "
                     "examples after test) give none to validation"
                     + ("; the validation split is empty, so the model keeps its last epoch and the baselines "
                        "choose their regularisation by cross-validation on the training split (a fixed C if a "
                        "class has a single training example)" if empty else ""))
    elif val_fraction == 0:
        notes.append("no validation split (val_fraction 0): the model keeps its last epoch and the baselines "
                     "choose their regularisation by cross-validation on the training split (a fixed C if a class "
                     "has a single training example)")
    return notes


def split_dataset(ds: Labelled, *, seed: int, val_fraction: float = 0.1,
                  test_fraction: float = 0.2) -> Splits:
    """Split ``ds.x`` (any tensor with first dim N) and ``ds.y`` (int ``[N]``) by class.

    With an official test split, validation is ``val_fraction`` of the training data.
    Otherwise ``test_fraction`` of all examples is carved out first, then ``val_fraction``
    of the rest. Each class gives ``round(fraction * its count)`` examples, keeping at
    least one for training. Indices keep their original order inside each part.
    """
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"{key}: expected a fraction in [0, 1), got {value!r}")
    y = _labels(ds.y, len(ds.x), "labels")
    rng = np.random.default_rng(seed)
    official = ds.test_x is not None and ds.test_y is not None
    if official:
        test_y = _labels(ds.test_y, len(ds.test_x), "test labels")
        train_idx, val_idx = _stratified(y, val_fraction, rng)
        test_x, test_y_t = ds.test_x, ds.test_y.long()
    else:
        rest, test_idx = _stratified(y, test_fraction, rng)
        inner_train, inner_val = _stratified(y[rest], val_fraction, rng)
        train_idx, val_idx = rest[inner_train], rest[inner_val]
        test_x, test_y_t = _take(ds.x, test_idx), _take(ds.y, test_idx).long()
        if len(test_idx) == 0:  # nothing to score the model and the baselines on: say so, not an IndexError later
            counts = np.bincount(y)
            raise DataError(f"data.test_fraction: {test_fraction} of each class leaves no test examples ({len(y)} "
                            f"examples in {len(ds.classes)} classes, the largest has {counts.max()}; each class "
                            f"gives round({test_fraction} x its count)); give more examples per class or a larger "
                            "test_fraction")
    return Splits(train_x=_take(ds.x, train_idx), train_y=_take(ds.y, train_idx).long(),
                  val_x=_take(ds.x, val_idx), val_y=_take(ds.y, val_idx).long(),
                  test_x=test_x, test_y=test_y_t, classes=list(ds.classes),
                  test_is_official=official,
                  notes=split_notes(y, val_fraction=val_fraction, test_fraction=test_fraction, official=official))


def _labels(y: torch.Tensor, n: int, what: str) -> np.ndarray:
    labels = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(f"{what}: expected shape [{n}], got {list(labels.shape)}")
    if labels.dtype.kind not in "iub":
        raise DataError(f"{what}: expected integer class labels, got dtype {labels.dtype}")
    return labels


def _stratified(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) index arrays, sorted; ``fraction`` of each class is held out."""
    held = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        count = min(int(round(fraction * len(members))), len(members) - 1)
        held.append(members[:count])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out


def _take(t: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    return t[torch.from_numpy(idx.astype(np.int64))]


def limit_labels(splits: Splits, per_class: int, seed: int) -> Splits:
    """The few-label version of ``splits``: ``per_class`` training examples of each class, seeded.

    What transfer learning is for — a new task with a handful of labels — has to be
    measured as such: the validation split, which picks the epoch kept, is cut to the same
    ``per_class`` (a model selected on thousands of held-out labels would not be a
    few-label result). The test split stays whole: it measures, it never selects. The
    examples kept are the first ``per_class`` of each class in a seeded permutation, so a
    larger budget holds every example of a smaller one (a learning curve adds labels).
    """
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise DataError(f"data.labels_per_class: expected a positive whole number, got {per_class!r}")
    rng = np.random.default_rng([seed, 13])

    def keep(y: torch.Tensor) -> np.ndarray:
        labels = y.numpy()
        order = rng.permutation(len(labels))
        chosen = np.concatenate([order[labels[order] == c][:per_class] for c in range(len(splits.classes))])
        return np.sort(chosen)

    train, val = keep(splits.train_y), keep(splits.val_y)
    short = [splits.classes[c] for c in range(len(splits.classes)) if int((splits.train_y == c).sum()) < per_class]
    note = (f"few labels: {per_class} per class — {len(train)} of {len(splits.train_y)} training and {len(val)} of "
            f"{len(splits.val_y)} validation examples; the test split stays whole")
    if short:
        note += f" ({len(short)} classes have fewer training examples, all kept)"
    return Splits(train_x=_take(splits.train_x, train), train_y=_take(splits.train_y, train),
                  val_x=_take(splits.val_x, val), val_y=_take(splits.val_y, val), test_x=splits.test_x,
                  test_y=splits.test_y, classes=splits.classes, test_is_official=splits.test_is_official,
                  notes=[*splits.notes, note])
