"""The text split: a ``TextDataset`` cut into train, validation and test like an image dataset.

Texts are split by the same deterministic, stratified ``data.split.split_dataset`` as
images, with row indices standing in for the examples, so a seed gives the same kind of
split whatever the data; an official test split (IMDB's ``test/``) is kept as the test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from deepstrata.data.text_dataset import TextDataset, check_classes


@dataclass
class TextSplits:
    """Three disjoint parts of a ``TextDataset`` (the same split ``split_dataset`` gives images)."""

    train_texts: list[str]
    train_y: np.ndarray
    val_texts: list[str]
    val_y: np.ndarray
    test_texts: list[str]
    test_y: np.ndarray
    classes: list[str]
    test_is_official: bool
    notes: list[str] = field(default_factory=list)


def split_text(ds: TextDataset, *, seed: int, val_fraction: float = 0.1, test_fraction: float = 0.2) -> TextSplits:
    """The deterministic stratified split of ``data.split.split_dataset``, applied to strings.

    Row indices stand in for the examples, so texts and images are split by one function.
    """
    from deepstrata.data.split import Positions, split_dataset

    check_classes(ds, ds.source or "<in-memory texts>")  # a TextDataset built in code is checked here
    official = ds.test_texts is not None and ds.test_labels is not None

    indexed = Positions(
        x=torch.arange(len(ds.texts)), y=torch.from_numpy(np.asarray(ds.labels, dtype=np.int64)), classes=ds.classes,
        test_x=torch.arange(len(ds.test_texts)) if official else None,
        test_y=torch.from_numpy(np.asarray(ds.test_labels, dtype=np.int64)) if official else None,
    )
    parts = split_dataset(indexed, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    test_source = ds.test_texts if official else ds.texts
    return TextSplits(
        train_texts=[ds.texts[i] for i in parts.train_x.tolist()], train_y=parts.train_y.numpy(),
        val_texts=[ds.texts[i] for i in parts.val_x.tolist()], val_y=parts.val_y.numpy(),
        test_texts=[test_source[i] for i in parts.test_x.tolist()], test_y=parts.test_y.numpy(),
        classes=list(ds.classes), test_is_official=official, notes=list(parts.notes),
    )


def limit_text_labels(splits: TextSplits, per_class: int, seed: int) -> TextSplits:
    """``data.split.limit_labels`` for texts: ``per_class`` training (and validation) texts of each class,
    seeded and nested (a larger budget holds a smaller one's texts); the test split whole."""
    from deepstrata.data.split import Splits, limit_labels

    def indexed(y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(len(y)), torch.from_numpy(np.asarray(y, dtype=np.int64))

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = map(indexed, (splits.train_y, splits.val_y, splits.test_y))
    few = limit_labels(Splits(train_x, train_y, val_x, val_y, test_x, test_y, splits.classes,
                              splits.test_is_official, []), per_class, seed)
    return TextSplits(
        train_texts=[splits.train_texts[i] for i in few.train_x.tolist()], train_y=few.train_y.numpy(),
        val_texts=[splits.val_texts[i] for i in few.val_x.tolist()], val_y=few.val_y.numpy(),
        test_texts=splits.test_texts, test_y=splits.test_y, classes=splits.classes,
        test_is_official=splits.test_is_official, notes=[*splits.notes, *few.notes],
    )
