"""Device choice and precision: the only place that asks which hardware is present."""

from __future__ import annotations

import contextlib
import functools
import os

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


CPU_BF16_ENV = "DEEPSTRATA_CPU_BF16"
"""Overrides the CPU probe: ``0`` (no native bf16), or the feature's name (``AMX``, ``AVX512-BF16``).

For a container or VM whose CPU flags do not say what the host runs, and for the test suite,
which sets ``0`` so that its figures are fp32 on every machine (tests that check ``auto``
fake the probe instead)."""


def cpu_bf16_feature() -> str | None:
    """The CPU feature that runs bf16 matrix work natively (AMX or AVX512-BF16), or None.

    ``DEEPSTRATA_CPU_BF16`` when set; else asked of torch itself (what its oneDNN kernels will
    use), then of ``/proc/cpuinfo``, once per process. On a CPU without either, bf16 autocast
    is emulated and slower than fp32, so ``auto`` keeps fp32.
    """
    forced = os.environ.get(CPU_BF16_ENV)
    if forced is not None:
        return None if forced.strip() in ("", "0") else forced.strip()
    return probe_cpu_bf16()


@functools.lru_cache(maxsize=None)
def probe_cpu_bf16() -> str | None:
    """What this CPU has, asked of torch and of ``/proc/cpuinfo`` (``cpu_bf16_feature`` without the override)."""
    for feature, probe in (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported")):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return feature
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return None
    for feature, flag in (("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16")):
        if flag in flags:
            return feature
    return None


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """The precision a run trains in (``32``, ``bf16`` or ``fp16``) and why, for ``--precision`` on ``device``.

    ``auto`` is bf16 autocast where the hardware runs it natively (a CUDA GPU of compute
    capability 8 or more; a CPU with AMX or AVX512-BF16) and fp32 elsewhere. The answer
    is saved in the run's config.yaml, so resume and evaluate repeat it on any machine.
    """
    if precision != "auto":
        return precision, "as asked"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return "bf16", f"auto: this GPU (compute capability {major}.{minor}) runs bf16 natively"
        return "32", f"auto: this GPU (compute capability {major}.{minor}) has no native bf16"
    if device.type == "cpu":
        feature = cpu_bf16_feature()
        if feature is not None:
            return "bf16", f"auto: this CPU has {feature} (native bf16)"
        return "32", "auto: this CPU has neither AVX512-BF16 nor AMX, and emulated bf16 is slower than fp32"
    return "32", f"auto: fp32 on {device.type}"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; ``32`` means full precision (no autocast), ``auto`` as resolved."""
    precision = resolve_precision(precision, device)[0]
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
