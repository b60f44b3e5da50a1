"""Named layers and the shared feature API of the image model families."""

import pytest
import torch

from deepstrata.errors import ConfigError, RunError
from deepstrata.models.cnn import CNN, stage_count
from deepstrata.models.mlp import MLP
from deepstrata.models.registry import build_model

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("family", [CNN, MLP])
def test_named_layers_and_feature_api(family, shape):
    model = family(shape, 10, width=8).eval()
    x = torch.rand(3, *shape)
    names = model.layer_names
    assert names[0] == "stem" and names[-1] == "head" and names[1] == "stage1"
    feats = model.forward_intermediates(x)
    assert list(feats) == names
    assert feats["head"].shape == (3, 10)
    assert torch.allclose(feats["head"], model(x))
    pooled = model.forward_features(x)
    assert pooled.shape == (3, model.feature_dim)
    assert torch.allclose(model.layers["head"].fc(pooled), model(x), atol=1e-6)
    only = model.forward_intermediates(x, ["stage1"])
    assert list(only) == ["stage1"] and torch.equal(only["stage1"], feats["stage1"])


def test_cnn_depth_follows_input_size():
    assert stage_count(8, 8) == 2
    assert stage_count(28, 28) == 3
    assert stage_count(32, 32) == 3
    assert stage_count(4, 4) == 1
    assert CNN((1, 8, 8), 10).layer_names == ["stem", "stage1", "stage2", "head"]
    shapes = {k: tuple(v.shape) for k, v in CNN((1, 28, 28), 10, width=8).forward_intermediates(torch.rand(2, 1, 28, 28)).items()}
    assert shapes["stem"] == (2, 8, 28, 28)
    assert shapes["stage1"][-2:] == (14, 14) and shapes["stage3"][-2:] == (3, 3)


def test_unknown_layer_lists_the_real_ones():
    model = CNN((1, 8, 8), 10)
    with pytest.raises(ConfigError, match="stage9.*stem, stage1, stage2, head"):
        model.forward_intermediates(torch.rand(1, 1, 8, 8), ["stage9"])


def test_rebuild_from_spec_matches():
    model = CNN((3, 32, 32), 4, width=8)
    twin = build_model(model.spec)
    twin.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    model.eval(), twin.eval()
    assert torch.equal(model(x), twin(x))
    with pytest.raises(RunError, match="unknown model family"):
        build_model({"family": "rnn"})


def test_reset_classifier():
    model = MLP((1, 8, 8), 10, width=8)
    model.reset_classifier(3)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    assert model.spec["num_classes"] == 3
