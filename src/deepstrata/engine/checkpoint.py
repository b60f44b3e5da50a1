"""Checkpoints as safetensors (weights, optimizer tensors, RNG) plus a JSON of the rest.

Nothing here is a pickle, so loading a checkpoint can never run code. Every file is
written to a temporary name in the same directory and renamed into place; the JSON is
written last and names the step, so a checkpoint whose tensors and JSON disagree (a
crash between renames) is detected instead of silently mixed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from deepstrata.errors import RunError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RunError(f"{path}: checkpoint file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({err})") from None


def _step_of(path: Path) -> str | None:
    if not path.is_file():
        raise RunError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("step")
    except (SafetensorError, OSError, ValueError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({err})") from None


def save_weights(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    _atomic_save_tensors(Path(path), dict(model.state_dict()), metadata or {})


def load_weights(path: Path, model: nn.Module) -> None:
    tensors = _load_tensors(Path(path))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise RunError(f"{path}: weights do not fit the model ({first})") from None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in saved["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def rng_state(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """This process's random state: torch's CPU generator and, on CUDA, ``device``'s generator."""
    state = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_checkpoint(directory: Path, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                    extra: dict[str, torch.Tensor] | None = None,
                    rng_states: list[dict[str, torch.Tensor]] | None = None) -> None:
    """Write ``name.safetensors`` (weights), ``name.train.safetensors`` (optimizer, RNG) and ``name.json``.

    ``extra`` holds other training state as named tensors (e.g. Lookahead's average);
    ``load_checkpoint`` copies them back into the same dict's tensors. ``rng_states`` are
    the random states of ranks 1, 2, … of a data-parallel run (see ``rng_state``), each of
    which draws its own dropout masks; each rank gets its own back on resume.
    """
    directory = Path(directory)
    step = str(state["step"])
    save_weights(directory / f"{name}.safetensors", model, {"step": step})
    tensors, optimizer_meta = _optimizer_tensors(optimizer)
    for key, value in (extra or {}).items():
        tensors[f"extra.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = rng
    for rank, states in enumerate(rng_states or []):
        if rank > 0:
            tensors.update({f"rng.rank{rank}.{kind}": value for kind, value in states.items()})
    _atomic_save_tensors(directory / f"{name}.train.safetensors", tensors, {"step": step})
    atomic_write_json(directory / f"{name}.json", {**state, "optimizer": optimizer_meta})


def load_checkpoint(directory: Path, name: str, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    extra: dict[str, torch.Tensor] | None = None, rank: int = 0,
                    device: torch.device | None = None) -> dict:
    """Restore weights, optimizer, ``rank``'s RNG state and ``extra``'s tensors (in place); return the loop state.

    A checkpoint without a state for ``rank`` (a run started with fewer processes) gives it
    rank 0's.
    """
    directory = Path(directory)
    meta_path = directory / f"{name}.json"
    if not meta_path.is_file():
        raise RunError(f"{directory}: no checkpoint to resume from (expected {meta_path.name})")
    try:
        state = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{meta_path}: not a valid checkpoint description ({err})") from None
    for suffix in (".safetensors", ".train.safetensors"):
        path = directory / f"{name}{suffix}"
        if _step_of(path) != str(state.get("step")):
            raise RunError(f"{path}: checkpoint files are from different steps (interrupted write); cannot resume")
    load_weights(directory / f"{name}.safetensors", model)
    tensors = _load_tensors(directory / f"{name}.train.safetensors")
    if optimizer is not None:
        _restore_optimizer(optimizer, tensors, state.pop("optimizer"))
    for key, value in (extra or {}).items():
        saved = tensors.get(f"extra.{key}")
        if saved is None or saved.shape != value.shape:
            raise RunError(f"{directory / name}.train.safetensors: no saved {key!r} of shape {tuple(value.shape)}; "
                           "the run was started with other settings")
        value.copy_(saved)
    torch.set_rng_state(tensors.get(f"rng.rank{rank}.torch", tensors["rng.torch"]))
    cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    own_cuda = tensors.get(f"rng.rank{rank}.cuda")
    if own_cuda is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(own_cuda, device)
    return state
