"""Learned CNN vs hand-engineered baselines on an image source, as `deepstrata fit` runs them.

Prints one Markdown table row per model (test accuracy, macro-F1, train seconds) and
the machine facts, for BENCHMARKS.md, and keeps the raw output (the run's comparison
rows and split) in ``benchmarks/results/`` (``--results`` to choose the file).

    python benchmarks/image_classification.py --data digits
    python benchmarks/image_classification.py --data ../shared/data/mnist
    python benchmarks/image_classification.py --data ../shared/data/cifar10-jpeg --epochs 10

``--check-threads`` also measures the brief's hazard: torch training right after the
scikit-learn baselines in the same process (the baselines cap BLAS threads with
threadpoolctl), against torch training alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

import deepstrata as ds
from results_io import result_path, write_results


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-threads", action="store_true")
    parser.add_argument("--results", type=Path, default=None,
                        help="raw output JSON (default: benchmarks/results/image_classification_<date>_<machine>_"
                        "seed<S>_<data>.json)")
    args = parser.parse_args()
    overrides = {k: v for k, v in {"epochs": args.epochs, "width": args.width, "batch_size": args.batch_size}.items()
                 if v is not None}

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = ds.fit(data=args.data, model=args.model, out=Path(tmp) / "run", seed=args.seed, quiet=True, **overrides)
        wall = time.perf_counter() - start
        comparison = run.comparison()
        print(f"# {args.data}  model={args.model} {json.dumps(overrides)} seed={args.seed}  "
              f"({datetime.date.today()}, {machine()})")
        print(f"split: {comparison['split']}; whole fit wall time {wall:.1f}s")
        print("| model | kind | test accuracy | macro-F1 | train s |")
        print("|---|---|---|---|---|")
        for row in comparison["rows"]:
            m = row["metrics"]
            print(f"| {row['name']} | {row['kind']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {row['train_seconds']:.1f} |")

        threads_check = None
        if args.check_threads:
            from deepstrata.baselines.image_features import run_image_baselines
            from deepstrata.data.images import load_images
            from deepstrata.data.split import split_dataset

            splits = split_dataset(load_images(args.data), seed=args.seed)
            run_image_baselines(splits.train_x, splits.train_y, splits.val_x, splits.val_y, splits.test_x,
                                splits.test_y, len(splits.classes), seed=args.seed)
            start = time.perf_counter()
            ds.fit(data=args.data, model=args.model, out=Path(tmp) / "after", seed=args.seed, quiet=True,
                   baselines=False, **overrides)
            after = time.perf_counter() - start
            start = time.perf_counter()
            ds.fit(data=args.data, model=args.model, out=Path(tmp) / "again", seed=args.seed, quiet=True,
                   baselines=False, **overrides)
            again = time.perf_counter() - start
            print(f"torch fit right after the sklearn baselines: {after:.1f}s; the same fit again: {again:.1f}s")
            threads_check = {"fit_after_baselines_s": after, "fit_again_s": again}
        results = {"data": args.data, "model": args.model, "overrides": overrides, "seed": args.seed,
                   "fit_wall_seconds": wall, "split": comparison["split"], "rows": comparison["rows"],
                   "check_threads": threads_check}
        write_results(args.results or result_path("image_classification", args.seed, Path(args.data).name),
                      results, args.seed)


if __name__ == "__main__":
    main()
