"""``update`` on MNIST: a run of digits 0-7 updated with 8-9 (plus a replayed share of 0-7) vs a retrain on 0-9.

For each seed (same settings everywhere: ``--epochs``, ``--width``, the CNN's defaults otherwise,
no baselines), each phase timed in wall seconds and in CPU seconds of this process:

* ``old``     — ``fit(old/)``: the run the update starts from, digits 0-7;
* ``update``  — ``run.update(new/, replay=R)`` for each share R of ``--replays`` (and, on the first
                seed only, of ``--sweep``: the shares that show why the default is what it is): its
                record's ten-way accuracy on the 0-7 test images (old classes) and on the 8-9 test
                images (new classes); its time is the whole call (reading, training, scoring, writing);
* ``retrain`` — ``fit(all/)`` from scratch on 0-9 with the same settings: its accuracy on the
                same test images (from its confusion matrix) and its time.

Data, under ``--work``: raw IDX folders in MNIST's layout. ``old/`` holds a seeded ``--train``
share of each digit's training images for 0-7 (the t10k 0-7 whole); ``new/`` the same for 8-9,
labels kept as 8 and 9 (deepstrata's IDX reader then names the classes 0..9, 0-7 without
examples: those match the run's classes by name, 8 and 9 are appended); ``all/`` the union.
The t10k files are the test splits, so the old, new and retrain test splits are exactly the
t10k images.

    nice -n 5 python benchmarks/update_mnist.py --train 0.1 --epochs 2 --seeds 0,1 --replays 0.25 --sweep 0,0.1,0.5

Raw output: ``benchmarks/results/update_mnist_<date>_<machine>_<seeds>.json`` (``--results PATH``
otherwise), rewritten after every phase. ``--merge A.json B.json --results C.json`` combines runs
of single seeds (made with the same settings) into one file with the summary recomputed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from results_io import result_path, write_results
from transfer_mnist import FILES, original, write_idx

OLD, NEW = list(range(8)), [8, 9]


def make(folder: Path, digits: list[int], share: float, seed: int) -> dict:
    """``folder/{train,t10k}-...``: the images of ``digits`` (a seeded ``share`` of the training ones), labels kept."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for part in FILES:
        x, y = original(part)
        chosen = []
        for digit in digits:
            members = np.flatnonzero(y == digit)
            if part == "train" and share < 1:
                rng = np.random.default_rng([seed, digit])
                members = np.sort(rng.choice(members, int(round(share * len(members))), replace=False))
            chosen.append(members)
        keep = np.sort(np.concatenate(chosen))
        write_idx(folder / FILES[part][0], x[keep])
        write_idx(folder / FILES[part][1], y[keep])
        counts[part] = int(len(keep))
    return {"folder": str(folder), "digits": digits, "counts": counts}


def class_accuracy(confusion: np.ndarray, classes: list[str], digits: list[int]) -> float:
    rows = [classes.index(str(d)) for d in digits]
    return float(sum(confusion[r, r] for r in rows) / confusion[rows].sum())


def retrain_scores(run_dir: Path) -> dict:
    """Ten-way accuracy of a 0-9 run on the t10k images of 0-7, of 8-9, and of all (its confusion matrix)."""
    confusion = json.loads((run_dir / "confusion.json").read_text(encoding="utf-8"))
    matrix, classes = np.array(confusion["matrix"]), confusion["classes"]
    return {"old_classes": class_accuracy(matrix, classes, OLD), "new_classes": class_accuracy(matrix, classes, NEW),
            "all_classes": class_accuracy(matrix, classes, OLD + NEW)}


def update_scores(run_dir: Path, record: dict) -> dict:
    confusion = json.loads((run_dir / "confusion.json").read_text(encoding="utf-8"))
    matrix, classes = np.array(confusion["matrix"]), confusion["classes"]
    return {"old_classes": record["after"]["old_test"]["accuracy"],
            "new_classes": record["after"]["new_test"]["accuracy"],
            "all_classes": class_accuracy(matrix, classes, OLD + NEW),
            "old_classes_before": record["before"]["old_test"]["accuracy"]}


def mean_std(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "n": len(values)}


