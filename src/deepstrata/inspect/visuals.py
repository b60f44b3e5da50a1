"""Pictures of what an image model's layers respond to: edges → textures → parts.

* ``first_layer_pictures``: the first layer's weights as images (3x3 kernels of a CNN's
  stem; whole-image templates of an MLP's first dense layer).
* ``channel_responses`` + ``top_patches``: for a few channels of each layer, the dataset
  crops that excite it most (Zeiler and Fergus, 2014). A crop is the channel's receptive
  field around the most active position of an image, worked out from the convolutions and
  poolings a forward pass runs (``receptive_field``), clamped to the image.
* ``activation_maps``: the same channels' maps for a few inputs.
* ``maximize``: optional activation maximisation (Erhan et al., 2009; Olah et al., 2017):
  an input optimised by gradient ascent to excite one channel, with its settings stated.

Everything here takes float images ``[N, C, H, W]`` in [0, 1] and a ``NamedLayerModel``;
nothing changes the model (hooks come off, gradients are taken with ``autograd.grad``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from deepstrata.inspect.taps import layer_module, layer_names, model_device, tap


@dataclass(frozen=True)
class ReceptiveField:
    """Side of the input square one position sees, the input stride between positions, position 0's centre."""

    size: int
    jump: int
    start: float

    def box(self, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, side_h, side_w)`` of the field around ``(row, col)``, clamped to lie inside the image."""
        side_h, side_w = min(self.size, height), min(self.size, width)
        top = int(math.floor(self.start + row * self.jump - (self.size - 1) / 2))
        left = int(math.floor(self.start + col * self.jump - (self.size - 1) / 2))
        top = min(max(top + (self.size - side_h) // 2, 0), height - side_h)
        left = min(max(left + (self.size - side_w) // 2, 0), width - side_w)
        return top, left, side_h, side_w


def _pair(value: int | tuple[int, ...]) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


_GEOMETRY = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@torch.inference_mode()
def receptive_field(model: nn.Module, layer: str, in_shape: Sequence[int]) -> ReceptiveField:
    """The receptive field of ``layer``'s positions, from every conv/pool that runs up to it (first axis).

    The convolutions and poolings are taken in the order a forward pass on a blank input
    runs them (not the order they are declared in), so a stage that pools before it
    convolves is measured right; a residual branch counts as the sequence it runs, which
    is the longest path through the block and so the field its output has.
    """
    names = layer_names(model)
    wanted = {id(m) for name in names[: names.index(layer) + 1] for m in layer_module(model, name).modules()
              if isinstance(m, _GEOMETRY)}
    order: list[nn.Module] = []
    handles = [m.register_forward_pre_hook(lambda module, _inputs: order.append(module))
               for m in model.modules() if id(m) in wanted]
    was_training = model.training
    try:
        model.eval()
        device = model_device(model)
        model(torch.zeros((1, *(int(v) for v in in_shape)), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    size, jump, start = 1, 1, 0.0
    for module in order:
        kernel, stride = _pair(module.kernel_size), _pair(module.stride)
        dilation = _pair(getattr(module, "dilation", 1))
        padding = module.padding
        pad = (dilation * (kernel - 1)) // 2 if padding == "same" else _pair(padding) if padding != "valid" else 0
        size += (kernel - 1) * dilation * jump
        start += ((kernel - 1) * dilation / 2 - pad) * jump
        jump *= stride
    return ReceptiveField(size, jump, start)


# ---------------------------------------------------------------- first layer


def first_layer_pictures(model: nn.Module, in_shape: Sequence[int], limit: int = 32) -> tuple[str, np.ndarray] | None:
    """The first weight layer as pictures ``[K, C, h, w]`` and what they are.

    A convolution gives its kernels; a dense layer on the flattened image gives one
    template per unit (its weights reshaped to the image). Units with the largest
    weight norm come first. ``None`` when the first weight layer is neither.
    """
    channels, height, width = (int(v) for v in in_shape)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            weights = module.weight.detach().float().cpu()
            kind = f"{weights.shape[-2]}x{weights.shape[-1]} convolution kernels of the first layer"
            break
        if isinstance(module, nn.Linear):
            if module.in_features != channels * height * width:
                return None
            weights = module.weight.detach().float().cpu().view(-1, channels, height, width)
            kind = "dense-layer templates (each unit's weights over the image)"
            break
    else:
        return None
    order = torch.argsort(weights.flatten(1).norm(dim=1), descending=True)[:limit]
    return kind, weights[order].numpy()


def filters_figure(pictures: np.ndarray, title: str):
    """A grid of filters: grayscale ones on a diverging map centred at 0, RGB ones rescaled to [0, 1] each."""
    cols = min(len(pictures), 16 if pictures.shape[-1] <= 5 else 8)
    cells: list[list[np.ndarray]] = [[] for _ in range(math.ceil(len(pictures) / cols))]
    for i, picture in enumerate(pictures):
        if picture.shape[0] == 3:
            lo, hi = picture.min(), picture.max()
            cells[i // cols].append(_rgb((picture - lo) / (hi - lo + 1e-12)))
        else:
            bound = float(np.abs(picture).max()) or 1.0
            cells[i // cols].append(_rgb(picture.mean(0), cmap="RdBu_r", lo=-bound, hi=bound))
    return grid_figure(cells, title=title, inches=0.55 if pictures.shape[-1] <= 5 else 1.0)


# ---------------------------------------------------------------- one-image grids


def _rgb(picture: np.ndarray, *, cmap: str | None = None, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """``[3, h, w]`` colour, ``[1, h, w]`` or ``[h, w]`` values → an RGB array ``[h, w, 3]`` in [0, 1]."""
    picture = np.asarray(picture, dtype=np.float32)
    if picture.ndim == 3 and picture.shape[0] == 3:
        return np.clip(np.transpose(picture, (1, 2, 0)), 0.0, 1.0)
    values = picture[0] if picture.ndim == 3 else picture
    scaled = np.clip((values - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    if cmap is None:
        return np.repeat(scaled[..., None], 3, axis=2)
    from matplotlib import colormaps

    return colormaps[cmap](scaled)[..., :3].astype(np.float32)


def _fit(cell: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour resize of ``[h, w, 3]`` into a white ``[side, side, 3]`` square, aspect kept."""
    h, w = cell.shape[:2]
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rows = np.minimum((np.arange(nh) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(nw) / scale).astype(int), w - 1)
    out = np.ones((side, side, 3), dtype=np.float32)
    top, left = (side - nh) // 2, (side - nw) // 2
    out[top : top + nh, left : left + nw] = cell[rows][:, cols]
    return out


