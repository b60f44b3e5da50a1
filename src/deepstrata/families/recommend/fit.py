"""How the recommendation family fits: the steps ``deepstrata.pipeline`` asks of it, and the baselines.

The log is read and split (leave-last-out or temporal); MF-BPR or a SASRec-style sequence
model trains in the one training loop; the test split is scored with full ranking, beside
the most-popular and tuned item-kNN baselines on the same split.

Every model is fitted on the training events only; at validation and test time each
user's history is every event before the held-out one (for test that includes the
validation event), and that history is excluded from the ranking.

Files a recommendation run adds to the run directory: ``interactions.npz`` (the cleaned
log as index arrays) and ``vocab.json`` (user and item ids, titles, notes), which
``recommend``/``similar``/``update`` read.
"""

from __future__ import annotations

import html
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deepstrata.data.interactions import InteractionLog, RecSplit, save_log
from deepstrata.engine import checkpoint as ckpt
from deepstrata.families.base import Built, FitContext, Prepared
from deepstrata.families.recommend.config import LOG_FILE, PRIMARY, VOCAB_FILE, read_log, split_events
from deepstrata.families.recommend.family import TASK
from deepstrata.families.recommend.tasks import build_recommender, make_task, metrics_only, model_scorer
from deepstrata.records import provenance, write_model_info
from deepstrata.recsys_metrics import evaluate_scorer

# What ``resolved_train`` sizes epochs and batch size from when a config leaves them open (a YAML file
# without ``train.epochs``; the defaults always set both). The recommendation tasks have no
# ``num_examples``, so the training loop has always sized them as for 10,000 examples; kept, so such
# configs train as they did.
UNSIZED_TRAIN_SIZE = 10_000


@dataclass
class Interactions:
    """The recommendation family's part of ``Prepared``: the cleaned log and its split."""

    log: InteractionLog
    split: RecSplit


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


# ---------------------------------------------------------------- read, describe, build, records


def read(cfg) -> Prepared:
    log = read_log(cfg.data.source, cfg.recommend)
    split = split_events(log, cfg.recommend)
    return Prepared(source=log.source, train_size=UNSIZED_TRAIN_SIZE, guarded_paths=(cfg.data.source,),
                    own=Interactions(log, split))


def describe(prepared: Prepared, load_seconds: float) -> list[str]:
    log, split = prepared.own.log, prepared.own.split
    counts = split.describe()
    lines = [f"data: {log.source} — {log.num_users} users, {log.num_items} items, {len(log)} interactions; "
             f"{split.method} split: train {counts['train']} events, val {counts['val']} users, "
             f"test {counts['test']} users; read in {load_seconds:.1f}s"]
    for key in ("users_single_interaction", "users_not_in_test", "cold_users_not_in_test"):
        if counts.get(key):
            lines.append(f"note: {key.replace('_', ' ')}: {counts[key]}")
    return lines + [f"note: {note}" for note in log.notes]


def model_info(net: nn.Module, log: InteractionLog, split: RecSplit, extra: dict | None = None) -> dict:
    """What model.json records of a recommender and the log it learned from."""
    return {
        "task": TASK, "spec": net.spec, "layers": net.layer_names, "feature_dim": net.feature_dim,
        "params": sum(p.numel() for p in net.parameters()),
        "data": {"source": log.source, "format": log.format, "notes": list(log.notes), "users": log.num_users,
                 "items": log.num_items, "interactions": len(log), "titles": bool(log.titles)},
        "split": split.describe(), **(extra or {}),
    }


def build(cfg, prepared: Prepared, fit: FitContext) -> Built:
    log, split = prepared.own.log, prepared.own.split
    name = cfg.model.name
    torch.manual_seed(cfg.train.seed)
    net = build_recommender(name, log.num_users, log.num_items, cfg.recommend)
    info = model_info(net, log, split)
    line = (f"model: {name} ({sum(p.numel() for p in net.parameters()):,} parameters; layers "
            f"{', '.join(net.layer_names)}) on {fit.device}")
    return Built(net=net, task=make_task(name, split, cfg.recommend), info=info, model_line=line, description=name)


def write_log(run_dir: Path, log: InteractionLog) -> None:
    """``interactions.npz`` and ``vocab.json``: the cleaned log the run's verbs read."""
    data, vocab = save_log(log)
    ckpt.atomic_write_bytes(run_dir / LOG_FILE, data)
    ckpt.atomic_write_json(run_dir / VOCAB_FILE, vocab)


def write_records(cfg, prepared: Prepared, built: Built, fit: FitContext) -> None:
    write_log(fit.run_dir, prepared.own.log)
    write_model_info(fit.run_dir, built.info)
    ckpt.atomic_write_json(fit.run_dir / "provenance.json", provenance(fit.device, cfg.train.seed,
                                                                         (cfg.train.precision, fit.precision_reason)))


