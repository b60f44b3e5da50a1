"""EfficientNet-Lite0 (ImageNet) → CIFAR-10 with few labels: transfer vs the CNN from scratch vs HOG + LR.

The new task is a folder of CIFAR-10 photos taken from the JPEG copy that comes with the
code (``../shared/data/cifar10-jpeg``, read straight from the tar): the first
``--train-per-class`` training and ``--test-per-class`` test images of each class in the
archive's order (deterministic), written as ``train/<class>/`` and ``test/<class>/``.
One ``deepstrata.api.learning_curve`` (``deepstrata transfer --from efficientnet-lite0
--curve``) then fits, at each budget of labels per class, on the same few-label split:

* ``transfer`` — EfficientNet-Lite0 from its ImageNet weights, the photos upscaled to
  ``--image-size`` px (``--mode``, default finetune), ``--epochs`` epochs;
* ``scratch`` — deepstrata's CNN from random weights at the photos' own 32 px, the same
  epochs, with the hand-engineered baselines beside it (``baseline``: the best of them);

and, because a CNN from scratch given the transfer's short schedule would be handicapped,
``scratch_auto`` refits it at deepstrata's own epochs for these few labels (40), the
figure to compare with. Budgets up to 10 run over ``--seeds`` seeds (mean ± sample std).
Test accuracy is on the ``--test-per-class`` × 10 test images, scored whole by every fit;
times are each run's training wall time (``metrics.jsonl``) and the curve's CPU time.

    nice -n 5 python benchmarks/transfer_cifar.py --budgets 1,5,10,50 --seeds 3 --epochs 15 --image-size 160

(EfficientNet-Lite0 trains at some 11 images/s at 160 px on this 2-core machine, 4.6 at 224,
which is why 160; on the 2026-12-01 run, shared with other jobs, the curve's fits took 2-15
minutes each and it was stopped after the second seed at 10 per class, then ``--collect``ed.)
Raw output:
``benchmarks/results/transfer_cifar_<date>_<machine>_<seeds>_<mode>.json``, rewritten
after every phase. A stopped curve leaves its finished fits in ``--work``; ``--collect`` (the
same options and ``--work``) reads them into the results instead of fitting again, and keeps
the ``scratch_auto`` fits it finds finished.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path, PurePosixPath

from results_io import result_path, write_results

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE.parent.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
SMALL = 10


def cpu_seconds() -> float:
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def make_folder(folder: Path, train_per_class: int, test_per_class: int) -> dict:
    """The first N train and M test images of each class, in the archive's order, as an image folder."""
    limits = {"train": train_per_class, "test": test_per_class}
    counts = {"train": Counter(), "test": Counter()}
    with tarfile.open(ARCHIVE) as archive:
        for member in archive:
            parts = PurePosixPath(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in limits:
                continue
            split, label = parts[-3], parts[-2]
            if counts[split][label] >= limits[split]:
                continue
            counts[split][label] += 1
            target = folder / split / label / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())
    return {split: dict(sorted(c.items())) for split, c in counts.items()}


def learned_accuracy(run_dir: Path) -> float:
    comparison = json.loads((run_dir / "comparison.json").read_text(encoding="utf-8"))
    return next(row for row in comparison["rows"] if row.get("kind") == "learned")["metrics"]["accuracy"]


def train_seconds(run_dir: Path) -> float:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return round(json.loads(lines[-1])["seconds"], 1)


def summary(values: list[float]) -> dict:
    import statistics

    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "seeds": len(values),
            "values": [round(v, 4) for v in values]}


def best_baseline(run_dir: Path) -> float | None:
    comparison = json.loads((run_dir / "comparison.json").read_text(encoding="utf-8"))
    values = [row["metrics"]["accuracy"] for row in comparison["rows"] if row.get("kind") == "baseline"]
    return max(values) if values else None


