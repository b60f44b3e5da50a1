"""Transfer's few-label learning curve on MNIST: digits 0-4 → 5-9, and MNIST → scikit-learn's 8×8 digits.

Two targets, each a ``deepstrata.api.learning_curve`` (``deepstrata transfer --curve``):
transfer from a source run vs the same architecture from scratch vs the best
hand-engineered baseline, on the same few-label splits, at each budget of labels per
class (budgets up to 10 over several seeds, mean ± sample std; larger ones once). The
MNIST files come with the code: ``../shared/data/mnist/*.gz`` (IDX, gzip).

Phases (``--skip`` leaves any after ``data`` out, though a curve still trains its source; a
rerun with the same ``--work`` reuses the IDX folders, and a source run trained with the
same settings):

* ``data``    — writes raw (uncompressed) IDX folders under ``--work``, with the original
                file names: ``low/`` holds the train and t10k images labelled 0-4; ``high/``
                those labelled 5-9, **relabelled 0-4** (5→0 … 9→4), because deepstrata's
                IDX reader names the classes ``0 .. max label`` — digits 5-9 kept as they
                are would make a 10-class task with five empty classes. With
                ``--source-train N`` the source folders hold a seeded random N of their
                training images (the t10k files whole); ``all/`` (all ten digits) is
                written only then — otherwise the full MNIST folder is read as it is.
* ``source-low`` — ``fit(low/, epochs=--source-epochs, baselines=False)``: the source
                network of digits 0-4, its test accuracy (on t10k's 0-4) and training time.
* ``high``    — ``learning_curve(source-low, high/, --budgets, seeds=--seeds, mode=M)`` for
                each mode of ``--modes``: transfer to digits 5-9 with few labels.
* ``source-all`` — ``fit`` on all ten digits (or ``--source-all RUN``: an existing run).
* ``digits``  — ``learning_curve(source-all, "digits", ...)`` for each mode: scikit-learn's
                8×8 gray digits, which the transfer's input adapter resizes to the source's
                28×28 (the scratch fit reads them at their own 8×8).

For each curve it records the rows (``curve.json``), the curve's wall time and CPU time
(``getrusage`` of this process and its children, before and after), the source's test
accuracy and training time, and for each budget ≤ 10 the margin transfer - scratch (in
accuracy points) and whether transfer beats scratch by at least 10 points.

    nice -n 19 python benchmarks/transfer_mnist.py --source-train 3000 --source-epochs 2 \\
        --budgets 1,5,10,50 --seeds 3 --epochs 15 --modes finetune

(about 20 minutes on 2 busy CPU cores: each curve is 20 fits — 10 transfer, 10 scratch
with baselines — of some 30 s each on MNIST 5-9, whose whole test split is scored by
every fit, and some 10 s on the digits; each source a minute or two. ``--epochs 0``
leaves the fits deepstrata's own 40 epochs on these few labels, about twice as long.)
A smoke run (500 source images, 1 source epoch, budgets 1,5, 2 seeds, 2 epochs; 3 minutes):

    nice -n 19 python benchmarks/transfer_mnist.py --quick --work /tmp/tm-quick --results /tmp/tm-quick.json

Raw output: ``benchmarks/results/transfer_mnist_<date>_<machine>_<seeds>_<modes>.json``
(``--results PATH`` for another file); it is rewritten after every phase, so a stopped run
keeps what it measured. The run directories stay in ``--work`` (default: a temporary
folder), each curve's in ``curve-<target>-<mode>/`` with its fits under ``curve-runs/``.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from results_io import result_path, write_results

HERE = Path(__file__).resolve().parent
MNIST = HERE.parent.parent / "shared" / "data" / "mnist"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SMALL = 10        # budgets up to this many labels per class are judged (and run over several seeds)
MARGIN = 0.10     # transfer should beat scratch by this much accuracy at those budgets
QUICK = {"source_train": 500, "source_epochs": 1, "budgets": "1,5", "seeds": 2, "epochs": 2}


def read_idx(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (raw; deepstrata reads it as it reads the gzipped originals)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">4B", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


@functools.lru_cache(maxsize=None)
def original(part: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = FILES[part]
    return read_idx(MNIST / f"{images}.gz"), read_idx(MNIST / f"{labels}.gz")


def make(folder: Path, digits: list[int], train_limit: int | None, seed: int) -> dict:
    """``folder/{train,t10k}-{images,labels}-...``: the images of ``digits`` only, labels ``digits[i]`` → ``i``."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    relabel = np.full(10, 255, dtype=np.uint8)
    relabel[digits] = np.arange(len(digits), dtype=np.uint8)
    for part in FILES:
        x, y = original(part)
        keep = np.flatnonzero(np.isin(y, digits))
        if part == "train" and train_limit and train_limit < len(keep):
            keep = np.sort(np.random.default_rng([seed, len(digits), digits[0]]).choice(keep, train_limit,
                                                                                      replace=False))
        write_idx(folder / FILES[part][0], x[keep])
        write_idx(folder / FILES[part][1], relabel[y[keep]])
        counts[part] = {"images": int(len(keep)),
                        "per_class": {str(d): int((y[keep] == d).sum()) for d in digits}}
    return {"folder": str(folder), "digits": digits, "labels": list(range(len(digits))), "counts": counts}


def cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def test_accuracy(run_dir: Path) -> float:
    comparison = json.loads((run_dir / "comparison.json").read_text(encoding="utf-8"))
    return next(row for row in comparison["rows"] if row.get("kind") == "learned")["metrics"]["accuracy"]


def train_source(name: str, data: str, work: Path, settings: dict) -> dict:
    """A source run in ``work/name`` (reused when a finished one was trained with the same settings)."""
    from deepstrata import api

    out = work / name
    record_file = work / f"{name}.json"
    if record_file.is_file() and (out / "comparison.json").is_file():
        kept = json.loads(record_file.read_text())
        if kept.get("settings") == settings and kept.get("data") == data:
            print(f"{name}: reusing {out}", file=sys.stderr)
            return {**kept, "reused": True}
    print(f"{name}: fit {data} for {settings['epochs']} epochs", file=sys.stderr)
    wall, cpu = time.perf_counter(), cpu_seconds()
    api.fit(data, out=out, overwrite=True, quiet=True, baselines=False, device="cpu", **settings)
    record = {"run": str(out), "data": data, "settings": settings,
              "train_wall_s": round(time.perf_counter() - wall, 1), "train_cpu_s": round(cpu_seconds() - cpu, 1),
              "test_accuracy": round(test_accuracy(out), 4), "reused": False}
    record_file.write_text(json.dumps(record))
    print(f"{name}: test accuracy {record['test_accuracy']:.4f} in {record['train_wall_s']} s", file=sys.stderr)
    return record


def judge(rows: list[dict]) -> list[dict]:
    """For each budget ≤ SMALL: transfer - scratch (mean accuracy, in points) and whether it is ≥ 10 points."""
    judged = []
    for row in rows:
        budget = row["labels_per_class"]
        if budget == "all" or budget > SMALL or "transfer" not in row or "scratch" not in row:
            continue
        margin = row["transfer"]["mean"] - row["scratch"]["mean"]
        baseline = row.get("baseline")
        judged.append({"labels_per_class": budget, "margin_points": round(100 * margin, 2),
                       "margin_over_baseline_points": (round(100 * (row["transfer"]["mean"] - baseline["mean"]), 2)
                                                       if baseline else None),
                       "transfer_beats_scratch_by_10": bool(margin >= MARGIN - 1e-9)})
    return judged