# ---------------------------------------------------------------- score, baselines, comparison, report


def learned_row(net: nn.Module, name: str, split: RecSplit, cfg, result, device: torch.device) -> dict:
    """The trained model's row: its full-ranking metrics on the test split, and how it trained."""
    started = time.perf_counter()
    test = evaluate_scorer(model_scorer(net, device), split.test, split.num_items)
    return {
        "name": name, "kind": "learned", "metrics": metrics_only(test),
        "train_seconds": round(result.train_seconds, 3), "feature_dim": net.feature_dim,
        "params": sum(p.numel() for p in net.parameters()),
        "settings": {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "device": result.device,
                     "loss": "bpr" if name == "mf" else
                     (f"sampled softmax ({cfg.recommend.negatives} negatives)" if cfg.recommend.negatives
                      else "full softmax"),
                     "test_seconds": round(time.perf_counter() - started, 3)},
    }


def score(cfg, prepared: Prepared, built: Built, result, fit: FitContext) -> list[dict]:
    return [learned_row(built.net, cfg.model.name, prepared.own.split, cfg, result, fit.device)]


def baseline_rows(split: RecSplit, neighbours: tuple[int, ...], quiet: bool = True) -> list[dict]:
    """Most-popular and item-kNN (neighbourhood size tuned on validation), scored like the models."""
    from deepstrata.baselines.itemknn import ItemKNN
    from deepstrata.baselines.popularity import Popularity

    rows = []
    started = time.perf_counter()
    popular = Popularity(split.train_items, split.num_items)
    fit_seconds = time.perf_counter() - started
    rows.append({"name": "popularity", "kind": "baseline",
                 "metrics": metrics_only(evaluate_scorer(popular.scores, split.test, split.num_items)),
                 "train_seconds": round(fit_seconds, 3), "feature_dim": None, "params": None,
                 "settings": popular.settings()})
    started = time.perf_counter()
    knn = ItemKNN(split.train_users, split.train_items, split.num_users, split.num_items, max_k=max(neighbours))
    tuning = {}
    if len(split.val):
        for k in sorted(set(min(k, knn.k) for k in neighbours)):
            knn.set_k(k)
            tuning[k] = evaluate_scorer(knn.scores, split.val, split.num_items)[PRIMARY]
        best_k = max(tuning, key=lambda k: (tuning[k], -k))
    else:
        best_k = min(max(neighbours), knn.k)
    knn.set_k(best_k)
    fit_seconds = time.perf_counter() - started
    _say(quiet, f"item-kNN: neighbourhood tuned on validation {PRIMARY}: "
                + ", ".join(f"k={k}: {v:.4f}" for k, v in tuning.items()) + f" -> k={best_k}")
    rows.append({"name": "itemknn", "kind": "baseline",
                 "metrics": metrics_only(evaluate_scorer(knn.scores, split.test, split.num_items)),
                 "train_seconds": round(fit_seconds, 3), "feature_dim": split.num_users, "params": None,
                 "settings": {**knn.settings(), "val_" + PRIMARY + "_by_k": {str(k): round(v, 6)
                                                                            for k, v in tuning.items()}}})
    return rows


def baselines(cfg, prepared: Prepared, quiet: bool) -> list[dict]:
    _say(quiet, "baselines: most-popular, item-kNN (cosine co-occurrence)")
    return baseline_rows(prepared.own.split, cfg.recommend.knn_neighbours, quiet)


def comparison_record(cfg, log: InteractionLog, split: RecSplit, rows: list[dict], **extra) -> dict:
    """comparison.json of a recommendation run (``extra``: an update's record)."""
    return {"task": TASK, "data": log.source, "split": {"train": int(len(split.train_users)),
                                                        "val": int(len(split.val)), "test": int(len(split.test)),
                                                        "method": split.method, "seed": cfg.train.seed},
            "primary_metric": PRIMARY, "rows": rows, **extra}


def comparison(cfg, prepared: Prepared, rows: list[dict]) -> dict:
    return comparison_record(cfg, prepared.own.log, prepared.own.split, rows)


def data_section(split: RecSplit, log: InteractionLog) -> str:
    """The report's "Interactions and split" section."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in split.describe().items())
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in log.notes)
    text = (f"<p>Source: {html.escape(log.source)} ({html.escape(log.format)}). Full ranking over all "
            f"{log.num_items} items; each user's history is excluded from their ranking.</p>"
            f"<table>{rows}</table>")
    return text + (f"<ul>{notes}</ul>" if notes else "")


def report_sections(prepared: Prepared) -> list[tuple[str, str]]:
    return [("Interactions and split", data_section(prepared.own.split, prepared.own.log))]