def summarise(results: dict) -> dict:
    """Per replay share: mean ± std over seeds of each accuracy, the gap to the retrain, the time ratio."""
    out = {}
    seeds = results["seeds"]
    retrains = [s["retrain"] for s in seeds.values() if "retrain" in s]
    for share in results["settings"]["replays"]:
        rows = [s["updates"][str(share)] for s in seeds.values() if str(share) in s.get("updates", {})]
        paired = [(s["updates"][str(share)], s["retrain"]) for s in seeds.values()
                  if str(share) in s.get("updates", {}) and "retrain" in s]
        if not rows:
            continue
        entry = {key: mean_std([r["scores"][key] for r in rows]) for key in ("old_classes", "new_classes",
                                                                             "all_classes")}
        entry["wall_s"] = mean_std([r["wall_s"] for r in rows])
        if all("cpu_s" in r for r in rows):
            entry["cpu_s"] = mean_std([r["cpu_s"] for r in rows])
        entry["train_examples"] = rows[0]["train_examples"]
        if paired:
            entry["old_gap_points"] = mean_std([100 * (u["scores"]["old_classes"] - r["scores"]["old_classes"])
                                                for u, r in paired])
            entry["time_ratio"] = mean_std([u["wall_s"] / r["wall_s"] for u, r in paired])
            if all("cpu_s" in u and "cpu_s" in r for u, r in paired):
                entry["cpu_ratio"] = mean_std([u["cpu_s"] / r["cpu_s"] for u, r in paired])
            entry["within_1_point"] = bool(entry["old_gap_points"]["mean"] >= -1.0)
            entry["under_half_the_time"] = bool(entry["time_ratio"]["mean"] < 0.5)
        out[str(share)] = entry
    if retrains:
        out["retrain"] = {key: mean_std([r["scores"][key] for r in retrains]) for key in ("old_classes",
                                                                                      "new_classes", "all_classes")}
        out["retrain"]["wall_s"] = mean_std([r["wall_s"] for r in retrains])
        if all("cpu_s" in r for r in retrains):
            out["retrain"]["cpu_s"] = mean_std([r["cpu_s"] for r in retrains])
    return out


def reusable(run_dir: Path, seed: int, args):
    """The finished run in ``run_dir`` if it was fitted with this seed, ``--epochs`` and ``--width``; else None."""
    from deepstrata.config import load_config
    from deepstrata.rundir import read_marker
    from deepstrata.run import load

    if not (run_dir / "config.yaml").is_file() or (read_marker(run_dir) or {}).get("status") != "finished":
        return None
    cfg = load_config(run_dir / "config.yaml")
    if (cfg.train.seed, cfg.train.epochs, cfg.model.width) != (seed, args.epochs, args.width):
        return None
    print(f"seed {seed}: reusing {run_dir}", file=sys.stderr)
    return load(run_dir)


