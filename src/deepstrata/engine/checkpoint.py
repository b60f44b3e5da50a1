"""Checkpoints as safetensors (weights, optimizer tensors, RNG) plus a JSON of the rest.

Nothing here is a pickle, so loading a checkpoint can never run code.

Durability follows the habits of databases: a file is complete or absent (temporary
name, fsync, rename, fsync of the directory), and a checkpoint — several files — is one
unit. Each is written whole into a hidden directory, fsynced, renamed to
``checkpoints/step-NNNNNNNNN/``, and only then does the small ``checkpoints/latest``
pointer switch to it (one atomic rename). The older checkpoint is deleted after the
switch, so a kill at any instant (SIGKILL, OOM, power loss) leaves the previous
checkpoint or the new one, never a mix. ``checkpoints/best.safetensors`` is the best
weights *of the checkpoint ``latest`` names*: each checkpoint directory holds its own
``best.safetensors`` (a hard link when unchanged), published after the switch and again
on resume.

``DEEPSTRATA_FAULT`` (see ``faults``) can stop the process between any two of these
writes; the resume tests use it to kill a fit inside a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from deepstrata.engine.adamw import AdamW
from deepstrata.engine.faults import reached
from deepstrata.errors import RunError

POINTER = "latest"
BEST = "best.safetensors"
WEIGHTS = "weights.safetensors"
TRAIN_STATE = "train.safetensors"
STATE = "state.json"
STEP_PREFIX = "step-"
Optimizer = AdamW | torch.optim.Optimizer  # what the loop builds: deepstrata's AdamW or torch's SGD
KEEP = 2  # the newest checkpoint and the one before it (a fallback should the newest be damaged later)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the umask (mkstemp's 0600 is not that).

    Runs are shared on clusters: a group that can read ``report.html`` can read the rest.
    """
    return 0o666 & ~_umask()


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path | str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _publish(tmp: str, path: Path) -> None:
    os.chmod(tmp, _file_mode())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _named(err: OSError, path: Path) -> OSError:
    """The same error naming the file the user asked for, not its temporary name (a full disk names none)."""
    return type(err)(err.errno, err.strerror or str(err), str(path)) if err.errno else err


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` complete or not at all, durably, with the umask's permissions."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _named(err, path) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _named(err, path) from err
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync (``metrics.jsonl``): a kill leaves whole lines, or a torn last one."""
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        _fsync_file(tmp)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or a one-line ``RunError`` naming the file (missing or unreadable)."""
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
    tensors = load_tensors(Path(path))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise RunError(f"{path}: weights do not fit the model ({first})") from None


def _optimizer_tensors(optimizer: Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
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


def _restore_optimizer(optimizer: Optimizer, tensors: dict[str, torch.Tensor], saved: dict) -> None:
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


def step_name(step: int) -> str:
    return f"{STEP_PREFIX}{int(step):09d}"


def _is_step_name(name: str) -> bool:
    return name.startswith(STEP_PREFIX) and name[len(STEP_PREFIX):].isdigit() and len(name) == len(STEP_PREFIX) + 9


def _step_dirs(ckpt_dir: Path) -> list[Path]:
    """Checkpoint directories, newest step first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted((p for p in ckpt_dir.iterdir() if p.is_dir() and _is_step_name(p.name)),
                  key=lambda p: p.name, reverse=True)


def pointed(ckpt_dir: Path) -> Path | None:
    """The checkpoint directory ``latest`` names, if the pointer is readable and the directory exists."""
    try:
        name = (Path(ckpt_dir) / POINTER).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    target = Path(ckpt_dir) / name
    return target if _is_step_name(name) and target.is_dir() else None


def latest_state(ckpt_dir: Path) -> dict | None:
    """The loop state (epoch, batch, step …) of the checkpoint ``latest`` names, or None."""
    target = pointed(ckpt_dir)
    try:
        return json.loads((target / STATE).read_text(encoding="utf-8")) if target is not None else None
    except (OSError, ValueError):
        return None


def _legacy(ckpt_dir: Path) -> bool:
    """A run written before checkpoint directories: ``last.json`` and its tensors in ``checkpoints/``."""
    return (Path(ckpt_dir) / "last.json").is_file()


def has_checkpoint(ckpt_dir: Path) -> bool:
    """Whether ``ckpt_dir`` holds something ``--resume`` can try (it may still turn out damaged)."""
    ckpt_dir = Path(ckpt_dir)
    return pointed(ckpt_dir) is not None or any((p / STATE).is_file() for p in _step_dirs(ckpt_dir)) \
        or _legacy(ckpt_dir)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, target)
        _fsync_file(target)


def publish_best(ckpt_dir: Path, source: Path | None) -> None:
    """Make ``checkpoints/best.safetensors`` the best weights recorded in checkpoint ``source``."""
    ckpt_dir = Path(ckpt_dir)
    best = ckpt_dir / BEST
    if source is None or not (source / BEST).is_file():
        if best.is_file():
            best.unlink()
            fsync_dir(ckpt_dir)
        return
    if best.is_file() and os.path.samefile(source / BEST, best):
        return  # already that file (rename(2) between two links of one file does nothing)
    tmp = ckpt_dir / f".{BEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    _link_or_copy(source / BEST, tmp)
    os.replace(tmp, best)
    fsync_dir(ckpt_dir)


def save_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: Optimizer, state: dict,
                    extra: dict[str, torch.Tensor] | None = None,
                    rng_states: list[dict[str, torch.Tensor]] | None = None, *, improved: bool = False,
                    best_weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write one checkpoint of ``state["step"]`` as a unit, switch ``latest`` to it, prune the older ones.

    The directory holds ``weights.safetensors``, ``train.safetensors`` (optimizer, RNG,
    ``extra``), ``state.json`` (the loop state, written last) and ``best.safetensors``:
    these weights when ``improved``, else ``best_weights`` when given (the best epoch ended
    without a checkpoint of its own: checkpoints go by time), else the previous checkpoint's
    best. ``extra`` holds
    other training state as named tensors (e.g. Lookahead's average); ``rng_states`` are
    the random states of ranks 1, 2, … of a data-parallel run (see ``rng_state``).
    Returns the checkpoint's directory.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = step_name(state["step"])
    previous = pointed(ckpt_dir)
    final = ckpt_dir / name
    tmp = Path(tempfile.mkdtemp(dir=ckpt_dir, prefix=f".{name}.", suffix=".tmp"))
    try:
        meta = {"step": str(state["step"])}
        save_weights(tmp / WEIGHTS, model, meta)
        reached("checkpoint:weights")
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
        _atomic_save_tensors(tmp / TRAIN_STATE, tensors, meta)
        reached("checkpoint:train")
        if improved:
            _link_or_copy(tmp / WEIGHTS, tmp / BEST)
        elif best_weights is not None:
            _atomic_save_tensors(tmp / BEST, best_weights, {"best_epoch": str(state.get("best_epoch"))})
        elif previous is not None and (previous / BEST).is_file():
            _link_or_copy(previous / BEST, tmp / BEST)
        atomic_write_json(tmp / STATE, {**state, "optimizer": optimizer_meta})
        reached("checkpoint:state")
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700, as mkstemp's 0600, is not the umask's
        fsync_dir(tmp)
        if final.exists():  # left by an attempt killed before its pointer switch, or the same step again
            aside = ckpt_dir / f".{name}.{os.getpid()}.old"
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(final, aside)
            os.rename(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(ckpt_dir)
        reached("checkpoint:renamed")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckpt_dir / POINTER, name + "\n")
    reached("checkpoint:pointer")
    publish_best(ckpt_dir, final)
    reached("checkpoint:best")
    _prune(ckpt_dir, keep={final, previous})
    return final


def _prune(ckpt_dir: Path, keep: set) -> None:
    """Delete older checkpoints and leftovers of killed writes — only names this module writes."""
    newest_first = [p for p in _step_dirs(ckpt_dir) if p in keep][:KEEP]
    for path in _step_dirs(ckpt_dir):
        if path not in newest_first:
            shutil.rmtree(path, ignore_errors=True)
    for path in ckpt_dir.iterdir():
        ours = path.name.startswith((f".{STEP_PREFIX}", f".{BEST}.", f".{POINTER}.")) and \
            path.name.endswith((".tmp", ".old"))
        if ours and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif ours:
            path.unlink(missing_ok=True)
    for legacy in ("last.json", "last.safetensors", "last.train.safetensors"):
        (ckpt_dir / legacy).unlink(missing_ok=True)
    fsync_dir(ckpt_dir)


def _load_from(source: Path, names: tuple[str, str, str], model: nn.Module, optimizer: Optimizer | None,
               extra: dict[str, torch.Tensor] | None, rank: int, device: torch.device | None) -> dict:
    weights_name, train_name, state_name = names
    meta_path = source / state_name
    if not meta_path.is_file():
        raise RunError(f"{meta_path}: checkpoint description not found (interrupted write)")
    try:
        state = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("no step recorded")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise RunError(f"{meta_path}: not a valid checkpoint description ({err})") from None
    for name in (weights_name, train_name):
        path = source / name
        if _step_of(path) != str(state.get("step")):
            raise RunError(f"{path}: checkpoint files are from different steps (interrupted write)")
    load_weights(source / weights_name, model)
    tensors = load_tensors(source / train_name)
    if optimizer is not None:
        try:
            _restore_optimizer(optimizer, tensors, state.pop("optimizer"))
        except (KeyError, ValueError, RuntimeError) as err:
            raise RunError(f"{source / train_name}: optimizer state does not fit this run ({err})") from None
    for key, value in (extra or {}).items():
        saved = tensors.get(f"extra.{key}")
        if saved is None or saved.shape != value.shape:
            raise RunError(f"{source / train_name}: no saved {key!r} of shape {tuple(value.shape)}; "
                           "the run was started with other settings")
        value.copy_(saved)
    if "rng.torch" not in tensors:
        raise RunError(f"{source / train_name}: no random state saved")
    torch.set_rng_state(tensors.get(f"rng.rank{rank}.torch", tensors["rng.torch"]))
    cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    own_cuda = tensors.get(f"rng.rank{rank}.cuda")
    if own_cuda is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(own_cuda, device)
    state.pop("optimizer", None)
    return state


def load_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: Optimizer | None,
                    extra: dict[str, torch.Tensor] | None = None, rank: int = 0,
                    device: torch.device | None = None) -> tuple[dict, Path, list[str]]:
    """Restore the newest complete checkpoint: weights, optimizer, ``rank``'s RNG, ``extra`` (in place).

    Returns ``(loop state, its directory, why newer ones were skipped)``. The one
    ``latest`` names comes first; should it be unreadable, the other checkpoint
    directories are tried newest first. A checkpoint without a state for ``rank`` (a run
    started with fewer processes) gives it rank 0's.
    """
    ckpt_dir = Path(ckpt_dir)
    target = pointed(ckpt_dir)
    candidates = ([target] if target is not None else []) + [p for p in _step_dirs(ckpt_dir) if p != target]
    skipped: list[str] = []
    if target is None and (ckpt_dir / POINTER).exists():
        skipped.append(f"{ckpt_dir / POINTER}: unreadable or names no checkpoint")
    for source in candidates:
        try:
            return _load_from(source, (WEIGHTS, TRAIN_STATE, STATE), model, optimizer, extra, rank, device), \
                source, skipped
        except RunError as err:
            skipped.append(str(err))
    if _legacy(ckpt_dir):
        state = _load_from(ckpt_dir, ("last.safetensors", "last.train.safetensors", "last.json"), model, optimizer,
                           extra, rank, device)
        return state, ckpt_dir, skipped
    if skipped:
        raise RunError(f"{ckpt_dir}: no complete checkpoint to resume from ({'; '.join(skipped)})")
    raise RunError(f"{ckpt_dir}: no checkpoint to resume from")
