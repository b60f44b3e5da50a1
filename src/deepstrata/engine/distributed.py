"""Everything about running as several processes lives here (torchrun + DDP).

Nothing else in deepstrata calls ``torch.distributed``. The rest of the code asks this
module for the rank and world size, for rank-0-only I/O, and for sums across ranks.

Failure modes users of other tools meet most — a start-up that hangs, a logger on every
rank, a collective that waits forever after another rank died — are turned into checks
with errors that name the rank and what went wrong: rank variables are validated before
``init_process_group``, the backend is checked to exist, and every collective has a
timeout (``DEEPSTRATA_DIST_TIMEOUT`` seconds, default 300).
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from deepstrata.errors import ConfigError

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    restarted: bool = False  # torchrun restarted the workers after a failure: the run resumes by itself

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


_ENV = DistEnv()


def current() -> DistEnv:
    return _ENV


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def restart_count() -> int:
    """How many times torchrun (``--max-restarts``) has restarted this process's worker group."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def read_environment() -> DistEnv:
    """Validate torchrun's variables; a missing or inconsistent one is named, before anything can hang."""
    missing = [name for name in RANK_VARIABLES if name not in os.environ]
    if missing:
        raise ConfigError(f"distributed launch: environment variable(s) {', '.join(missing)} not set "
                          "(launch with `deepstrata fit --devices N` or `torchrun --nproc-per-node N -m deepstrata fit`)")
    try:
        rank, world, local = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise ConfigError("distributed launch: RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if not 0 <= rank < world:
        raise ConfigError(f"distributed launch: RANK={rank} is outside 0..WORLD_SIZE-1 ({world - 1})")
    return DistEnv(rank=rank, world_size=world, local_rank=local)


def _restart_store(env: DistEnv, timeout: datetime.timedelta):
    """A fresh key space for a restarted worker group on one machine, or None to let torch make the store.

    torchrun keeps one TCPStore for the whole job (its "shared rendezvous store") and the
    process group's keys in it carry no attempt number, so a restarted rank can read the
    address its dead predecessor published and fail with "Gloo connectFullMesh failed ...
    Connection refused" (pytorch/pytorch#135712). On one machine every worker has the same
    restart count, so the count makes a prefix all ranks agree on. Across machines only the
    failed node's agent counts restarts; there the remedy is torch's own opt-out,
    ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a fresh store every attempt, docs/scaling.md).
    """
    attempt = restart_count()
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    one_machine = os.environ.get("GROUP_WORLD_SIZE", "1") == "1"
    if attempt == 0 or not shared or not one_machine:
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env.world_size,
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"deepstrata/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/attempt-{attempt}", store)


def setup(device_type: str) -> DistEnv:
    """Join the process group if launched by torchrun; otherwise a world of one. Idempotent."""
    global _ENV
    if _ENV.active or not launched_by_torchrun():
        return _ENV
    env = read_environment()
    if env.world_size == 1:
        _ENV = DistEnv(restarted=restart_count() > 0)
        return _ENV
    backend = "nccl" if device_type == "cuda" else "gloo"
    available = dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available()
    if not dist.is_available() or not available:
        raise ConfigError(f"rank {env.rank}: torch.distributed backend {backend} is not available in this PyTorch build")
    if backend == "nccl":
        if env.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"rank {env.rank}: LOCAL_RANK={env.local_rank} but only "
                              f"{torch.cuda.device_count()} CUDA device(s) are visible")
        torch.cuda.set_device(env.local_rank)
    timeout = datetime.timedelta(seconds=float(os.environ.get("DEEPSTRATA_DIST_TIMEOUT", "300")))
    store = _restart_store(env, timeout)
    if store is None:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(backend=backend, timeout=timeout, store=store, rank=env.rank,
                                world_size=env.world_size)
    _ENV = DistEnv(env.rank, env.world_size, env.local_rank, backend)
    # After a worker failed, torchrun restarts every node's workers, but only the failed node's agent
    # counts the restart: any rank's count means the whole group is a restart.
    count = torch.tensor([float(restart_count())], device="cuda" if backend == "nccl" else "cpu")
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    _ENV = DistEnv(env.rank, env.world_size, env.local_rank, backend, restarted=count.item() > 0)
    return _ENV


def teardown() -> None:
    global _ENV
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _ENV = DistEnv()


