"""Where an export goes, whether it may go there, and writing it so that it is complete or absent.

``RUN/export/model.onnx`` (or ``.pt2``) by default, or the ``--out`` file; beside it
``NAME.contract.json`` and any file the family sends along (``NAME.tokenizer.json``). The
contract lists every file it vouches for with its SHA-256, and is written last: it is what
says "deepstrata wrote these". An existing file is replaced only if such a contract beside it
names it; anything else needs ``--overwrite``, and even then never the input data (``rundir_overwrite.check_removable``, the guard of ``fit --overwrite``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from deepstrata.engine import checkpoint as ckpt
from deepstrata.errors import ConfigError, RunError
from deepstrata.rundir_overwrite import check_removable

EXPORT_DIR = "export"
CONTRACT_SUFFIX = ".contract.json"
WRITER = "deepstrata export"


@dataclass(frozen=True)
class Targets:
    """The files of one export: the model, the family's files beside it (role -> path), the contract."""

    model: Path
    contract: Path
    extras: dict[str, Path] = field(default_factory=dict)

    def with_extras(self, suffixes: dict[str, str]) -> "Targets":
        return replace(self, extras={role: self.model.with_name(self.model.name + suffix)
                                     for role, suffix in suffixes.items()})

    def paths(self) -> list[Path]:
        return [self.model, *self.extras.values(), self.contract]


def targets(run_path: Path, suffix: str, fmt: str, out: str | Path | None) -> Targets:
    """The model file (``out`` or ``RUN/export/model<suffix>``) and its contract beside it."""
    model = Path(out) if out is not None else Path(run_path) / EXPORT_DIR / f"model{suffix}"
    if model.suffix.lower() != suffix:
        raise ConfigError(f"--out {model}: expected a file name ending in {suffix} for --format {fmt}")
    return Targets(model, model.with_name(model.name + CONTRACT_SUFFIX))


def read_contract(path: Path) -> dict | None:
    """The contract at ``path`` if deepstrata wrote it (a JSON object saying so), else None."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("written_by") == WRITER else None


def ours(path: Path, contract: Path) -> bool:
    """Whether deepstrata export wrote ``path``: it is that contract, or the contract names it."""
    found = read_contract(contract)
    if found is None:
        return False
    if path == contract:
        return True
    named = found.get("files")
    return isinstance(named, dict) and any(isinstance(f, dict) and f.get("name") == path.name for f in named.values())


def check_writable(paths: list[Path], contract: Path, *, overwrite: bool, run_path: Path, data) -> None:
    """Refuse, before any work, a target that is a folder, or (without ``--overwrite``) a file deepstrata
    export did not write; with it, still never the input data. (The run's own files cannot be hit: every
    target ends in the format's suffix, which no file of a run has.)"""
    for path in paths:
        if path.is_dir():
            raise RunError(f"--out {path}: is a directory; expected a file name")
        if path.exists() and not ours(path, contract):
            if not overwrite:
                raise RunError(f"{path}: exists and was not written by deepstrata export",
                               hint=("--overwrite to replace it", "another --out"))
            check_removable(path, data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(targets: Targets, model: bytes, extras: dict[str, bytes], contract: dict) -> None:
    """Write every file atomically, the contract last. If a write fails (a full disk), the files this call
    wrote are removed, and so is an earlier contract of ours beside them: no contract is left vouching for
    files that are not the ones it describes."""
    written: list[Path] = []
    try:
        for path, data in [*((p, extras[role]) for role, p in targets.extras.items()), (targets.model, model)]:
            ckpt.atomic_write_bytes(path, data)
            written.append(path)
        ckpt.atomic_write_json(targets.contract, contract)
    except BaseException:
        if written and read_contract(targets.contract) is not None:
            written.append(targets.contract)
        for path in written:
            path.unlink(missing_ok=True)
        raise