def curve(target: str, source: dict, data: str, work: Path, mode: str, args) -> dict:
    from deepstrata import api

    out = work / f"curve-{target}-{mode}"
    print(f"curve {target} ({mode}): from {source['run']} on {data}, budgets {args.budgets}, {args.seeds} seeds",
          file=sys.stderr)
    options = {"epochs": args.epochs} if args.epochs else {}
    wall, cpu = time.perf_counter(), cpu_seconds()
    api.learning_curve(source["run"], data, args.budgets, out=out, seeds=args.seeds, seed=args.seed,
                       overwrite=True, device="cpu", quiet=True, mode=mode, **options)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    found = json.loads((out / "curve.json").read_text(encoding="utf-8"))
    judged = judge(found["rows"])
    result = {"target": target, "mode": found.get("mode", mode), "data": data, "run": str(out),
              "source": {k: source[k] for k in ("run", "test_accuracy", "train_wall_s", "train_cpu_s", "reused",
                                                "settings")},
              "budgets": args.budgets, "seeds": args.seeds, "epochs": args.epochs or "auto",
              "rows": found["rows"], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
              "judged": judged, "all_small_budgets_beat_scratch_by_10": all(j["transfer_beats_scratch_by_10"]
                                                                           for j in judged) if judged else None}
    for row in found["rows"]:
        cells = ", ".join(f"{kind} {row[kind]['mean']:.3f}±{row[kind]['std']:.3f}"
                          for kind in ("transfer", "scratch", "baseline") if kind in row)
        print(f"  {row['labels_per_class']} per class: {cells}", file=sys.stderr)
    print(f"  wall {result['wall_s']} s, cpu {result['cpu_s']} s; margins "
          f"{[(j['labels_per_class'], j['margin_points']) for j in judged]}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source-epochs", type=int, default=2, help="epochs of each source fit (default 2)")
    parser.add_argument("--source-train", type=int, default=0,
                        help="a seeded random N training images for each source (default 0: all)")
    parser.add_argument("--source-all", help="an existing run on all ten digits, the source of the digits curve")
    parser.add_argument("--budgets", default="1,5,10,50", help="labels per class (default 1,5,10,50)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the budgets up to 10 (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="epochs of every curve fit (default 0: deepstrata's own, sized from the data)")
    parser.add_argument("--mode", default="finetune", choices=("linear", "finetune", "gradual"))
    parser.add_argument("--modes", help="several modes, comma-separated (e.g. linear,finetune); overrides --mode")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=("source-low", "high", "source-all", "digits"), help="phases to leave out")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 500 source images, 1 source epoch, budgets 1,5, 2 seeds, 2 epochs")
    parser.add_argument("--work", help="folder for the IDX files and runs (default: a temporary one)")
    parser.add_argument("--results", help="raw output file (default benchmarks/results/...)")
    parser.add_argument("--tag", help="the results file's tag (default: the modes, and 'quick')")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    modes = [m.strip() for m in (args.modes or args.mode).split(",") if m.strip()]
    bad = [m for m in modes if m not in ("linear", "finetune", "gradual")]
    if bad:
        parser.error(f"--modes: {', '.join(bad)}; expected linear, finetune or gradual")

    seeds = list(range(args.seed, args.seed + args.seeds))
    tag = args.tag or "-".join([*modes, *(["quick"] if args.quick else [])])
    out = Path(args.results) if args.results else result_path("transfer_mnist", seeds, tag)
    work = Path(args.work or tempfile.mkdtemp(prefix="transfer-mnist-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"settings": {**vars(args), "modes": modes, "work": str(work)}, "mnist": str(MNIST),
                     "margin_points_wanted": round(100 * MARGIN), "judged_budgets": f"<= {SMALL}",
                     "data": {}, "sources": {}, "curves": [], "complete": False}
    started = time.perf_counter()

    def save() -> None:
        results["wall_s"] = round(time.perf_counter() - started, 1)
        write_results(out, results, seeds)

    limit = args.source_train or None
    made_file = work / "made.json"
    wanted = {"source_train": limit, "seed": args.seed}
    made = json.loads(made_file.read_text()) if made_file.is_file() else {}
    if made.get("settings") != wanted:
        made = {"settings": wanted, "low": make(work / "low", [0, 1, 2, 3, 4], limit, args.seed),
                "high": make(work / "high", [5, 6, 7, 8, 9], None, args.seed)}
        if limit:
            made["all"] = make(work / "all", list(range(10)), limit, args.seed)
        made_file.write_text(json.dumps(made))
    results["data"] = made
    print(f"data in {work}: low {made['low']['counts']['train']['images']} train, high "
          f"{made['high']['counts']['train']['images']} train (5-9 relabelled 0-4)", file=sys.stderr)

    settings = {"epochs": args.source_epochs, "seed": args.seed}
    if "source-low" not in args.skip or "high" not in args.skip:
        low = train_source("source-low", str(work / "low"), work, settings)
        results["sources"]["low"] = low
        save()
        if "high" not in args.skip:
            for mode in modes:
                results["curves"].append(curve("high", low, str(work / "high"), work, mode, args))
                save()
    if "source-all" not in args.skip or "digits" not in args.skip:
        if args.source_all:
            every = {"run": args.source_all, "data": "given", "settings": None, "train_wall_s": None,
                     "train_cpu_s": None, "test_accuracy": round(test_accuracy(Path(args.source_all)), 4),
                     "reused": True}
        else:
            every = train_source("source-all", made["all"]["folder"] if limit else str(MNIST), work, settings)
        results["sources"]["all"] = every
        save()
        if "digits" not in args.skip:
            for mode in modes:
                results["curves"].append(curve("digits", every, "digits", work, mode, args))
                save()
    results["complete"] = True
    save()


if __name__ == "__main__":
    main()
