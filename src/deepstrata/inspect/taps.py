"""Named-layer taps: read what each named layer outputs, and leave the model as it was.

A tap is a context manager (lucidrains' ``Recorder`` with ``eject()``; torch's hook
handles): forward hooks go onto the named submodules on entry and come off on exit,
whatever happens inside, so a model is never left patched. Layers are addressed by the
names every family exposes (``stem``/``embed``, ``stage1``/``block1`` …, ``head``), so
no code here is specific to one model.

Pooling turns any layer's output into one vector per example, so that a linear probe,
CKA or a projection can compare layers of different shapes:

* 4-D ``[N, C, H, W]`` (convolution maps): mean over space → ``[N, C]``;
* 3-D ``[N, T, D]`` (token or sequence states): mean over tokens, over the real ones
  only when a padding mask ``[N, T]`` (True for a real token) is given → ``[N, D]``;
* 2-D ``[N, D]``: as is.

A layer that returns a tuple (e.g. a block giving its states and its attention) is read
through its first tensor. ``extract`` reads layers through the model's own
``forward_intermediates`` where it has one, else through taps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from deepstrata.errors import ConfigError

Inputs = torch.Tensor | tuple[torch.Tensor, ...]


def layer_names(model: nn.Module) -> list[str]:
    """The model's named layers in forward order (``model.layer_names``, else its children)."""
    names = getattr(model, "layer_names", None)
    if names is not None:
        return list(names)
    return [name for name, _ in model.named_children()]


def check_layers(model: nn.Module, names: Sequence[str]) -> None:
    """Raise ``ConfigError`` naming the layers that do exist if any of ``names`` is unknown."""
    check = getattr(model, "check_layers", None)
    if callable(check):
        check(list(names))
        return
    known = layer_names(model)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"unknown layer {', '.join(map(repr, unknown))}; this model has: {', '.join(known)}")


def parse_layers(model: nn.Module, layers: str | Sequence[str] | None) -> list[str]:
    """Layers to inspect in forward order: all by default, or ``"stem,stage2"`` / a list.

    Unknown names fail before any work starts, with the list of real ones.
    """
    known = layer_names(model)
    if layers is None:
        return known
    wanted = [part.strip() for part in layers.split(",")] if isinstance(layers, str) else [str(n) for n in layers]
    if not wanted or any(not name for name in wanted):
        raise ConfigError(f"--layers: expected comma-separated layer names from: {', '.join(known)}")
    check_layers(model, wanted)
    return [name for name in known if name in wanted]


def layer_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule a layer name stands for: ``model.layers[name]``, ``model.<name>``, or a nested ``….<name>``."""
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleDict) and name in layers:
        return layers[name]
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    nested = [path for path in modules if path.rsplit(".", 1)[-1] == name]
    if len(nested) == 1:
        return modules[nested[0]]
    raise ConfigError(f"layer {name!r}: no submodule of that name; this model has: {', '.join(layer_names(model))}")


def primary_tensor(output: object) -> torch.Tensor:
    """The tensor a layer outputs: itself, or the first tensor of a tuple/list/dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        values = list(output.values())
    else:
        values = list(output) if isinstance(output, (tuple, list)) else []
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"layer output of type {type(output).__name__} holds no tensor")


@contextmanager
def tap(
    model: nn.Module, layers: Sequence[str], transform: Callable[[torch.Tensor], object] | None = None
) -> Iterator[dict[str, object]]:
    """Record the outputs of ``layers`` during forward passes inside the ``with`` block.

    Yields a dict filled at each forward: ``name -> transform(output)`` (default: a
    detached copy, so later in-place ops of the model cannot change what was read).
    The hooks are removed on exit, also on error.
    """
    check_layers(model, layers)
    keep = transform or (lambda t: t.detach().clone())
    record: dict[str, object] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            record[name] = keep(primary_tensor(output))

        return hook

    try:
        for name in layers:
            handles.append(layer_module(model, name).register_forward_hook(hook_for(name)))
        yield record
    finally:
        for handle in handles:
            handle.remove()


