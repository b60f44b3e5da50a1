"""The speed-run CNN: a frozen whitening stem, then wide conv-pool-norm stages.

The design follows Keller Jordan's airbench94 (arXiv:2404.00498), the fastest known
CIFAR-10 recipe to 94%, re-implemented on deepstrata's named-layer API:

- ``stem``: a 2x2 convolution (no padding) whose weights are fixed before training to
  whiten 2x2 patches of the training images: the eigenvectors of the patch covariance,
  scaled by 1/sqrt(eigenvalue), and their negatives, so that after the GELU both signs
  survive. Only its bias trains. Edges and colour contrasts arrive decorrelated, which
  saves the first epochs the network would spend learning that.
- ``stage1`` … ``stageK``: conv 3x3 → max-pool /2 → BatchNorm → GELU → conv 3x3 →
  BatchNorm → GELU; widths ``width, 4*width, 4*width``. BatchNorm scales stay fixed at 1
  (only shifts train, with a large learning rate; see ``TrainConfig.norm_lr_scale``) and
  convolutions start as identity maps on their first input channels (Dirac init).
- ``head``: spatial max, a linear map without bias, logits scaled by 1/9.

Call ``init_whitening(images)`` with training images before training (``fit`` does).
"""

from __future__ import annotations

import torch
from torch import nn

from deepstrata.models.base import ClassifierHead, ImageModel
from deepstrata.models.cnn import stage_count

WHITEN_KERNEL = 2
LOGIT_SCALE = 1 / 9


class DiracConv(nn.Conv2d):
    """3x3 'same' convolution without bias, initialised as identity on its first input channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, kernel_size=3, padding="same", bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[: min(c_in, c_out)])


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with a fixed unit scale and fast-moving running statistics (momentum 0.4)."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


class ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = DiracConv(c_in, c_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = batch_norm(c_out)
        self.conv2 = DiracConv(c_out, c_out)
        self.norm2 = batch_norm(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class WhiteningStem(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels * WHITEN_KERNEL**2, WHITEN_KERNEL, padding=0, bias=True)
        self.conv.weight.requires_grad_(False)
        nn.init.zeros_(self.conv.bias)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4, chunk: int = 512) -> None:
        """Set the kernels from normalised images [N, C, H, W]: ±eigenvectors / sqrt(eigenvalue + eps).

        The patch covariance is accumulated chunk by chunk in float64, so memory stays
        small and the result does not depend on the chunking.
        """
        c, k = images.shape[1], WHITEN_KERNEL
        dim = c * k * k
        cov = torch.zeros(dim, dim, dtype=torch.float64, device=images.device)
        count = 0
        for start in range(0, len(images), chunk):
            x = images[start : start + chunk].double()
            patches = x.unfold(2, k, 1).unfold(3, k, 1)  # N, C, H', W', k, k
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, dim)
            cov += patches.T @ patches
            count += len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov / max(count, 1))
        order = eigenvalues.argsort(descending=True)
        kernels = (eigenvectors[:, order] / torch.sqrt(eigenvalues[order].clamp_min(0) + eps)).T
        kernels = kernels.reshape(dim, c, k, k)
        self.conv.weight.copy_(torch.cat([kernels, -kernels]).to(self.conv.weight))


class WhitenedCNN(ImageModel):
    """Layers: ``stem``, ``stage1`` … ``stageK``, ``head``; input float images [N, C, H, W] in [0, 1]."""

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        *,
        width: int = 64,
        depth: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        super().__init__()
        channels, height, width_px = in_shape
        stages = depth if depth is not None else stage_count(height - 1, width_px - 1)
        widths = [width] + [4 * width] * (stages - 1)
        layers: dict[str, nn.Module] = {"stem": WhiteningStem(channels)}
        c_in = layers["stem"].conv.out_channels
        for index, c_out in enumerate(widths, start=1):
            layers[f"stage{index}"] = ConvGroup(c_in, c_out)
            c_in = c_out
        layers["head"] = ClassifierHead(c_in, num_classes, spatial=True, bias=False, scale=LOGIT_SCALE)
        self.set_layers(layers, family="whitened-cnn", in_shape=in_shape, num_classes=num_classes, width=width,
                        depth=stages, mean=mean, std=std)

    def init_whitening(self, images: torch.Tensor) -> None:
        """Fit the stem to training images given as floats in [0, 1] (normalised here first)."""
        self.layers["stem"].init_whitening(self.prepare(images.to(self.mean.device)))