def grid_figure(cells: Sequence[Sequence[np.ndarray | None]], *, title: str, row_labels: Sequence[str] | None = None,
                col_labels: Sequence[str] | None = None, cell_titles: Sequence[Sequence[str]] | None = None,
                inches: float = 0.95, cell_px: int = 48):
    """Pictures (RGB ``[h, w, 3]``) laid out as one image in one axes, with row, column and cell labels.

    One ``imshow`` instead of one axes per picture keeps a 50-picture grid fast to draw.
    """
    from matplotlib.figure import Figure

    rows, cols = len(cells), max(len(row) for row in cells)
    gap, band = 4, (13 if cell_titles is not None or col_labels is not None else 0)
    step_y, step_x = cell_px + gap + band, cell_px + gap
    canvas = np.ones((rows * step_y, cols * step_x - gap, 3), dtype=np.float32)
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if cell is not None:
                y, x = i * step_y + band, j * step_x
                canvas[y : y + cell_px, x : x + cell_px] = _fit(cell, cell_px)
    width = cols * inches * step_x / cell_px
    fig = Figure(figsize=(width + (0.9 if row_labels else 0.1), rows * inches * step_y / cell_px + 0.45))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    for i in range(rows):
        if row_labels is not None:
            ax.text(-6, i * step_y + band + cell_px / 2, row_labels[i], ha="right", va="center", fontsize=8)
        for j in range(cols):
            text = cell_titles[i][j] if cell_titles is not None and j < len(cell_titles[i]) else None
            if text is None and i == 0 and col_labels is not None and j < len(col_labels):
                text = col_labels[j]
            if text:
                ax.text(j * step_x + cell_px / 2, i * step_y + band - 2, text, ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- channel responses


@dataclass
class ChannelResponses:
    """Per image and channel of one layer: the strongest response and where it is.

    ``value`` ``[N, C]``; ``row``/``col`` ``[N, C]`` the position of the maximum (0 for
    2-D outputs, whose "field" is the whole input); ``spatial`` says which.
    """

    value: np.ndarray
    row: np.ndarray
    col: np.ndarray
    spatial: bool


@torch.inference_mode()
def channel_responses(model: nn.Module, images: torch.Tensor, layers: Sequence[str],
                      batch_size: int = 256) -> dict[str, ChannelResponses]:
    """Max response per image and channel of each layer (and its position), in one pass over ``images``."""
    model.eval()
    device = model_device(model)

    def read(t: torch.Tensor):
        if t.dim() == 4:
            best, where = t.flatten(2).max(dim=2)
            return best.float().cpu(), where.cpu(), t.shape[-1]
        return t.float().reshape(len(t), -1).cpu(), None, 0

    parts: dict[str, list] = {name: [] for name in layers}
    with tap(model, layers, transform=read) as record:
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].to(device))
            for name in layers:
                parts[name].append(record[name])
    out = {}
    for name in layers:
        value = torch.cat([p[0] for p in parts[name]]).numpy()
        spatial = parts[name][0][1] is not None
        if spatial:
            where = torch.cat([p[1] for p in parts[name]]).numpy()
            width = parts[name][0][2]
            row, col = where // width, where % width
        else:
            row = col = np.zeros(value.shape, dtype=np.int64)
        out[name] = ChannelResponses(value, row, col, spatial)
    return out


