"""Taps and feature extraction: right shapes for every named layer of every model family, hooks always removed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from deepstrata.errors import ConfigError
from deepstrata.inspect.taps import extract, layer_module, parse_layers, per_example_layers, pool, tap
from deepstrata.models.cnn import CNN
from deepstrata.models.mlp import MLP

IMAGE_CASES = [(CNN, (1, 8, 8)), (CNN, (3, 32, 32)), (MLP, (1, 28, 28))]


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("cls,in_shape", IMAGE_CASES, ids=["cnn-8px", "cnn-32px-rgb", "mlp-28px"])
def test_image_taps_give_each_named_layer_its_shape(cls, in_shape):
    torch.manual_seed(0)
    model = cls(in_shape, 10, width=16).eval()
    names = model.layer_names
    assert names[0] == "stem" and names[-1] == "head" and all(n.startswith("stage") for n in names[1:-1])
    x = torch.rand(5, *in_shape)
    with torch.no_grad(), tap(model, names) as record:
        model(x)
        reference = model.forward_intermediates(x)
    assert _hooks(model) == 0
    assert set(record) == set(names)
    for name in names:
        assert record[name].shape == reference[name].shape and record[name].shape[0] == 5, name
        torch.testing.assert_close(record[name], reference[name])
        assert record[name].dim() == (2 if cls is MLP or name == "head" else 4), name
    assert tuple(record["head"].shape) == (5, 10)
    assert record[names[-2]].shape[1] == model.feature_dim
    features = extract(model, x, names, batch_size=2, keep_flat=3)
    for name in names:
        shape = tuple(reference[name].shape[1:])
        assert features.shapes[name] == shape
        assert features.pooled[name].shape == (5, shape[0])
        assert features.flat[name].shape == (3, int(np.prod(shape)))
        torch.testing.assert_close(torch.from_numpy(features.pooled[name]), pool(reference[name]))


def test_uint8_images_are_read_as_floats_in_unit_range():
    model = CNN((1, 8, 8), 10, width=8).eval()
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    as_uint8 = extract(model, images, ["stage2"]).pooled["stage2"]
    as_float = extract(model, images.float() / 255.0, ["stage2"]).pooled["stage2"]
    np.testing.assert_allclose(as_uint8, as_float, rtol=1e-5, atol=1e-6)


def test_hooks_come_off_even_when_the_block_raises():
    model = CNN((1, 8, 8), 10, width=8)
    with pytest.raises(RuntimeError, match="boom"):
        with tap(model, ["stem", "stage1"]):
            assert _hooks(model) == 2
            raise RuntimeError("boom")
    assert _hooks(model) == 0


def test_unknown_layer_names_list_the_real_ones():
    model = CNN((1, 8, 8), 10, width=8)
    with pytest.raises(ConfigError, match=r"unknown layer 'stage9'; this model has: stem, stage1, stage2, head"):
        parse_layers(model, "stem,stage9")
    with pytest.raises(ConfigError, match="unknown layer 'nope'"):
        with tap(model, ["nope"]):
            pass
    assert _hooks(model) == 0
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_layers(model, "stem,,head")
    assert parse_layers(model, "head, stem") == ["stem", "head"]
    assert parse_layers(model, None) == ["stem", "stage1", "stage2", "head"]


def test_pooling_rules():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    torch.testing.assert_close(pool(maps), maps.mean(dim=(2, 3)))
    tokens = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    pooled = pool(tokens, mask)
    torch.testing.assert_close(pooled[0], tokens[0, :3].mean(0))
    torch.testing.assert_close(pooled[1], tokens[1].mean(0))
    torch.testing.assert_close(pool(tokens), tokens.mean(1))
    flat2d = torch.randn(3, 7)
    assert pool(flat2d) is not None and torch.equal(pool(flat2d), flat2d)


def test_a_model_without_forward_intermediates_is_read_through_hooks():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    features = extract(model, torch.rand(7, 1, 6, 6), ["0", "3"], batch_size=3)
    assert features.pooled["0"].shape == (7, 4) and features.pooled["3"].shape == (7, 3)
    assert features.shapes == {"0": (4, 6, 6), "3": (3,)}
    assert _hooks(model) == 0
    with pytest.raises(ConfigError, match="this model has: 0, 1, 2, 3"):
        parse_layers(model, ["9"])


@pytest.mark.skipif(importlib.util.find_spec("deepstrata.models.transformer") is None, reason="no text family")
def test_text_transformer_layers_and_masked_pooling():
    from deepstrata.models.transformer import TransformerClassifier

    torch.manual_seed(0)
    model = TransformerClassifier(50, 3, dim=16, layers=2, heads=2, max_length=12, dropout=0.0).eval()
    ids = torch.randint(1, 50, (4, 6))
    ids[0, 4:] = 0
    expected = {"embed": (6, 16), "block1": (6, 16), "block2": (6, 16), "head": (3,)}
    assert model.layer_names == list(expected)
    with torch.no_grad(), tap(model, model.layer_names) as record:
        model(ids)
    assert _hooks(model) == 0
    for name, shape in expected.items():
        assert tuple(record[name].shape) == (4, *shape), name
    features = extract(model, ids, model.layer_names)
    for name, shape in expected.items():
        assert features.pooled[name].shape == (4, shape[-1])
    # Mean over real tokens only: more padding leaves the pooled block features unchanged.
    padded = torch.cat([ids, torch.zeros(4, 3, dtype=ids.dtype)], dim=1)
    again = extract(model, padded, ["block2"]).pooled["block2"]
    np.testing.assert_allclose(again, features.pooled["block2"], atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("deepstrata.models.recsys") is None, reason="no recommender family")
def test_recommender_layers_per_example_and_tables():
    from deepstrata.models.recsys import SASRec, MatrixFactorization

    torch.manual_seed(0)
    sasrec = SASRec(30, dim=16, blocks=2, heads=2, max_len=8, dropout=0.0).eval()
    sequences = torch.randint(1, 31, (5, 8))
    sequences[0, :3] = 0
    per_example, tables = per_example_layers(sasrec, sequences, sasrec.layer_names)
    assert per_example == ["item_embedding", "block1", "block2", "head"]
    assert tables == ["position_embedding"]
    features = extract(sasrec, sequences, per_example, mask=sequences != 0)
    for name in per_example:
        assert features.shapes[name] == (8, 16) and features.pooled[name].shape == (5, 16)
    assert isinstance(layer_module(sasrec, "block1"), nn.Module)
    with torch.no_grad(), tap(sasrec, ["block1", "block2"]) as record:
        sasrec(sequences)
    assert tuple(record["block2"].shape) == (5, 8, 16)
    assert _hooks(sasrec) == 0
    with pytest.raises(ConfigError, match="not one output per example"):
        extract(sasrec, sequences, ["position_embedding"])

    mf = MatrixFactorization(6, 30, dim=8).eval()
    users = torch.arange(6)
    per_example, tables = per_example_layers(mf, users, mf.layer_names)
    assert per_example == ["user_embedding", "head"] and tables == ["item_embedding"]
    features = extract(mf, users, per_example)
    assert features.pooled["user_embedding"].shape == (6, 8) and features.pooled["head"].shape == (6, 30)
