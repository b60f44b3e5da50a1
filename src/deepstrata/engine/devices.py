"""Device choice and precision: the only place that asks which hardware is present."""

from __future__ import annotations

import contextlib

import torch

from deepstrata.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit choice that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: no Apple MPS device is available (use --device auto or cpu)")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device: got {name!r}, expected one of auto, cpu, cuda, mps")
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; ``32`` means full precision (no autocast)."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype is torch.float16:
        raise ConfigError("--precision fp16 needs a GPU; use bf16 or 32 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock read afterwards includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def move(batch, device: torch.device, non_blocking: bool = True):
    """Move a tensor or a tuple/list of tensors to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    return type(batch)(move(item, device, non_blocking) for item in batch)
