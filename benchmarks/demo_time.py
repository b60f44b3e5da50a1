"""``make demo``'s command, timed whole: one source tree (or set of flags) against another, alternating.

The demo is ``deepstrata fit --data digits --out runs/demo --overwrite``: loading, the CNN,
both baselines, the report. This runs that command in fresh processes for each ``--contender``
(``LABEL=SRC_DIR[:FLAGS]``: the ``src`` folder put on ``PYTHONPATH``, and extra fit flags
separated by commas) and each seed of ``--seeds`` (``--seed S``), contenders alternating
within a seed so that the machine's load falls on all of them, and keeps per run: wall
seconds of the whole command, the CNN's train seconds and test accuracy, the baselines'.

    git worktree add --detach /tmp/before ec841ba
    python benchmarks/demo_time.py --contender before=/tmp/before/src \\
        --contender after=src --contender after-plateau=src:--plateau,on --seeds 0 1 2 3

``--data`` times the same command on another data set (CIFAR-10 before/after, issue 18):

    python benchmarks/demo_time.py --data ../shared/data/cifar10-jpeg \\
        --contender before=/tmp/before/src:--no-baselines --contender after=src:--no-baselines

Raw output: ``benchmarks/results/demo_time_<date>_<machine>_<seeds>.json``, rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_io import result_path, write_results


def run(data: str, src: str, flags: list[str], seed: int, out: Path) -> dict:
    command = [sys.executable, "-m", "deepstrata", "fit", "--data", data, "--out", str(out), "--overwrite",
               "--seed", str(seed), *flags]
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    rows = {row["name"]: row for row in json.loads((out / "comparison.json").read_text())["rows"]}
    return {"command": command[2:], "wall_s": round(wall, 2),
            "rows": {name: {"accuracy": row["metrics"].get("accuracy"), "train_seconds": row.get("train_seconds")}
                     for name, row in rows.items()},
            "epochs_run": sum(1 for _ in (out / "metrics.jsonl").open())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contender", action="append", required=True, help="LABEL=SRC_DIR[:FLAG,VALUE,...]")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--data", default="digits", help="the fit's --data (default digits: make demo's)")
    parser.add_argument("--model-row", default="cnn", help="the comparison row printed after each run")
    parser.add_argument("--results", type=Path, default=None)
    options = parser.parse_args()
    contenders = []
    for spec in options.contender:
        label, _, rest = spec.partition("=")
        src, _, flags = rest.partition(":")
        contenders.append((label, src, [f for f in flags.split(",") if f]))
    tag = None if options.data == "digits" else Path(options.data).name
    path = options.results or result_path(__file__, options.seeds, tag)
    work = Path(tempfile.mkdtemp(prefix="demo-time-"))
    results = []
    for seed in options.seeds:
        order = contenders if seed % 2 == 0 else contenders[::-1]
        for label, src, flags in order:
            measured = run(options.data, src, flags, seed, work / f"{label}-{seed}")
            entry = {"contender": label, "src": src, "seed": seed, **measured}
            results.append(entry)
            print(f"{label} seed {seed}: {entry['wall_s']} s wall, {options.model_row} "
                  f"{entry['rows'].get(options.model_row)}", file=sys.stderr, flush=True)
            write_results(path, results, options.seeds)


if __name__ == "__main__":
    main()
