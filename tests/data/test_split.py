from dataclasses import dataclass

import pytest
import torch

from deepstrata.data.images import ImageDataset, read_digits
from deepstrata.data.split import Splits, split_dataset
from deepstrata.errors import DataError


@dataclass
class Table:
    """A non-image data set: ``split_dataset`` only needs these attributes."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None


def _table(counts=(50, 30, 20)) -> Table:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    return Table(x=torch.arange(len(y)), y=y, classes=[f"c{i}" for i in range(len(counts))])


def test_deterministic_for_a_seed():
    ds = _table()
    a, b = split_dataset(ds, seed=7), split_dataset(ds, seed=7)
    for name in ("train_x", "val_x", "test_x", "train_y", "val_y", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.test_x, split_dataset(ds, seed=8).test_x)


def test_disjoint_complete_and_stratified():
    ds = _table()
    s = split_dataset(ds, seed=0, val_fraction=0.1, test_fraction=0.2)
    assert isinstance(s, Splits) and not s.test_is_official and s.classes == ["c0", "c1", "c2"]
    parts = [set(s.train_x.tolist()), set(s.val_x.tolist()), set(s.test_x.tolist())]
    assert sum(len(p) for p in parts) == 100 and set.union(*parts) == set(range(100))
    assert torch.equal(ds.y[s.test_x], s.test_y) and torch.equal(ds.y[s.val_x], s.val_y)
    assert s.test_y.bincount().tolist() == [10, 6, 4]
    assert s.val_y.bincount().tolist() == [4, 2, 2]
    assert s.train_y.bincount().tolist() == [36, 22, 14]


def test_official_test_split_is_kept():
    train, test = _table(), _table((5, 5, 5))
    ds = Table(train.x, train.y, train.classes, test_x=test.x + 1000, test_y=test.y)
    s = split_dataset(ds, seed=3, val_fraction=0.2, test_fraction=0.5)
    assert s.test_is_official
    assert torch.equal(s.test_x, ds.test_x) and torch.equal(s.test_y, ds.test_y)
    assert len(s.train_x) + len(s.val_x) == 100
    assert s.val_y.bincount().tolist() == [10, 6, 4]
    assert not set(s.val_x.tolist()) & set(s.train_x.tolist())


def test_images_and_tiny_classes():
    digits = read_digits()
    s = split_dataset(digits, seed=0)
    assert s.train_x.shape[1:] == (1, 8, 8) and s.train_x.dtype == torch.uint8
    assert len(s.train_x) + len(s.val_x) + len(s.test_x) == 1797
    tiny = ImageDataset(x=torch.zeros(4, 1, 2, 2, dtype=torch.uint8), y=torch.tensor([0, 0, 0, 1]),
                        classes=["a", "b"])
    s = split_dataset(tiny, seed=0, val_fraction=0.0, test_fraction=0.34)
    assert 1 in s.train_y.tolist()
    assert s.val_x.shape == (0, 1, 2, 2) and s.test_y.tolist() == [0]


@pytest.mark.parametrize("kwargs", [{"val_fraction": 1.0}, {"test_fraction": -0.1}])
def test_bad_fractions(kwargs):
    with pytest.raises(DataError, match=next(iter(kwargs))):
        split_dataset(_table(), seed=0, **kwargs)


def test_bad_labels():
    ds = _table()
    with pytest.raises(DataError, match="labels"):
        split_dataset(Table(ds.x, ds.y[:-1], ds.classes), seed=0)
    with pytest.raises(DataError, match="integer"):
        split_dataset(Table(ds.x, ds.y.float(), ds.classes), seed=0)


def test_a_split_that_leaves_no_test_examples_is_refused_in_one_line():
    tiny = ImageDataset(x=torch.zeros(20, 1, 2, 2, dtype=torch.uint8), y=torch.arange(10).repeat(2),
                        classes=[str(i) for i in range(10)])
    with pytest.raises(DataError, match=r"data.test_fraction: 0.2 of each class leaves no test examples \(20 "):
        split_dataset(tiny, seed=0, val_fraction=0.0, test_fraction=0.2)
