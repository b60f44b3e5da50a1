"""Scale check: a synthetic log of a million events, read, split and scored with full ranking on CPU.

The issue asks that a million-interaction log scores within memory on a CPU. This builds
one with MovieLens-1M's shape (6,040 users, 3,706 items, popularity skewed like a Zipf
law, distinct (user, item) pairs), then times reading, the leave-last-out split, the
item-kNN fit, and full-ranking evaluation of every user for popularity, item-kNN and an
(untrained) SASRec, and reports the peak resident memory.

    nice -n 15 .venv/bin/python benchmarks/recommend_scale.py --events 1000000 --threads 1

The synthetic log is drawn with seed 0; the timings and the peak RSS are kept in
``benchmarks/results/`` (``--results`` to choose the file).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepstrata.baselines.itemknn import ItemKNN
from deepstrata.baselines.popularity import Popularity
from deepstrata.data.interactions import leave_last_out, read_interactions
from deepstrata.models.recsys import SASRec
from deepstrata.recsys_metrics import evaluate_scorer
from deepstrata.families.recommend.tasks import model_scorer
from results_io import result_path, write_results


def synthetic_log(path: Path, events: int, users: int, items: int, seed: int = 0) -> None:
    """Distinct (user, item) pairs, item popularity ~ Zipf, random times."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1) ** 0.9
    per_user = rng.multinomial(events, np.full(users, 1.0 / users)).clip(max=items)
    with path.open("w") as handle:
        handle.write("user_id,item_id,timestamp\n")
        for user, count in enumerate(per_user):
            chosen = rng.choice(items, size=count, replace=False, p=weights / weights.sum())
            times = rng.integers(0, 10**9, size=count)
            handle.write("".join(f"{user},{item},{t}\n" for item, t in zip(chosen, times)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=None,
                        help="raw output JSON (default: benchmarks/results/recommend_scale_<date>_<machine>_seed0_"
                        "<events>.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.csv"
        synthetic_log(path, args.events, args.users, args.items)
        timings = {}
        started = time.perf_counter()
        log = read_interactions(path)
        timings["read"] = time.perf_counter() - started
    started = time.perf_counter()
    split = leave_last_out(log)
    timings["split"] = time.perf_counter() - started
    started = time.perf_counter()
    popular = Popularity(split.train_items, split.num_items)
    evaluate_scorer(popular.scores, split.test, split.num_items)
    timings["popularity_eval"] = time.perf_counter() - started
    started = time.perf_counter()
    knn = ItemKNN(split.train_users, split.train_items, split.num_users, split.num_items, max_k=100)
    timings["itemknn_fit"] = time.perf_counter() - started
    started = time.perf_counter()
    evaluate_scorer(knn.scores, split.test, split.num_items)
    timings["itemknn_eval"] = time.perf_counter() - started
    model = SASRec(split.num_items, max_len=50)
    started = time.perf_counter()
    evaluate_scorer(model_scorer(model, torch.device("cpu")), split.test, split.num_items)
    timings["sasrec_eval"] = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(log):,} events, {log.num_users:,} users, {log.num_items:,} items; "
          f"{len(split.test):,} test users scored against every item")
    for name, seconds in timings.items():
        print(f"  {name:<16} {seconds:6.1f} s")
    print(f"  peak RSS         {peak:6.0f} MB")
    results = {"events": len(log), "users": log.num_users, "items": log.num_items, "test_users": len(split.test),
               "threads": args.threads, "seconds": timings, "peak_rss_mb": peak}
    write_results(args.results or result_path("recommend_scale", 0, f"{args.events}events"), results, 0)


if __name__ == "__main__":
    main()