def merge(files: list[str], out: str | None) -> None:
    """One results file from several runs of this script (e.g. one seed each), the summary recomputed."""
    parts = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
    results = {**parts[0]["results"], "seeds": {}, "merged": True}
    replays: list[float] = []
    for part in parts:  # one seed's phases may come from several files (an update share measured later)
        for seed, entry in part["results"]["seeds"].items():
            into = results["seeds"].setdefault(seed, {"updates": {}})
            into["updates"].update(entry.get("updates", {}))
            into.update({k: v for k, v in entry.items() if k != "updates" and not (k == "old" and v.get("reused"))})
        replays += [r for r in part["results"]["settings"]["replays"] if r not in replays]
    results["settings"] = {**results["settings"], "replays": replays, "seeds": ",".join(results["seeds"])}
    results["complete"] = all(part["results"].get("complete") for part in parts)
    results["summary"] = summarise(results)
    seeds = [int(s) for s in results["seeds"]]
    write_results(Path(out) if out else result_path("update_mnist", seeds), results, seeds,
                  merged_from=[{"file": f, "provenance": part["provenance"]} for f, part in zip(files, parts)])
    print(json.dumps(results["summary"], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=float, default=0.2, help="share of MNIST's training images used (default 0.2)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every fit and update (default 2)")
    parser.add_argument("--seeds", default="0,1", help="seeds, comma-separated (default 0,1)")
    parser.add_argument("--width", type=int, default=16, help="the CNN's width, for every fit (default 16)")
    parser.add_argument("--replays", default="0.25", help="replay shares every seed updates with (default 0.25)")
    parser.add_argument("--sweep", default="", help="more replay shares, on the first seed only (e.g. 0,0.1,0.5)")
    parser.add_argument("--work", help="folder for the IDX files and runs (default: a temporary one)")
    parser.add_argument("--results", help="raw output file (default benchmarks/results/...)")
    parser.add_argument("--reuse-old", action="store_true",
                        help="reuse a finished old-SEED run in --work fitted with these settings (not timed again)")
    parser.add_argument("--no-retrain", action="store_true",
                        help="leave the retrain out (e.g. measured by another run)")
    parser.add_argument("--merge", nargs="+", metavar="FILE",
                        help="combine raw output files of single seeds (same settings) into --results, and stop")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.results)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    replays = [float(r) for r in args.replays.split(",")]
    sweep = [float(r) for r in args.sweep.split(",") if r.strip()]
    out = Path(args.results) if args.results else result_path("update_mnist", seeds)
    work = Path(args.work or tempfile.mkdtemp(prefix="update-mnist-"))
    work.mkdir(parents=True, exist_ok=True)
    from deepstrata import api
    from deepstrata.run import load

    data = {name: make(work / name, digits, args.train, 0) for name, digits in
            (("old", OLD), ("new", NEW), ("all", OLD + NEW))}
    results: dict = {"settings": {**vars(args), "replays": replays + [r for r in sweep if r not in replays],
                                  "work": str(work),
                                  "train_subset": f"{args.train:g} of MNIST's training images per digit (seeded)"},
                     "data": data, "seeds": {}, "complete": False}
    started = time.perf_counter()

    def save() -> None:
        results["wall_s"] = round(time.perf_counter() - started, 1)
        results["summary"] = summarise(results)
        write_results(out, results, seeds)

    common = {"epochs": args.epochs, "width": args.width, "quiet": True, "device": "cpu", "baselines": False,
              "overwrite": True}
    for seed in seeds:
        entry = results["seeds"].setdefault(str(seed), {"updates": {}})
        kept = reusable(work / f"old-{seed}", seed, args) if args.reuse_old else None
        t, c = time.perf_counter(), time.process_time()
        old = kept or api.fit(data["old"]["folder"], out=work / f"old-{seed}", seed=seed, **common)
        entry["old"] = {"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2),
                        "test_accuracy": old.comparison()["rows"][0]["metrics"]["accuracy"], "reused": bool(kept)}
        print(f"seed {seed}: old 0-7 fit {entry['old']['wall_s']} s, test accuracy "
              f"{entry['old']['test_accuracy']:.4f}", file=sys.stderr)
        save()
        for share in replays + ([r for r in sweep if r not in replays] if seed == seeds[0] else []):
            target = work / f"update-{seed}-{share:g}"
            t, c = time.perf_counter(), time.process_time()
            updated = load(old.path).update(data["new"]["folder"], target, replay=share, quiet=True)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            record = updated.info["updates"][-1]
            scores = update_scores(target, record)
            entry["updates"][str(share)] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                            "record_seconds": record["seconds"],
                                            "train_seconds": record["train_seconds"],
                                            "train_examples": record["examples"], "scores": scores}
            print(f"seed {seed}: update replay {share:g}: {wall:.1f} s; old {scores['old_classes']:.4f} new "
                  f"{scores['new_classes']:.4f} all {scores['all_classes']:.4f}", file=sys.stderr)
            save()
        if args.no_retrain:
            continue
        t, c = time.perf_counter(), time.process_time()
        api.fit(data["all"]["folder"], out=work / f"retrain-{seed}", seed=seed, **common)
        entry["retrain"] = {"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2),
                            "scores": retrain_scores(work / f"retrain-{seed}")}
        print(f"seed {seed}: retrain 0-9 {entry['retrain']['wall_s']} s; " + ", ".join(
            f"{k} {v:.4f}" for k, v in entry["retrain"]["scores"].items()), file=sys.stderr)
        save()
    results["complete"] = True
    save()
    print(json.dumps(results["summary"], indent=1))


if __name__ == "__main__":
    main()
