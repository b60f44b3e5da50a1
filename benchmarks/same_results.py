"""Does a code change leave results as they were? Three small fits, one per task family, digested.

Runs on CPU with one thread, so every number is deterministic: two commits give the same
digest exactly when they train and score the same. Kept for refactors that must not change
behaviour (issue 13): run it on the commit before and the commit after and diff the JSON.

    python benchmarks/same_results.py --out /tmp/before.json   # on the old commit
    python benchmarks/same_results.py --out /tmp/after.json    # on the new one
    diff /tmp/before.json /tmp/after.json

Timing fields (``*_seconds``, ``*_per_second``) are dropped; weights are compared by SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COMMON = ["--device", "cpu", "--threads", "1", "--quiet", "--seed", "0"]
FITS = {
    "digits-cnn": ["--data", "digits", "--epochs", "3", "--width", "16"],
    "ag-news-transformer": ["--data", str(SHARED / "ag-news" / "test.csv"), "--epochs", "1", "--dim", "32",
                            "--vocab-size", "2000", "--max-length", "64"],
    "movielens-mf": ["--data", str(SHARED / "movielens-100k" / "u.data"), "--task", "recommend", "--model", "mf",
                     "--epochs", "3"],
}
TIMING = {"train_seconds", "wall_seconds", "load_seconds", "seconds", "fit_seconds", "predict_seconds"}


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items()
                if k not in TIMING and not k.endswith(("_seconds", "_per_second"))}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def digest(run: Path) -> dict:
    comparison = json.loads((run / "comparison.json").read_text())
    weights = {}
    for path in sorted(run.rglob("*.safetensors")):
        if path.is_file() and not path.is_symlink():
            weights[str(path.relative_to(run))] = hashlib.sha256(path.read_bytes()).hexdigest()
    metrics = [_without_timing(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"comparison": _without_timing(comparison), "metrics": metrics, "weights": weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="where to write the digest JSON")
    parser.add_argument("--only", nargs="*", default=list(FITS), choices=list(FITS))
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            run = Path(tmp) / name
            cmd = [sys.executable, "-m", "deepstrata", "fit", *FITS[name], *COMMON, "--out", str(run)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                sys.exit(f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}")
            results[name] = {"command": ["deepstrata", "fit", *FITS[name], *COMMON], **digest(run)}
            print(f"{name}: {json.dumps(results[name]['comparison']['rows'][0].get('metrics'))}", file=sys.stderr)
    Path(args.out).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
