"""The whitened CNN: its stem whitens patches, its convolutions start as identities, it rebuilds from its spec."""

import torch

from deepstrata.models.registry import build_model
from deepstrata.models.whitened_cnn import WhitenedCNN


def correlated_images(n=64, seed=0):
    """Colour images whose channels and neighbouring pixels are strongly correlated."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 12, 12, generator=g).repeat_interleave(2, 2).repeat_interleave(2, 3)
    return (base.repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.8, 0.5]).view(1, 3, 1, 1)
            + 0.05 * torch.rand(n, 3, 24, 24, generator=g)).clamp(0, 1)


def test_stem_whitens_two_by_two_patches():
    images = correlated_images()
    model = WhitenedCNN((3, 24, 24), 10, width=8)
    model.init_whitening(images)
    conv = model.layers["stem"].conv
    with torch.no_grad():
        out = torch.nn.functional.conv2d(model.prepare(images), conv.weight)  # no bias, before the GELU
    half = out[:, : conv.out_channels // 2].permute(0, 2, 3, 1).reshape(-1, conv.out_channels // 2).double()
    cov = half.T @ half / len(half)
    # Whitened up to eps: direction k keeps variance lambda_k / (lambda_k + eps), nothing across directions.
    patches = model.prepare(images).unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    assert torch.allclose(torch.diag(cov), eigenvalues / (eigenvalues + 5e-4), atol=1e-3)
    assert (cov - torch.diag(torch.diag(cov))).abs().max() < 1e-3
    assert torch.equal(conv.weight[12:], -conv.weight[:12])  # the negated copy keeps both signs past the GELU
    assert not conv.weight.requires_grad and conv.bias.requires_grad


def test_whitening_does_not_depend_on_chunking():
    images = correlated_images(40)
    a, b = WhitenedCNN((3, 24, 24), 10, width=8), WhitenedCNN((3, 24, 24), 10, width=8)
    a.layers["stem"].init_whitening(a.prepare(images), chunk=7)
    b.layers["stem"].init_whitening(b.prepare(images), chunk=512)
    assert torch.allclose(a.layers["stem"].conv.weight, b.layers["stem"].conv.weight, atol=1e-5)


def test_shape_layers_dirac_init_and_rebuild():
    model = WhitenedCNN((3, 32, 32), 10, width=16)
    assert model.layer_names == ["stem", "stage1", "stage2", "stage3", "head"]
    assert model.feature_dim == 64
    out = model.forward_intermediates(torch.rand(2, 3, 32, 32))
    assert out["stage1"].shape == (2, 16, 15, 15) and out["stage3"].shape == (2, 64, 3, 3)
    conv = model.layers["stage2"].conv2
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1
    assert torch.equal(conv.weight[0, 0], identity) and conv.weight[0, 1].abs().sum() == 0
    norm = model.layers["stage1"].norm1
    assert not norm.weight.requires_grad and norm.bias.requires_grad
    rebuilt = build_model(model.spec)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(3, 3, 32, 32)
    model.eval(), rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))
    head = model.layers["head"]
    assert head.fc.bias is None and torch.allclose(model(x), head.fc(model.forward_features(x)) / 9)
    assert WhitenedCNN((1, 28, 28), 10).layer_names[-2] == "stage3"