def selective_channels(responses: ChannelResponses, count: int) -> list[int]:
    """The ``count`` channels whose strongest response varies most across images (the most selective ones)."""
    spread = np.nan_to_num(responses.value.std(axis=0))
    order = np.argsort(-spread, kind="stable")
    return sorted(int(c) for c in order[:count])


def top_patches(images: torch.Tensor, responses: ChannelResponses, channels: Sequence[int],
                field: ReceptiveField | None, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """For each channel the crops of the ``k`` images that excite it most (one crop per image).

    Returns crops ``[len(channels), k, C, h, w]`` (zeros where fewer than ``k`` images
    exist) and their responses ``[len(channels), k]``. Without a spatial field the crop is
    the whole image.
    """
    _, channels_in, height, width = images.shape
    spatial = field is not None and responses.spatial
    side_h, side_w = (min(field.size, height), min(field.size, width)) if spatial else (height, width)
    k = min(k, len(images))
    crops = np.zeros((len(channels), k, channels_in, side_h, side_w), dtype=np.float32)
    values = np.zeros((len(channels), k), dtype=np.float32)
    for i, channel in enumerate(channels):
        order = np.argsort(-responses.value[:, channel], kind="stable")[:k]
        for j, index in enumerate(order):
            if spatial:
                top, left, _, _ = field.box(int(responses.row[index, channel]), int(responses.col[index, channel]),
                                            height, width)
            else:
                top, left = 0, 0
            crops[i, j] = images[index, :, top : top + side_h, left : left + side_w].cpu().numpy()
            values[i, j] = responses.value[index, channel]
    return crops, values


def patches_figure(layer: str, channels: Sequence[int], crops: np.ndarray, values: np.ndarray, field_size: int | None):
    """Rows: channels; columns: their top crops, each titled with its response."""
    where = f"receptive field {field_size}px, clamped to the image" if field_size else "whole input"
    cells = [[_rgb(crop) for crop in row] for row in crops]
    titles = [[f"{v:.2g}" for v in row] for row in values]
    return grid_figure(cells, title=f"{layer}: top-activating crops per channel ({where})",
                       row_labels=[f"ch {c}" for c in channels], cell_titles=titles)


@torch.inference_mode()
def activation_maps(model: nn.Module, images: torch.Tensor, layer: str, channels: Sequence[int]) -> np.ndarray | None:
    """Maps ``[n, len(channels), h, w]`` of ``layer`` for ``images``; ``None`` if its output is not spatial."""
    model.eval()
    with tap(model, [layer]) as record:
        model(images.to(model_device(model)))
    out = record[layer]
    if out.dim() != 4:
        return None
    return out[:, list(channels)].float().cpu().numpy()


def activation_maps_figure(layer: str, images: torch.Tensor, channels: Sequence[int], maps: np.ndarray):
    """Rows: inputs; first column the input, then each channel's map (own colour scale per channel)."""
    highs = np.maximum(maps.max(axis=(0, 2, 3)), 1e-6)
    cells = [[_rgb(images[i].cpu().numpy())] + [_rgb(maps[i, j], cmap="magma", hi=float(highs[j]))
                                                 for j in range(maps.shape[1])] for i in range(maps.shape[0])]
    return grid_figure(cells, title=f"{layer}: activation maps ({maps.shape[-2]}x{maps.shape[-1]}) "
                       f"of {maps.shape[1]} channels", col_labels=["input", *(f"ch {c}" for c in channels)])


# ---------------------------------------------------------------- activation maximisation


@dataclass(frozen=True)
class MaximizeSettings:
    """Gradient ascent on the input, parametrised as sigmoid(p) so pixels stay in [0, 1].

    The Adam update (betas 0.9, 0.999) is written out: ``torch.optim`` would import
    torch's compiler stack on first use, seconds of start-up for a few hundred steps.

    Objective per channel: its mean activation (spatial mean for maps) minus
    ``l2 * sum((x - 0.5)^2)``; each step shifts the image by up to ``jitter`` pixels
    (a standard regulariser against high-frequency patterns). Adam, ``steps`` steps.
    """

    steps: int = 128
    lr: float = 0.05
    l2: float = 1e-3
    jitter: int = 1
    seed: int = 0

    def describe(self) -> str:
        return (f"input = sigmoid(p), p from N(0, 0.01²) (seed {self.seed}); Adam lr {self.lr:g}, {self.steps} steps; "
                f"objective: mean activation of the channel − {self.l2:g}·Σ(x−0.5)²; random shift ≤{self.jitter}px "
                "each step")

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Hundreds of steps on a handful of tiny images: one torch thread beats several fighting over them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def maximize(model: nn.Module, layer: str, channels: Sequence[int], in_shape: Sequence[int],
             settings: MaximizeSettings = MaximizeSettings()) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``[len(channels), C, H, W]`` optimised to excite each channel, and the activations they reach."""
    model.eval()
    device = model_device(model)
    generator = torch.Generator().manual_seed(settings.seed)
    count = len(channels)
    p = (0.01 * torch.randn((count, *in_shape), generator=generator)).to(device).requires_grad_(True)
    first, second = torch.zeros_like(p), torch.zeros_like(p)
    index = torch.arange(count, device=device)
    picked = torch.tensor(list(channels), device=device)

    def objective(x: torch.Tensor) -> torch.Tensor:
        with tap(model, [layer], transform=lambda t: t) as record:
            model(x)
        out = record[layer]
        out = out.flatten(2).mean(2) if out.dim() == 4 else out.reshape(len(out), -1)
        return out[index, picked]

    with torch.enable_grad(), _one_thread():
        for step in range(1, settings.steps + 1):
            x = torch.sigmoid(p)
            if settings.jitter:
                shift = torch.randint(-settings.jitter, settings.jitter + 1, (2,), generator=generator)
                dy, dx = int(shift[0]), int(shift[1])
                x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = -objective(x).sum() + settings.l2 * ((x - 0.5) ** 2).sum()
            (grad,) = torch.autograd.grad(loss, p)
            with torch.no_grad():
                first.mul_(0.9).add_(grad, alpha=0.1)
                second.mul_(0.999).addcmul_(grad, grad, value=0.001)
                update = (first / (1 - 0.9**step)) / ((second / (1 - 0.999**step)).sqrt() + 1e-8)
                p.sub_(settings.lr * update)
        with torch.no_grad():
            x = torch.sigmoid(p)
            reached = objective(x)
    return x.detach().cpu().numpy(), reached.detach().cpu().numpy()


def maximize_figure(rows: Sequence[tuple[str, Sequence[int], np.ndarray, np.ndarray]]):
    """One row per layer: the optimised input for each of its channels, titled with the activation reached."""
    cells = [[_rgb(picture) for picture in pictures] for _, _, pictures, _ in rows]
    titles = [[f"ch {c}: {r:.2g}" for c, r in zip(channels, reached)] for _, channels, _, reached in rows]
    return grid_figure(cells, title="activation maximisation: inputs optimised to excite one channel",
                       row_labels=[layer for layer, _, _, _ in rows], cell_titles=titles, inches=1.1)