def device_type(setting: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` for a ``--device`` setting: what the process group's backend depends on."""
    from deepstrata.engine.devices import resolve_device

    return resolve_device(setting).type


def rank_device(setting: str) -> torch.device:
    """The device this rank trains on for a ``--device`` setting (its own GPU under DDP)."""
    from deepstrata.engine.devices import resolve_device

    return device_for_rank(resolve_device(setting))


def device_for_rank(device: torch.device) -> torch.device:
    """On CUDA each rank uses the GPU of its local rank."""
    if device.type == "cuda" and _ENV.active:
        return torch.device("cuda", _ENV.local_rank)
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around ``model`` when there are several ranks; the model itself otherwise."""
    if not _ENV.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a copy; the input is untouched). Identity for one process."""
    if not _ENV.active:
        return values
    out = values.detach().clone()
    try:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    except RuntimeError as err:
        raise RuntimeError(f"rank {_ENV.rank}: all-reduce failed or timed out — another rank may have crashed "
                           f"({str(err).splitlines()[0]})") from None
    return out


def val_metrics_from_sums(loss_sum: float, correct: float, count: int, device: torch.device) -> dict[str, float]:
    """``val_loss`` and ``val_accuracy`` from this process's sums over its share of the
    validation split, added across processes so that every example counts once."""
    sums = torch.tensor([loss_sum, correct, float(count)], dtype=torch.float64, device=device)
    loss_sum, correct, count = all_reduce_sum(sums).tolist()
    return {"val_loss": loss_sum / max(count, 1), "val_accuracy": correct / max(count, 1)}


def val_metrics(logits: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, float]:
    """``val_metrics_from_sums`` for the logits and labels of this process's share (cross-entropy)."""
    if len(y) == 0:
        return val_metrics_from_sums(0.0, 0.0, 0, device)
    loss_sum = torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
    return val_metrics_from_sums(loss_sum, float((logits.argmax(1) == y).sum()), len(y), device)


def broadcast_object(obj):
    """Rank 0's value of ``obj`` on every rank."""
    if not _ENV.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def join(device_type: str, devices: int) -> DistEnv:
    """``setup``, and an error when ``devices`` > 1 asks for processes nobody started."""
    env = setup(device_type)
    if devices > 1 and not env.active:
        raise ConfigError(f"devices={devices}: several processes are started by the CLI (`deepstrata fit --devices N`) "
                          "or by torchrun (`torchrun --nproc-per-node N -m deepstrata fit`)")
    return env


def gather_object(obj) -> list | None:
    """Every rank's ``obj`` as a list on rank 0 (``None`` elsewhere); ``[obj]`` for one process."""
    if not _ENV.active:
        return [obj]
    out = [None] * _ENV.world_size if _ENV.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def barrier() -> None:
    if _ENV.active:
        dist.barrier()


def my_stride() -> slice:
    """This rank's share of an evaluation set: every N-th example from its rank (all of it in one process).
    The shares are disjoint and cover the set, so sums across ranks count each example once."""
    return slice(_ENV.rank, None, _ENV.world_size)


def local_share(global_size: int) -> slice:
    """This rank's contiguous slice of a global batch of ``global_size`` examples.

    The global batch is split evenly; a size that the world size does not divide is an
    error rather than a silent change of the effective batch.
    """
    world, rank = _ENV.world_size, _ENV.rank
    if global_size % world:
        raise ConfigError(f"batch size {global_size} is not divisible by the {world} processes; "
                          f"use a multiple of {world}")
    per_rank = global_size // world
    return slice(rank * per_rank, (rank + 1) * per_rank)


def warn_if_oversubscribed(devices: int, device: str | None) -> None:
    """One line when --devices asks for more processes than there are GPUs (CUDA) or CPU cores."""
    if (device or "auto") in ("auto", "cuda") and torch.cuda.is_available():
        have, what = torch.cuda.device_count(), "visible GPU"
    elif (device or "auto") in ("auto", "cpu"):
        have = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        what = "CPU core"
    else:
        return
    if devices > have:
        print(f"deepstrata: warning: --devices {devices} is more than the {have} {what}{'s' if have != 1 else ''} "
              "here; the processes will share them, which is slower, not faster", file=sys.stderr)


def launch(argv: list[str], nproc: int) -> int:
    """Re-run this command as ``nproc`` local processes through torchrun's launcher."""
    from torch.distributed import run as torchrun

    args = ["--standalone", f"--nproc-per-node={nproc}", "-m", "deepstrata", *argv]
    try:
        torchrun.main(args)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except Exception as err:  # torchrun raises ChildFailedError naming the failing ranks
        signum = getattr(err, "sigval", None)
        if signum is not None:  # the launcher itself got SIGTERM/SIGINT and stopped the workers with it
            return 128 + int(signum)
        failures = getattr(err, "failures", {}) or {}
        codes = {rank: failure.exitcode for rank, failure in failures.items()}
        if codes and all(code == 2 for code in codes.values()):
            return 2  # a bad-input error, already printed on one line by the failing rank
        # Stopped by SIGTERM/SIGINT after a checkpoint (rank 0 said how to resume); a rank still exiting
        # when the launcher stopped it with the same signal reports -15 / -2.
        statuses = {128 - code if code < 0 else code for code in codes.values()}
        if codes and statuses <= {130, 143} and set(codes.values()) & {130, 143}:
            return max(statuses)
        detail = ", ".join(f"rank {rank} exited with {code}" for rank, code in sorted(codes.items()))
        print(f"deepstrata: error: distributed run failed ({detail or type(err).__name__})", file=sys.stderr)
        return 1
    return 0
