"""Text transfer on CPU: MiniLM → AG News at few labels per class, and what the IMDB head+tail recipe costs.

Two phases (``--skip`` leaves either out):

* ``agnews`` — the new task is AG News's 7,600-row test file (``../shared/data/ag-news/test.csv``,
  4 classes; the 120,000-row training file is not in the folder). To keep every fit's test
  pass affordable on a shared CPU, a fixed, seeded subset of ``--rows-per-class`` rows per
  class (default 600: 2,400 texts) is written to ``--work`` as a CSV and split by deepstrata's
  own stratified split (seeded by the fit's seed: 480 test texts, 192 validation, 1,728
  training), then cut to N labelled texts per class for training and validation
  (``labels_per_class``; the test split stays whole; at 100 per class the validation split
  holds all its 48 per class). The first seed runs every budget first, then the IMDB phase,
  then the other seeds (budgets up to ``--small`` only), so a stopped run has one of each.
  At each budget and seed it runs, on the same split:

  - ``transfer-<mode>``: ``deepstrata.api.transfer("minilm", ..., mode=M)`` for each mode of
    ``--modes`` (deepstrata's transfer defaults: batch 16, lr 1e-4, epochs sized from the
    data, patience 5; linear: the head on features computed once, 100 epochs);
  - ``scratch-transformer``: the text family's own model from scratch (``fit --model
    transformer``: 2 blocks, 128 wide, BPE learned from the training texts; its defaults), whose
    fit also runs the text family's hand-engineered baseline;
  - ``tfidf_lr``: TF-IDF word 1-2 grams + logistic regression, C chosen on the (few-label)
    validation split: the baseline row of that fit;
  - ``scratch-minilm``: the same architecture as the transfer randomly initialised
    (``--model minilm`` with ``init="random"``: the learning curve's scratch row, the same
    recipe as the transfer) — as costly as a fine-tuning, so only at the (budget, seed)
    pairs of ``--minilm-scratch``.

  ``--epochs 5:8,20:5,100:3`` caps the fine-tuning epochs per budget (MiniLM's few-label
  default sizes them to about 900 steps, 4 to 40 epochs, which on 2 shared CPU cores takes
  a quarter of an hour per fit even at 5 labels per class); linear keeps its default.

  Every fit reads ``--max-length`` tokens (128: AG News texts average about 50 WordPieces).
  Per row: test accuracy, macro-F1, the fit's wall and CPU seconds (``getrusage`` of this
  process around the fit: user + system, all threads), and the run's own train seconds.
  The test split differs between seeds (the split is seeded), so a row's std holds the
  test sample's noise as well as the labels' and the initialisation's.

* ``imdb-cost`` — the recipe of the IMDB target (MiniLM fine-tuned through ``transfer`` with
  head+tail truncation to 512 tokens, batch 16) is not trained on a CPU; it is timed. Reviews
  are read from ``../shared/data/imdb/aclImdb_labeled.tar.xz`` (``--imdb-sample`` per class of
  the training split), tokenized with head+tail truncation, and ``--imdb-steps`` training
  steps (forward, backward, AdamW; train mode) are timed on batches of 16 texts padded to
  512 tokens (the worst case: every text at the limit), after one untimed warm-up step; then
  the same number on length-bucketed batches of the real reviews (what the loop trains on).
  The extrapolation to an epoch of IMDB's training split (25,000 reviews less the 10%
  validation: 22,500 / 16 = 1,407 steps) uses both.

    mkdir -p /tmp/snap-text && cp -r src /tmp/snap-text/ && \\
    PYTHONPATH=/tmp/snap-text/src HF_HUB_OFFLINE=1 nice -n 5 .venv/bin/python benchmarks/transfer_text.py

Raw output: ``benchmarks/results/transfer_text_<date>_<machine>_<seeds>.json`` (``--results PATH``
for another file), rewritten after every fit, so a stopped run keeps what it measured. The
run directories stay in ``--work`` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results_io import result_path, write_results

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
AG_NEWS = SHARED / "ag-news" / "test.csv"
IMDB = SHARED / "imdb" / "aclImdb_labeled.tar.xz"
IMDB_TRAIN = 25_000
VAL_FRACTION = 0.1
BATCH = 16
MAX_IMDB = 512


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_fit(call, **kwargs) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    run = call(**kwargs)
    return run, time.perf_counter() - wall, cpu_seconds() - cpu


def rows_of(run_dir: Path) -> dict:
    import json

    comparison = json.loads((run_dir / "comparison.json").read_text(encoding="utf-8"))
    return {"split": comparison["split"], "rows": {row["name"]: row for row in comparison["rows"]}}


def row_entry(row: dict, wall: float | None, cpu: float | None, run_dir: Path) -> dict:
    entry = {"accuracy": round(row["metrics"]["accuracy"], 4), "macro_f1": round(row["metrics"]["macro_f1"], 4),
             "train_seconds": row.get("train_seconds"), "run": str(run_dir)}
    if wall is not None:
        entry.update(fit_wall_seconds=round(wall, 1), fit_cpu_seconds=round(cpu, 1))
    settings = row.get("settings") or {}
    for key in ("epochs_run", "best_epoch", "trained_params"):
        if key in settings:
            entry[key] = settings[key]
    return entry


def summary(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0, "seeds": len(values)}


def summarise(fits: list[dict]) -> list[dict]:
    """Per budget and kind: mean ± sample std of test accuracy, and mean CPU seconds per fit."""
    table: dict = {}
    for fit in fits:
        table.setdefault(fit["labels_per_class"], {}).setdefault(fit["kind"], []).append(fit)
    out = []
    for budget, kinds in table.items():
        row = {"labels_per_class": budget}
        for kind, entries in kinds.items():
            row[kind] = {**summary([e["accuracy"] for e in entries]),
                         "cpu_seconds_per_fit": (round(statistics.fmean(e["fit_cpu_seconds"] for e in entries), 1)
                                                 if all("fit_cpu_seconds" in e for e in entries) else None),
                         "wall_seconds_per_fit": (round(statistics.fmean(e["fit_wall_seconds"] for e in entries), 1)
                                                  if all("fit_wall_seconds" in e for e in entries) else None)}
        out.append(row)
    return out


def ag_subset(work: Path, per_class: int) -> Path:
    """A fixed, seeded ``per_class`` rows of each AG News class, as a CSV with a header (title, description
    joined: the text deepstrata reads from the original file)."""
    import csv

    import numpy as np

    from deepstrata.data.text import load_text

    data = load_text(AG_NEWS)
    rng = np.random.default_rng(1234)
    labels = np.asarray(data.labels)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                   for c in range(len(data.classes))]))
    path = work / f"ag-news-{per_class}-per-class.csv"
    work.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index in keep.tolist():
            writer.writerow([data.texts[index], data.classes[labels[index]]])
    return path


def agnews(args, results: dict, save, seeds: list[int]) -> None:
    from deepstrata.api import fit, transfer

    work = Path(args.work)
    table = ag_subset(work, args.rows_per_class)
    fits = results.setdefault("agnews", {"fits": [], "data": f"{table.name}: {args.rows_per_class} rows per class "
                                                             f"of {AG_NEWS}, seeded (1234)"})["fits"]
    common = {"max_length": args.max_length, "device": "cpu", "quiet": True}
    for seed in seeds:
        budgets = [int(b) for b in args.budgets.split(",")]
        for budget in (budgets if seed == args.seeds[0] else [b for b in budgets if b <= args.small]):
            capped = {"epochs": args.epochs[budget]} if budget in args.epochs else {}
            for mode in args.modes.split(","):
                out = work / f"ag-{budget}-seed{seed}-transfer-{mode}"
                _, wall, cpu = run_fit(transfer, source="minilm", data=str(table), mode=mode,
                                       labels_per_class=budget, seed=seed, out=out, overwrite=True,
                                       baselines=False, **common, **({} if mode == "linear" else capped))
                got = rows_of(out)
                learned = next(r for r in got["rows"].values() if r["kind"] == "learned")
                fits.append({"labels_per_class": budget, "seed": seed, "kind": f"transfer-{mode}",
                             "split": got["split"], **row_entry(learned, wall, cpu, out)})
                print(f"{budget}/class seed {seed} transfer-{mode}: {fits[-1]['accuracy']:.4f} "
                      f"({cpu:.0f} CPU s)", file=sys.stderr)
                results["agnews"]["summary"] = summarise(fits)
                save()
            out = work / f"ag-{budget}-seed{seed}-scratch-transformer"
            _, wall, cpu = run_fit(fit, data=str(table), model="transformer", labels_per_class=budget,
                                   seed=seed, out=out, overwrite=True, baselines=True, **common)
            got = rows_of(out)
            learned = next(r for r in got["rows"].values() if r["kind"] == "learned")
            tfidf = got["rows"]["tfidf_lr"]
            baseline_seconds = float(tfidf.get("train_seconds") or 0.0)
            fits.append({"labels_per_class": budget, "seed": seed, "kind": "scratch-transformer",
                         "split": got["split"], **row_entry(learned, wall - baseline_seconds, cpu - baseline_seconds,
                                                            out),
                         "note": "fit wall/CPU seconds less the TF-IDF baseline's own train seconds"})
            fits.append({"labels_per_class": budget, "seed": seed, "kind": "tfidf_lr", "split": got["split"],
                         **row_entry(tfidf, baseline_seconds, baseline_seconds, out),
                         "note": "the baseline row of the scratch-transformer fit; seconds = its train seconds"})
            print(f"{budget}/class seed {seed} scratch-transformer: {fits[-2]['accuracy']:.4f}, tfidf_lr: "
                  f"{fits[-1]['accuracy']:.4f}", file=sys.stderr)
            results["agnews"]["summary"] = summarise(fits)
            save()
            if (budget, seed) in args.minilm_scratch:
                out = work / f"ag-{budget}-seed{seed}-scratch-minilm"
                _, wall, cpu = run_fit(fit, data=str(table), model="minilm", init="random",
                                       labels_per_class=budget, seed=seed, out=out, overwrite=True,
                                       baselines=False, **common, **capped)
                got = rows_of(out)
                learned = next(r for r in got["rows"].values() if r["kind"] == "learned")
                fits.append({"labels_per_class": budget, "seed": seed, "kind": "scratch-minilm", "split": got["split"],
                             **row_entry(learned, wall, cpu, out)})
                print(f"{budget}/class seed {seed} scratch-minilm: {fits[-1]['accuracy']:.4f}", file=sys.stderr)
                results["agnews"]["summary"] = summarise(fits)
                save()


def imdb_cost(args, results: dict, save) -> None:
    import numpy as np
    import torch

    from deepstrata.config import TrainConfig
    from deepstrata.data.text import load_text
    from deepstrata.data.tokenizer import TextTokenizer, pad_batch
    from deepstrata.engine.layer_schedule import transfer_schedule
    from deepstrata.engine.loop import batch_generator, build_optimizer
    from deepstrata.families.text import transfer as text_transfer
    from deepstrata.families.text.tasks import bucketed_batches

    t0 = time.perf_counter()
    data = load_text(IMDB, max_per_class=args.imdb_sample)
    tokenizer = TextTokenizer.from_file(text_transfer.open_source("minilm", pretrained_path=None).tokenizer,
                                        MAX_IMDB, "wordpiece", "head+tail")
    encoded = tokenizer.encode(data.texts)
    full = TextTokenizer.from_file(text_transfer.open_source("minilm", pretrained_path=None).tokenizer,
                                   100_000, "wordpiece").encode(data.texts).lengths
    read_seconds = time.perf_counter() - t0
    source = text_transfer.open_source("minilm", pretrained_path=None)
    reused = text_transfer.reused_layers(source, None)
    net = text_transfer.build(source, 2, reused, dropout=0.1)
    schedule = transfer_schedule(net.layer_names, reused, "finetune", epochs=4)
    optimizer = build_optimizer(net, TrainConfig(lr=1e-4, weight_decay=0.01, **schedule))
    labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))
    net.train()

    cpu_per_step: list[float] = []

    def step(ids: torch.Tensor, y: torch.Tensor) -> float:
        start, cpu = time.perf_counter(), cpu_seconds()
        loss = torch.nn.functional.cross_entropy(net(ids), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        cpu_per_step.append(cpu_seconds() - cpu)
        return time.perf_counter() - start

    rng = np.random.default_rng(0)
    batches = bucketed_batches(encoded.lengths, BATCH, batch_generator(0, 0))
    timed_full, timed_bucketed, bucket_tokens = [], [], []
    warm = rng.choice(len(encoded.ids), BATCH, replace=False)
    step(torch.randint(1000, 20000, (BATCH, MAX_IMDB)), labels[warm])  # warm-up, untimed
    for k in range(args.imdb_steps):
        chosen = rng.choice(len(encoded.ids), BATCH, replace=False)
        ids = torch.from_numpy(pad_batch([np.resize(encoded.ids[i], MAX_IMDB) for i in chosen]))
        timed_full.append(step(ids, labels[chosen]))
        print(f"imdb: 16 x 512 step {k + 1}: {timed_full[-1]:.1f}s", file=sys.stderr)
    for batch in batches[: args.imdb_steps]:
        ids = torch.from_numpy(pad_batch([encoded.ids[i] for i in batch]))
        bucket_tokens.append(int(ids.shape[1]))
        timed_bucketed.append(step(ids, labels[torch.from_numpy(batch)]))
        print(f"imdb: bucketed step ({ids.shape[1]} tokens): {timed_bucketed[-1]:.1f}s", file=sys.stderr)
    steps_per_epoch = -(-round(IMDB_TRAIN * (1 - VAL_FRACTION)) // BATCH)
    per_step_full, per_step_bucketed = statistics.fmean(timed_full), statistics.fmean(timed_bucketed)
    results["imdb_cost"] = {
        "recipe": "transfer --from minilm --mode finetune --truncate head+tail --max-length 512, batch 16, AdamW, "
                  "discriminative rates (engine.layer_schedule)",
        "sample_reviews": len(data.texts), "read_and_tokenize_seconds": round(read_seconds, 1),
        "wordpieces_per_review": {"mean": round(float(full.mean()), 1), "median": float(np.median(full)),
                                  "over_512": round(float((full > MAX_IMDB).mean()), 3)},
        "torch_threads": torch.get_num_threads(),
        "seconds_per_step_16x512": [round(t, 2) for t in timed_full],
        "cpu_seconds_per_step_16x512": [round(t, 2) for t in cpu_per_step[1:1 + len(timed_full)]],
        "cpu_seconds_per_step_bucketed": [round(t, 2) for t in cpu_per_step[1 + len(timed_full):]],
        "epoch_cpu_hours_16x512": round(statistics.fmean(cpu_per_step[1:1 + len(timed_full)]) * steps_per_epoch
                                        / 3600, 2),
        "seconds_per_step_bucketed": [round(t, 2) for t in timed_bucketed], "bucketed_lengths": bucket_tokens,
        "mean_seconds_per_step_16x512": round(per_step_full, 2),
        "mean_seconds_per_step_bucketed": round(per_step_bucketed, 2),
        "steps_per_epoch": steps_per_epoch,
        "epoch_hours_16x512": round(per_step_full * steps_per_epoch / 3600, 2),
        "epoch_hours_bucketed": round(per_step_bucketed * steps_per_epoch / 3600, 2),
        "note": "wall seconds on a shared machine (see load_average); CPU seconds are user + system of all "
                "threads. Training steps only; validation (2,500 reviews) and the 25,000-review test pass come on top "
                "(a forward pass is about a third of a training step)",
    }
    save()


def _pairs(text: str) -> dict[int, int]:
    return {int(a): int(b) for a, b in (part.split(":") for part in text.split(",") if part)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", default="5,20,100")
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--small", type=int, default=20, help="budgets up to this run over every seed")
    parser.add_argument("--modes", default="finetune,linear")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rows-per-class", type=int, default=600, help="AG News rows per class in the task")
    parser.add_argument("--epochs", default="5:8,20:5,100:3", type=_pairs,
                        help="fine-tuning epochs per budget, BUDGET:EPOCHS,...; '' for the defaults")
    parser.add_argument("--minilm-scratch", default="5:0", type=lambda s: set(_pairs(s).items()),
                        help="(budget:seed,...) at which MiniLM's architecture is also trained from scratch")
    parser.add_argument("--imdb-sample", type=int, default=40, help="IMDB training reviews per class to time on")
    parser.add_argument("--imdb-steps", type=int, default=3)
    parser.add_argument("--skip", default="", help="phases to leave out: agnews, imdb-cost")
    parser.add_argument("--work", default=None)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    args.work = args.work or tempfile.mkdtemp(prefix="transfer-text-")
    path = Path(args.results) if args.results else result_path("transfer_text", args.seeds)
    results: dict = {"settings": {k: v for k, v in vars(args).items()}}

    def save() -> None:
        write_results(path, results, args.seeds, phase_finished_at=time.strftime("%H:%M:%S"))

    skip = set(filter(None, args.skip.split(",")))
    if "agnews" not in skip:
        agnews(args, results, save, args.seeds[:1])
    if "imdb-cost" not in skip:
        imdb_cost(args, results, save)
    if "agnews" not in skip:
        agnews(args, results, save, args.seeds[1:])
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
