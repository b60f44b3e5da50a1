"""MovieLens 100K: popularity, item-kNN, MF-BPR and SASRec under leave-last-out, full ranking.

Also measures ``update`` (train on the first 90% of events by time, then add the last
10%) against a full retrain on 100%, and ``recommend`` latency and throughput.

Run (from the repository root; the figures in BENCHMARKS.md came from this command):

    nice -n 15 .venv/bin/python benchmarks/recommend_movielens.py --seeds 0 1 2 --threads 1

Writes a JSON of every figure to ``--json`` (default
``benchmarks/results/recommend_movielens_<date>_<machine>_seeds<S>.json``, rewritten after
each fit so a run stopped midway keeps what it measured) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import deepstrata as ds
from deepstrata.recsys_metrics import METRIC_NAMES
from deepstrata.families.recommend.serve import recommend_users
from results_io import result_path, write_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "movielens-100k"


SMOKE: dict = {}
PARTS = ("loo", "sampled", "update", "serving")


def fit(data: Path, model: str, out: Path, seed: int, threads: int, baselines: bool, **extra) -> ds.Run:
    extra = {**SMOKE, **extra}
    return ds.fit(str(data), model, task="recommend", out=out, overwrite=True, quiet=True, seed=seed,
                  threads=threads, device="cpu", baselines=baselines, **extra)


def rows_of(run: ds.Run) -> dict[str, dict]:
    return {row["name"]: row for row in run.comparison()["rows"]}


def save(path: Path, results: dict) -> None:
    """Write what is measured so far, so a long run stopped midway keeps its figures."""
    write_results(path, results, results["seeds"])


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def split_by_time(source: Path, folder: Path, fraction: float = 0.9) -> tuple[Path, Path]:
    """The first ``fraction`` of events by time as ``u.data`` (titles beside it), the rest as a CSV."""
    rows = [line.split("\t") for line in (source / "u.data").read_text().splitlines()]
    rows.sort(key=lambda r: int(r[3]))
    cut = int(len(rows) * fraction)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join("\t".join(r) + "\n" for r in rows[:cut]))
    shutil.copy(source / "u.item", folder / "u.item")
    new = folder / "last10.csv"
    new.write_text("user_id,item_id,rating,timestamp\n" + "".join(",".join(r) + "\n" for r in rows[cut:]))
    return folder / "u.data", new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sampled-negatives", type=int, default=100,
                        help="negatives of the sampled-softmax SASRec (first seed only)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                        help="loo: all models and baselines over the seeds; sampled: SASRec on sampled negatives; "
                        "update: first 90%% + update vs full retrain; serving: recommend latency and throughput")
    parser.add_argument("--json", type=Path, default=None,
                        help="raw output (default: benchmarks/results/recommend_movielens_<date>_<machine>_seeds<S>"
                        "[_smoke].json)")
    parser.add_argument("--smoke", action="store_true", help="1 epoch each, to check the script end to end")
    args = parser.parse_args()
    if args.smoke:
        SMOKE.update(epochs=1, update_epochs=1)
    args.json = args.json or result_path("recommend_movielens", args.seeds, "smoke" if args.smoke else None)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ds-rec-bench-"))
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
                                f"thread(s), torch {torch.__version__}",
                     "date": time.strftime("%Y-%m-%d"), "seeds": args.seeds}
    try:
        table: dict[str, dict] = {}
        runs: dict[str, ds.Run] = {}
        if "loo" in args.parts:
            for model in ("mf", "sasrec"):
                for seed in args.seeds:
                    first = (model, seed) == ("mf", args.seeds[0])
                    run = fit(args.data, model, work / f"{model}-{seed}", seed, args.threads, baselines=first)
                    runs[f"{model}-{seed}"] = run
                    for name, row in rows_of(run).items():
                        entry = table.setdefault(name, {"metrics": {m: [] for m in METRIC_NAMES}, "seconds": []})
                        for m in METRIC_NAMES:
                            entry["metrics"][m].append(row["metrics"][m])
                        entry["seconds"].append(row["train_seconds"])
                        entry.setdefault("settings", row.get("settings"))
                    print(f"done {model} seed {seed}: {rows_of(run)[model]['metrics']}", flush=True)
                    results["leave_last_out"] = table
                    results["split"] = run.comparison()["split"]
                    save(args.json, results)
        if "sampled" in args.parts:
            name = f"sasrec-sampled{args.sampled_negatives}"
            run = fit(args.data, "sasrec", work / name, args.seeds[0], args.threads, baselines=False,
                      negatives=args.sampled_negatives)
            row = rows_of(run)["sasrec"]
            table[name] = {"metrics": {m: [row["metrics"][m]] for m in METRIC_NAMES},
                           "seconds": [row["train_seconds"]], "settings": row["settings"]}
            results["leave_last_out"] = table
            print(f"done {name}: {row['metrics']}", flush=True)
            save(args.json, results)

        if "update" in args.parts:  # update vs full retrain, for both learned families
            old_data, new_csv = split_by_time(args.data, work / "first90")
            updates = {}
            for model in ("mf", "sasrec"):
                seed = args.seeds[0]
                if f"{model}-{seed}" not in runs:
                    runs[f"{model}-{seed}"] = fit(args.data, model, work / f"{model}-{seed}", seed, args.threads,
                                                  baselines=False)
                base = fit(old_data, model, work / f"{model}-90", seed, args.threads, baselines=False)
                base_seconds = rows_of(base)[model]["train_seconds"]
                started = time.perf_counter()
                updated = base.update(new_csv, out=work / f"{model}-90-updated")
                wall = time.perf_counter() - started
                record = updated.comparison()["update"]
                full = rows_of(runs[f"{model}-{seed}"])[model]
                updates[model] = {"fit_90_train_seconds": base_seconds, "before": record["before"],
                                  "after": record["after"], "update_epochs": record["epochs"],
                                  "update_train_seconds": record["train_seconds"],
                                  "update_wall_seconds": round(wall, 2),
                                  "new_users": record["new_users"], "new_items": record["new_items"],
                                  "new_events": record["new_events"],
                                  "retrain_metrics": full["metrics"], "retrain_train_seconds": full["train_seconds"],
                                  "retrain_epochs": full["settings"]["epochs_run"]}
                print(f"done update {model}: {updates[model]}", flush=True)
                results["update"] = updates
                save(args.json, results)

        if "serving" in args.parts:  # one user at a time, and every user in batches
            key = f"sasrec-{args.seeds[0]}"
            if key not in runs:
                runs[key] = fit(args.data, "sasrec", work / key, args.seeds[0], args.threads, baselines=False)
            run = ds.load(runs[key].path)
            users = json.loads((run.path / "vocab.json").read_text())["user_ids"]
            run.recommend(users[0], 10)
            started = time.perf_counter()
            for user in users[:200]:
                run.recommend(user, 10)
            single_ms = (time.perf_counter() - started) / 200 * 1000
            started = time.perf_counter()
            recommend_users(run, users, 10)
            all_seconds = time.perf_counter() - started
            results["serving"] = {"model": "sasrec", "single_user_ms": round(single_ms, 2),
                                  "all_users": len(users), "all_users_seconds": round(all_seconds, 3),
                                  "users_per_second": round(len(users) / all_seconds, 1)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save(args.json, results)
    print_markdown(results)


def print_markdown(results: dict) -> None:
    print(f"\nMachine: {results['machine']}; date {results['date']}; seeds {results['seeds']}\n")
    print("| model | kind | NDCG@10 | HR@10 | recall@20 | coverage@10 | train s (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in results.get("leave_last_out", {}).items():
        m = entry["metrics"]
        kind = "baseline" if name in ("popularity", "itemknn") else "learned"
        print(f"| {name} | {kind} | {mean_std(m['ndcg@10'])} | {mean_std(m['hr@10'])} | {mean_std(m['recall@20'])} "
              f"| {mean_std(m['coverage@10'])} | {statistics.mean(entry['seconds']):.1f} |")
    print("\n| model | NDCG@10 before | after update | full retrain | update s | retrain s "
          "| new users / items / events |")
    print("|---|---|---|---|---|---|---|")
    for name, u in results.get("update", {}).items():
        print(f"| {name} | {u['before']['ndcg@10']:.4f} | {u['after']['ndcg@10']:.4f} | "
              f"{u['retrain_metrics']['ndcg@10']:.4f} | {u['update_train_seconds']:.1f} ({u['update_epochs']} ep) | "
              f"{u['retrain_train_seconds']:.1f} ({u['retrain_epochs']} ep) | "
              f"{u['new_users']} / {u['new_items']} / {u['new_events']} |")
    s = results.get("serving")
    if s:
        print(f"\nrecommend ({s['model']}): {s['single_user_ms']} ms per single-user call; "
              f"all {s['all_users']} users in {s['all_users_seconds']} s ({s['users_per_second']} users/s)")


if __name__ == "__main__":
    main()
