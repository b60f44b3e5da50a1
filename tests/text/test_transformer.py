"""The from-scratch Transformer: named layers, shapes, masking, positions, pooling."""

from __future__ import annotations

import pytest
import torch

from deepstrata.models.registry import build_model
from deepstrata.models.transformer import TransformerClassifier


def model(**kwargs) -> TransformerClassifier:
    torch.manual_seed(0)
    options = dict(dim=32, layers=2, heads=4, max_length=40, dropout=0.0)
    options.update(kwargs)
    return TransformerClassifier(100, 3, **options).eval()


def ids_batch() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 100, (3, 12), generator=generator)
    ids[:, 0] = 1
    ids[1, 7:] = 0
    ids[2, 3:] = 0
    return ids


def test_named_layers_shapes_and_spec():
    net = model()
    assert net.layer_names == ["embed", "block1", "block2", "head"] and net.feature_dim == 32
    ids = ids_batch()
    assert net(ids).shape == (3, 3)
    inter = net.forward_intermediates(ids)
    assert [inter[n].shape for n in ("embed", "block1", "block2")] == [(3, 12, 32)] * 3
    assert inter["head"].shape == (3, 3)
    assert list(net.forward_intermediates(ids, ["block1"])) == ["block1"]
    states, mask = net.forward_tokens(ids)
    assert states.shape == (3, 12, 32) and mask.sum(1).tolist() == [12, 7, 3]
    assert net.forward_features(ids).shape == (3, 32)
    rebuilt = build_model(net.spec)
    rebuilt.load_state_dict(net.state_dict())
    assert torch.equal(rebuilt.eval()(ids), net(ids))


@pytest.mark.parametrize("positions,pooling", [("learned", "mean"), ("rotary", "mean"), ("rotary", "cls")])
def test_padding_never_changes_a_texts_outputs(positions, pooling):
    net = model(positions=positions, pooling=pooling)
    ids = ids_batch()
    with torch.no_grad():
        alone = [net.forward_tokens(ids[i:i + 1, : int((ids[i] != 0).sum())])[0][0] for i in range(3)]
        padded = torch.cat([ids, torch.zeros(3, 9, dtype=torch.long)], dim=1)
        states, mask = net.forward_tokens(padded)
        for i in range(3):
            n = int(mask[i].sum())
            torch.testing.assert_close(states[i, :n], alone[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net(padded), net(ids), atol=1e-5, rtol=1e-5)
        single = torch.cat([net(ids[i:i + 1, : int((ids[i] != 0).sum())]) for i in range(3)])
        torch.testing.assert_close(net(padded), single, atol=1e-5, rtol=1e-5)


def test_attention_maps_mask_padding_and_match_sdpa():
    net = model(positions="rotary")
    ids = ids_batch()
    with torch.no_grad():
        maps = net.attention_maps(ids)
        assert list(maps) == ["block1", "block2"] and maps["block1"].shape == (3, 4, 12, 12)
        torch.testing.assert_close(maps["block2"].sum(-1), torch.ones(3, 4, 12))
        assert maps["block1"][2, :, :, 3:].abs().max() == 0  # no query attends to padding
        mask = net.padding_mask(ids)
        x = net.layers["embed"](ids)
        x_maps, _ = net.layers["block1"](x, mask, (net.rotary_cos, net.rotary_sin), return_weights=True)
        torch.testing.assert_close(x_maps, net.layers["block1"](x, mask, (net.rotary_cos, net.rotary_sin)))


def test_positions_matter_and_differ_between_learned_and_rotary():
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    swapped = torch.tensor([[1, 8, 7, 6, 5]])
    for positions in ("learned", "rotary"):
        net = model(positions=positions)
        with torch.no_grad():
            net.layers["embed"].tokens.weight.normal_()
            assert not torch.allclose(net.forward_tokens(ids)[0][0, 1], net.forward_tokens(swapped)[0][0, 4])
    assert "positions" not in dict(model(positions="rotary").layers["embed"].named_children()) or \
        model(positions="rotary").layers["embed"].positions is None