def collected_rows(curve_dir: Path, budgets: list, seeds: list[int]) -> list[dict]:
    """The curve's rows from the fits a stopped curve finished (the same figures ``curve.json`` would hold,
    over the seeds that finished: a row says how many)."""
    largest = budgets[-1]
    rows = []
    for budget in budgets:
        found: dict = {"transfer": [], "scratch": [], "baseline": []}
        for seed in seeds if budget is not None and budget <= SMALL else seeds[:1]:
            name = f"{'all' if budget is None else budget}-seed{seed}"
            transferred = (curve_dir if budget == largest and seed == seeds[0]
                           else curve_dir / "curve-runs" / f"{name}-transfer")
            scratch = curve_dir / "curve-runs" / f"{name}-scratch"
            if (transferred / "comparison.json").is_file():
                found["transfer"].append(learned_accuracy(transferred))
            if (scratch / "comparison.json").is_file():
                found["scratch"].append(learned_accuracy(scratch))
                baseline = best_baseline(scratch)
                if baseline is not None:
                    found["baseline"].append(baseline)
        rows.append({"labels_per_class": budget if budget is not None else "all",
                     **{kind: summary(values) for kind, values in found.items() if values}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", default="1,5,10,50")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the budgets up to 10 (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the curve's fits (default 15)")
    parser.add_argument("--image-size", type=int, default=160, help="the transfer's input size (default 160)")
    parser.add_argument("--mode", default="finetune", choices=("linear", "finetune", "gradual"))
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--skip-scratch-auto", action="store_true")
    parser.add_argument("--collect", action="store_true",
                        help="do not fit the curve: read the fits a stopped run left finished in --work (curve.json is "
                             "written only at the curve's end), then the scratch_auto fits")
    parser.add_argument("--work", help="folder for the photos and runs (default: a temporary one)")
    parser.add_argument("--results", help="raw output file (default benchmarks/results/...)")
    args = parser.parse_args()

    from deepstrata import api
    from deepstrata.curve import parse_budgets

    budgets = parse_budgets(args.budgets)
    seeds = list(range(args.seed, args.seed + args.seeds))
    out = Path(args.results) if args.results else result_path("transfer_cifar", seeds, args.mode)
    work = Path(args.work or tempfile.mkdtemp(prefix="transfer-cifar-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "cifar-photos"
    results: dict = {"settings": {**vars(args), "work": str(work)}, "archive": str(ARCHIVE), "complete": False}
    started = time.perf_counter()

    def save() -> None:
        results["wall_s"] = round(time.perf_counter() - started, 1)
        write_results(out, results, seeds)

    if not folder.is_dir():
        results["data"] = make_folder(folder, args.train_per_class, args.test_per_class)
    save()

    curve_dir = work / f"curve-{args.mode}"
    wall, cpu = time.perf_counter(), cpu_seconds()
    if not args.collect:
        print(f"curve: efficientnet-lite0 -> {folder} at {args.image_size} px, {args.mode}, budgets {args.budgets}",
              file=sys.stderr)
        api.learning_curve("efficientnet-lite0", str(folder), budgets, out=curve_dir, seeds=args.seeds,
                           seed=args.seed, overwrite=True, device="cpu", quiet=True, mode=args.mode,
                           epochs=args.epochs, image_size=args.image_size)
        rows = json.loads((curve_dir / "curve.json").read_text(encoding="utf-8"))["rows"]
    else:
        rows = collected_rows(curve_dir, budgets, seeds)
    times: dict = {}
    runs = curve_dir / "curve-runs"
    for run in sorted(runs.iterdir()) if runs.is_dir() else []:
        if (run / "comparison.json").is_file():
            times[run.name] = train_seconds(run)
    times["main (largest budget, first seed, transfer)"] = train_seconds(curve_dir)
    results["curve"] = {"rows": rows, "collected_from_a_stopped_run": args.collect,
                        "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
                        "train_seconds_per_fit": times, "run": str(curve_dir)}
    curve = {"rows": rows}
    save()

    if not args.skip_scratch_auto:
        auto: list[dict] = []
        for budget in budgets:
            runs_seeds = seeds if budget is not None and budget <= SMALL else seeds[:1]
            values, seconds = [], []
            for seed in runs_seeds:
                run = work / "scratch-auto" / f"{budget}-seed{seed}"
                if not (args.collect and (run / "comparison.json").is_file()):  # --collect keeps finished fits
                    api.fit(str(folder), model="cnn", labels_per_class=budget, seed=seed, out=run, overwrite=True,
                            quiet=True, baselines=False, device="cpu")
                values.append(learned_accuracy(run))
                seconds.append(train_seconds(run))
            auto.append({"labels_per_class": budget if budget is not None else "all", **summary(values),
                         "train_seconds": seconds})
            results["scratch_auto"] = auto
            save()
    results["complete"] = True
    save()
    for row in curve["rows"]:
        cells = ", ".join(f"{kind} {row[kind]['mean']:.3f}±{row[kind]['std']:.3f}"
                          for kind in ("transfer", "scratch", "baseline") if kind in row)
        print(f"{row['labels_per_class']} per class: {cells}", file=sys.stderr)
    for row in results.get("scratch_auto", []):
        print(f"{row['labels_per_class']} per class: scratch at its own epochs {row['mean']:.3f}±{row['std']:.3f}",
              file=sys.stderr)
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
