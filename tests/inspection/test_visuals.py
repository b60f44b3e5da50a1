"""Pictures: receptive fields from the geometry, top crops, first-layer filters, activation maximisation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepstrata.inspect import visuals
from deepstrata.models.cnn import CNN
from deepstrata.models.mlp import MLP


class PoolThenConv(nn.Module):
    """Declares conv before pool but runs pool first: the field must follow the forward order."""

    def __init__(self) -> None:
        super().__init__()
        block = nn.Sequential()
        block.conv = nn.Conv2d(2, 2, 3, padding=1)
        block.pool = nn.MaxPool2d(2)
        self.layers = nn.ModuleDict({"a": nn.Conv2d(1, 2, 3, padding=1), "b": block,
                                     "c": nn.Conv2d(2, 2, 5, padding=2, dilation=1)})
        self.layer_names = list(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers["a"](x)
        x = self.layers["b"].conv(self.layers["b"].pool(x))
        return self.layers["c"](x)


def test_receptive_field_follows_the_forward_order():
    model = PoolThenConv()
    assert visuals.receptive_field(model, "a", (1, 16, 16)) == visuals.ReceptiveField(3, 1, 0.0)
    # a: 3; pool 2: 4 (stride 2, centre +0.5); conv 3 at stride 2: 8; conv 5 at stride 2: 16.
    assert visuals.receptive_field(model, "b", (1, 16, 16)) == visuals.ReceptiveField(8, 2, 0.5)
    assert visuals.receptive_field(model, "c", (1, 16, 16)) == visuals.ReceptiveField(16, 2, 0.5)
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_the_field_is_exactly_what_a_cnn_position_depends_on():
    torch.manual_seed(0)
    model = CNN((1, 32, 32), 10, width=8).eval()
    for layer, (row, col) in (("stem", (10, 20)), ("stage1", (7, 5))):
        field = visuals.receptive_field(model, layer, (1, 32, 32))
        x = torch.rand(4, 1, 32, 32, requires_grad=True)
        out = model.forward_intermediates(x, [layer])[layer]
        (grad,) = torch.autograd.grad(out[:, :, row, col].sum(), x)
        rows, cols = np.nonzero(grad.abs().sum(dim=(0, 1)).numpy())
        top, left, side_h, side_w = field.box(row, col, 32, 32)
        assert (side_h, side_w) == (field.size, field.size)
        assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (top, top + side_h, left, left + side_w)
    stem = visuals.receptive_field(model, "stem", (1, 32, 32))
    assert stem.box(0, 0, 32, 32) == (0, 0, 3, 3)
    assert stem.box(31, 31, 32, 32) == (29, 29, 3, 3)
    deep = visuals.receptive_field(model, "stage3", (1, 32, 32))
    assert deep.size > 32 and deep.box(1, 1, 32, 32) == (0, 0, 32, 32)


def test_top_patches_are_the_strongest_responses_one_per_image():
    torch.manual_seed(0)
    model = CNN((1, 8, 8), 10, width=16).eval()
    images = torch.rand(30, 1, 8, 8)
    responses = visuals.channel_responses(model, images, ["stem", "stage2", "head"])
    stem = responses["stem"]
    assert stem.spatial and stem.value.shape == (30, 8)
    assert not responses["head"].spatial
    channels = visuals.selective_channels(stem, 3)
    assert len(channels) == 3 and channels == sorted(channels)
    field = visuals.receptive_field(model, "stem", (1, 8, 8))
    crops, values = visuals.top_patches(images, stem, channels, field, k=5)
    assert crops.shape == (3, 5, 1, 3, 3)
    for i, channel in enumerate(channels):
        np.testing.assert_allclose(values[i], np.sort(stem.value[:, channel])[::-1][:5], rtol=1e-6)
        best = int(np.argmax(stem.value[:, channel]))
        top, left, _, _ = field.box(int(stem.row[best, channel]), int(stem.col[best, channel]), 8, 8)
        np.testing.assert_allclose(crops[i, 0], images[best, :, top:top + 3, left:left + 3].numpy())
    deep = visuals.receptive_field(model, "stage2", (1, 8, 8))
    whole, _ = visuals.top_patches(images, responses["stage2"], [0], deep, k=2)
    assert whole.shape == (1, 2, 1, 8, 8)


def test_first_layer_pictures_for_cnn_and_mlp():
    kind, kernels = visuals.first_layer_pictures(CNN((3, 16, 16), 4, width=16), (3, 16, 16))
    assert kernels.shape == (8, 3, 3, 3) and "convolution" in kind
    kind, templates = visuals.first_layer_pictures(MLP((1, 8, 8), 4, width=8), (1, 8, 8), limit=10)
    assert templates.shape == (10, 1, 8, 8) and "template" in kind
    norms = np.linalg.norm(templates.reshape(10, -1), axis=1)
    assert np.all(np.diff(norms) <= 1e-6)
    figure = visuals.filters_figure(kernels, "kernels")
    assert figure.axes


def test_activation_maximisation_excites_the_channel_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = CNN((1, 8, 8), 10, width=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    settings = visuals.MaximizeSettings(steps=40, lr=0.1)
    pictures, reached = visuals.maximize(model, "stage1", [0, 3], (1, 8, 8), settings)
    assert pictures.shape == (2, 1, 8, 8) and 0.0 <= pictures.min() and pictures.max() <= 1.0
    with torch.no_grad():
        gray = model.forward_intermediates(torch.full((1, 1, 8, 8), 0.5), ["stage1"])["stage1"].mean(dim=(2, 3))[0]
    assert reached[0] > float(gray[0]) and reached[1] > float(gray[3])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.get_num_threads() == threads
    assert "Adam lr 0.1, 40 steps" in settings.describe()
