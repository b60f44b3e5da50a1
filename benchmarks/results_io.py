"""Where benchmark scripts keep their raw output: ``benchmarks/results/``, one JSON file per run.

A file is named ``<script>_<YYYY-MM-DD>_<machine>_<seeds>[_<tag>].json`` (see
``benchmarks/results/README.md``) and holds ``{"provenance": ..., "results": ...}``:
the exact command, the date, the machine, the seeds, and which deepstrata source ran
(its git commit and whether it had uncommitted changes), beside whatever the script
measured. Figures in BENCHMARKS.md point at these files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cuda_name() -> str | None:
    if "torch" not in sys.modules:
        return None
    torch = sys.modules["torch"]
    try:
        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA set-up is "no GPU" here
        return None


def machine_slug(gpu: str | None = None) -> str:
    """``h100``, ``a100`` … for a GPU run (from the device name), else ``cpu<cores>``."""
    gpu = gpu if gpu is not None else _cuda_name()
    if gpu:
        name = gpu.replace("NVIDIA", "")
        match = re.search(r"\b([A-Z]+\d+[A-Za-z]*)\b", name)
        return (match.group(1) if match else re.sub(r"[^a-z0-9]+", "", name.lower()))[:16].lower()
    return f"cpu{os.cpu_count()}"


def seeds_label(seeds) -> str:
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    return ("seed" if len(seeds) == 1 else "seeds") + "-".join(str(s) for s in seeds)


def result_path(script: str, seeds, tag: str | None = None, *, folder: Path | None = None,
                machine: str | None = None, date: str | None = None, suffix: str = ".json") -> Path:
    """``<folder>/<script>_<date>_<machine>_<seeds>[_<tag>]<suffix>``."""
    date = date or dt.date.today().isoformat()
    parts = [Path(script).stem, date, machine or machine_slug(), seeds_label(seeds)]
    if tag:
        parts.append(re.sub(r"[^A-Za-z0-9.-]+", "-", tag).strip("-"))
    return Path(folder or RESULTS) / ("_".join(parts) + suffix)


def source() -> dict:
    """Which deepstrata ran: its path, version, and the git state of the checkout it came from.

    Set ``DEEPSTRATA_SOURCE`` to describe a package that is not in a git checkout
    (e.g. ``git archive 791a2d2``); it is recorded as given.
    """
    info: dict = {"note": os.environ.get("DEEPSTRATA_SOURCE")}
    try:
        import deepstrata

        package = Path(deepstrata.__file__).resolve().parent
        info.update(path=str(package), version=getattr(deepstrata, "__version__", None))
    except Exception as err:  # noqa: BLE001 - record what failed, measure anyway
        info["error"] = repr(err)
        return info
    commit = _git(package, "rev-parse", "HEAD")
    if commit:
        dirty = _git(package, "status", "--porcelain", "--", ".")
        info.update(commit=commit, uncommitted_changes=bool(dirty))
    return info


def provenance(seeds, **extra) -> dict:
    """The command, date, machine, seeds and source of this run."""
    torch = sys.modules.get("torch")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seeds": [seeds] if isinstance(seeds, int) else list(seeds),
        "machine": {"slug": machine_slug(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "gpu": _cuda_name(), "torch": getattr(torch, "__version__", None),
                    "torch_threads": torch.get_num_threads() if torch else None,
                    "load_average": [round(v, 2) for v in load] if load else None},
        "deepstrata": source(),
        "benchmarks_commit": _git(HERE, "rev-parse", "HEAD"),
        **extra,
    }


def write_results(path: Path, results, seeds, **extra) -> Path:
    """Write ``{"provenance", "results"}`` to ``path`` atomically (a complete file or none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"provenance": provenance(seeds, **extra), "results": results}, indent=1, default=str) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"raw output: {path}", file=sys.stderr)
    return path


def read_results(path: Path):
    """The ``results`` part of a file written by ``write_results`` (or the whole file if older)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data.get("results", data) if isinstance(data, dict) else data