def pool(t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One vector per example: ``[N, C, H, W]`` → spatial mean, ``[N, T, D]`` → (masked) token mean, ``[N, D]``."""
    t = t.float()
    if t.dim() == 2:
        return t
    if t.dim() == 3:
        if mask is not None and mask.shape == t.shape[:2]:
            weights = mask.to(t.dtype).unsqueeze(-1)
            return (t * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return t.mean(1)
    if t.dim() >= 4:
        return t.flatten(2).mean(2)
    return t.reshape(len(t), -1)


def flat(t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The whole activation per example as one vector (token maps pooled: their length varies)."""
    if t.dim() == 3:
        return pool(t, mask)
    return t.float().reshape(len(t), -1)


def batches(inputs: Inputs, batch_size: int) -> Iterator[tuple[slice, tuple[torch.Tensor, ...]]]:
    parts = inputs if isinstance(inputs, tuple) else (inputs,)
    n = len(parts[0])
    for start in range(0, n, batch_size):
        span = slice(start, min(start + batch_size, n))
        yield span, tuple(part[span] for part in parts)


def to_model_input(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images become floats in [0, 1] (what the image models take); other tensors pass as they are."""
    t = t.to(device)
    return t.float().div_(255.0) if t.dtype == torch.uint8 else t


@dataclass
class LayerFeatures:
    """What one pass over a sample read from each layer.

    ``pooled``: ``[N, D]`` per layer; ``flat``: the whole activation of the first
    ``keep_flat`` examples (for CKA); ``shapes``: one example's output shape per layer.
    """

    pooled: dict[str, np.ndarray]
    flat: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def read_layers(model: nn.Module, batch: tuple[torch.Tensor, ...], layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for one batch.

    Through the model's own ``forward_intermediates`` when it has one (it knows which
    outputs are per example and can stop early), else through hooks on ``model(*batch)``.
    """
    intermediates = getattr(model, "forward_intermediates", None)
    if callable(intermediates):
        return {name: primary_tensor(out) for name, out in intermediates(*batch, layers=list(layers)).items()}
    with tap(model, layers, transform=lambda t: t) as record:
        model(*batch)
    return {name: record[name] for name in layers}


def batch_mask(model: nn.Module, batch: tuple[torch.Tensor, ...], given: torch.Tensor | None) -> torch.Tensor | None:
    """The padding mask of a batch: the one given with the data, else ``model.padding_mask(*batch)`` if it has one."""
    if given is not None:
        return given
    padding_mask = getattr(model, "padding_mask", None)
    return padding_mask(*batch) if callable(padding_mask) else None


@torch.inference_mode()
def per_example_layers(model: nn.Module, inputs: Inputs, layers: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``layers`` into those with one output per example and the rest (e.g. an embedding table).

    Told apart by running 2 and then 3 examples: a per-example output grows with the batch.
    """
    model.eval()
    device = model_device(model)
    parts = inputs if isinstance(inputs, tuple) else (inputs,)
    sizes = []
    for n in (2, 3):
        batch = tuple(to_model_input(part[:n], device) for part in parts)
        outputs = read_layers(model, batch, layers)
        sizes.append({name: (out.shape[0] if out.dim() else 0) for name, out in outputs.items()})
    per_example = [name for name in layers if sizes[0][name] == 2 and sizes[1][name] == 3]
    return per_example, [name for name in layers if name not in per_example]


@torch.inference_mode()
def extract(
    model: nn.Module,
    inputs: Inputs,
    layers: Sequence[str],
    *,
    mask: torch.Tensor | None = None,
    batch_size: int = 256,
    keep_flat: int = 0,
    trim: bool = False,
) -> LayerFeatures:
    """Pooled features of ``layers`` for every example of ``inputs`` (and flat ones for the first ``keep_flat``).

    ``inputs`` is a tensor or a tuple of tensors sliced along dim 0 and passed as
    ``model(*batch)``; ``mask`` ``[N, T]`` marks real tokens for 3-D outputs (default:
    ``model.padding_mask`` when the model has one). With ``trim`` (right-padded token
    inputs of a model whose outputs ignore padding), each batch is cut after its longest
    text. Runs in eval mode, batch by batch, pooling at once so that a large map is
    never kept whole.
    """
    model.eval()
    device = model_device(model)
    layers = list(layers)
    pooled: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    flats: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    shapes: dict[str, tuple[int, ...]] = {}
    for span, batch in batches(inputs, batch_size):
        batch = tuple(to_model_input(part, device) for part in batch)
        masks = batch_mask(model, batch, None if mask is None else mask[span].to(device))
        if trim and masks is not None and masks.dim() == 2:
            length = max(1, int(masks.any(0).nonzero().max()) + 1 if masks.any() else 1)
            batch = tuple(part[:, :length] if part.dim() >= 2 and part.shape[1] == masks.shape[1] else part
                          for part in batch)
            masks = masks[:, :length]
        count = max(0, min(keep_flat - span.start, span.stop - span.start))
        outputs = read_layers(model, batch, layers)
        for name in layers:
            out = outputs[name]
            if out.dim() == 0 or out.shape[0] != len(batch[0]):
                raise ConfigError(f"layer {name!r} gives {list(out.shape)}, not one output per example; "
                                  "it cannot be pooled per example")
            pooled[name].append(pool(out, masks).cpu())
            shapes[name] = tuple(out.shape[1:])
            if count:
                flats[name].append(flat(out[:count], None if masks is None else masks[:count]).cpu())
    return LayerFeatures(
        pooled={name: torch.cat(parts).numpy() for name, parts in pooled.items()},
        flat={name: torch.cat(parts).numpy() for name, parts in flats.items() if parts},
        shapes=shapes,
    )
