"""Probe curves by depth (trained vs random init) and inspection time, on digits and MNIST (issue 6).

Trains (or, with ``--reuse``, reuses) a CNN run per data set, inspects it with
``deepstrata.inspect.inspect_run`` and writes the section "## Inspect (issue 6)" of
BENCHMARKS.md (that section only; the rest of the file is left as it is).

* digits: the default CNN, every held-out image (validation + test split, 502 images).
* MNIST (``../shared/data/mnist``): ``--mnist-epochs`` epochs on the CPU (default 2: a
  2-core machine), inspected on ``--mnist-samples`` images (default 2000) sampled from
  the held-out validation + official test images.

Probe accuracies depend on the sample, the probe's fit/score split and the control's
initialisation, all drawn from the inspection seed: each is given as mean ± std over
``--seeds`` inspection seeds of one trained run. Timing is the first seed's full
inspection (t-SNE and pictures included); later seeds skip t-SNE and writing.

    nice -n 15 .venv/bin/python benchmarks/inspect_probes.py [--reuse] [--out benchmarks/out/inspect]

Run directories go under ``--out`` (not kept in git); the measured figures are kept in
``benchmarks/results/inspect_probes_<date>_<machine>_seeds0-1-2.json`` (``--results``), and
the section written to BENCHMARKS.md names that file. The runs train with seed 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

import deepstrata
from deepstrata.inspect import inspect_run
from results_io import result_path, write_results

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SECTION = "## Inspect (issue 6)"


def train(name: str, source: str, out: Path, reuse: bool, **overrides) -> tuple[Path, float | None]:
    run_dir = out / name
    if reuse and (run_dir / "comparison.json").is_file():
        return run_dir, None
    started = time.perf_counter()
    deepstrata.fit(data=source, out=run_dir, overwrite=True, quiet=True, baselines=False, device="cpu", **overrides)
    return run_dir, time.perf_counter() - started


def measure(run_dir: Path, samples: int, seeds: int) -> dict:
    cpu = time.process_time()
    first = inspect_run(run_dir, samples=samples, seed=0)
    cpu = time.process_time() - cpu
    results = [first] + [inspect_run(run_dir, samples=samples, seed=s, tsne=False, write=False)
                         for s in range(1, seeds)]
    layers = first.layers
    table = []
    for layer in layers:
        trained = np.array([r.probe(layer).trained for r in results])
        random = np.array([r.probe(layer).random for r in results])
        table.append({"layer": layer, "dim": first.probe(layer).dim, "shape": first.shapes[layer],
                      "trained_mean": float(trained.mean()), "trained_std": float(trained.std(ddof=1)) if seeds > 1 else 0.0,
                      "random_mean": float(random.mean()), "random_std": float(random.std(ddof=1)) if seeds > 1 else 0.0,
                      "cka_vs_init": float(first.cka_vs_init[layer])})
    pixels = np.array([r.input_probe["accuracy"] for r in results])
    test = deepstrata.load(run_dir).comparison()["rows"][0]["metrics"]["accuracy"]
    return {"run": str(run_dir), "data": first.data, "samples": first.samples, "split": first.probe_split,
            "layers": table, "pixels_mean": float(pixels.mean()), "pixels_std": float(pixels.std(ddof=1)) if seeds > 1 else 0.0,
            "chance": first.chance, "test_accuracy": test, "seconds": first.seconds, "cpu_seconds": cpu,
            "cka": {"layers": first.cka_layers, "matrix": np.round(first.cka, 3).tolist()}}


def fmt(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def section(results: dict, args: argparse.Namespace, train_seconds: dict, raw: Path) -> str:
    date = dt.date.today().isoformat()
    lines = [SECTION, "",
             f"`nice -n 15 .venv/bin/python benchmarks/inspect_probes.py{' --reuse' if args.reuse else ''}` "
             f"— this machine ({platform.machine()}, {torch.get_num_threads()} torch threads, CPU), {date}. "
             f"Probe accuracy = held-out accuracy of a logistic regression on each layer's pooled features "
             f"(fitted on half the inspected sample, scored on the other half), mean ± std over {args.seeds} "
             "inspection seeds (sample, probe split and random-init control drawn from the seed) of one trained run "
             "(trained with seed 0).",
             f"Raw output: `{raw.relative_to(ROOT) if raw.is_relative_to(ROOT) else raw}`.",
             ""]
    for name, r in results.items():
        trained_for = train_seconds.get(name)
        lines += [f"### {name}", "",
                  f"Run: {r['training']}; test accuracy {r['test_accuracy']:.4f}"
                  + (f", trained in {trained_for:.0f} s" if trained_for else " (reused run)") + ".",
                  f"Inspected: {r['data']}. Probe split: fit {r['split']['fit']}, score {r['split']['score']}.", "",
                  "| layer | output | dim | trained | random init | gain | CKA vs init |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["layers"]:
            lines.append(f"| {row['layer']} | {'x'.join(map(str, row['shape']))} | {row['dim']} | "
                         f"{fmt(row['trained_mean'], row['trained_std'])} | {fmt(row['random_mean'], row['random_std'])} | "
                         f"{row['trained_mean'] - row['random_mean']:+.3f} | {row['cka_vs_init']:.2f} |")
        s = r["seconds"]
        lines += ["", f"Raw-pixel probe: {fmt(r['pixels_mean'], r['pixels_std'])}; chance {r['chance']:.3f}.",
                  f"Inspection wall time {s['total']:.1f} s, {r['cpu_seconds']:.1f} s of CPU "
                  f"(features {s['features']:.1f} s, probes {s['probes']:.1f} s, CKA {s['cka']:.1f} s, "
                  f"PCA + t-SNE {s['projections']:.1f} s, pictures {s.get('image views', 0.0):.1f} s, "
                  f"writing both reports {s.get('write report', 0.0):.1f} s).", ""]
    lines += [args.finding, ""] if args.finding else []
    return "\n".join(lines)


def write_section(text: str, path: Path) -> None:
    """Replace the section in BENCHMARKS.md (up to the next "## " heading) or append it."""
    current = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current)
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(updated, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "inspect")
    parser.add_argument("--reuse", action="store_true", help="reuse trained runs in --out")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--mnist-epochs", type=int, default=2)
    parser.add_argument("--mnist-samples", type=int, default=2000)
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--finding", default="", help="a sentence appended to the section")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--results", type=Path, default=None,
                        help="raw output JSON (default: benchmarks/results/inspect_probes_<date>_<machine>_seeds<S>.json)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    results, train_seconds = {}, {}
    run_dir, seconds = train("digits", "digits", args.out, args.reuse)
    train_seconds["digits"] = seconds
    results["digits"] = {**measure(run_dir, 2000, args.seeds), "training": "`deepstrata fit --data digits` (defaults)"}
    print(json.dumps(results["digits"], indent=1, default=str))
    if not args.skip_mnist:
        run_dir, seconds = train("mnist", str(MNIST), args.out, args.reuse, epochs=args.mnist_epochs)
        train_seconds["MNIST"] = seconds
        results["MNIST"] = {**measure(run_dir, args.mnist_samples, args.seeds),
                            "training": f"`deepstrata fit --data ../shared/data/mnist --epochs {args.mnist_epochs}` "
                                        "(other options default; few epochs because the CPU is small)"}
        print(json.dumps(results["MNIST"], indent=1, default=str))
    raw = write_results(args.results or result_path("inspect_probes", list(range(args.seeds))),
                        {"results": results, "train_seconds": train_seconds}, list(range(args.seeds)),
                        training_seed=0)
    write_section(section(results, args, train_seconds, raw), args.benchmarks)
    print(f"wrote {SECTION!r} to {args.benchmarks}")


if __name__ == "__main__":
    main()
