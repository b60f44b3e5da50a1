"""Recommendation model families: named parts, causality, growth, rebuild from spec."""

from __future__ import annotations

import pytest
import torch

from deepstrata.errors import ConfigError
from deepstrata.models.recsys import MatrixFactorization, SASRec
from deepstrata.models.registry import build_model


def test_mf_parts_scores_and_bpr():
    torch.manual_seed(0)
    model = MatrixFactorization(5, 7, dim=4)
    assert model.layer_names == ["user_embedding", "item_embedding", "head"]
    users = torch.tensor([0, 3])
    scores = model(users)
    assert scores.shape == (2, 7)
    manual = model.user_embedding.weight[users] @ model.item_embedding.weight.T + model.head.item_bias
    assert torch.allclose(scores, manual)
    parts = model.forward_intermediates(users)
    assert parts["user_embedding"].shape == (2, 4) and torch.equal(parts["head"], scores)
    loss = model.bpr_loss(users, torch.tensor([1, 2]), torch.tensor([4, 5]), reg=1e-3)
    loss.backward()
    assert model.user_embedding.weight.grad is not None
    with pytest.raises(ConfigError, match="this model has: user_embedding"):
        model.forward_intermediates(users, ["block1"])


def test_sasrec_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    model = SASRec(20, dim=16, blocks=2, heads=2, max_len=8, dropout=0.0).eval()
    assert model.layer_names == ["item_embedding", "position_embedding", "block1", "block2", "head"]
    seq = torch.tensor([[0, 0, 3, 5, 7, 9, 11, 2]])
    changed = seq.clone()
    changed[0, -1] = 13
    states, states_changed = model.hidden(seq), model.hidden(changed)
    assert torch.allclose(states[:, :-1], states_changed[:, :-1], atol=1e-6)  # the future never flows back
    assert not torch.allclose(states[:, -1], states_changed[:, -1])
    shorter = seq[:, 2:]  # the same history without the padding columns
    assert torch.allclose(model(seq), model(shorter), atol=1e-5)
    assert model(seq).shape == (1, 20) and model.forward_features(seq).shape == (1, 16)
    parts = model.forward_intermediates(seq, ["block1", "head"])
    assert parts["block1"].shape == (1, 8, 16)


def test_growth_keeps_old_rows_and_spec_rebuilds():
    torch.manual_seed(0)
    mf = MatrixFactorization(3, 4, dim=4)
    old_users, old_items = mf.user_embedding.weight.detach().clone(), mf.item_embedding.weight.detach().clone()
    mf.grow(5, 6)
    assert torch.equal(mf.user_embedding.weight[:3], old_users)
    assert torch.equal(mf.item_embedding.weight[:4], old_items)
    assert mf(torch.tensor([4])).shape == (1, 6)
    assert isinstance(build_model(mf.spec), MatrixFactorization)
    assert build_model(mf.spec).item_embedding.num_embeddings == 6

    sas = SASRec(4, dim=8, blocks=1, heads=2, max_len=5)
    old = sas.item_embedding.weight.detach().clone()
    sas.grow(0, 9)
    assert torch.equal(sas.item_embedding.weight[:5], old) and sas.num_items == 9
    rebuilt = build_model(sas.spec)
    rebuilt.load_state_dict(sas.state_dict())
    assert rebuilt.item_features().shape == (9, 8)
