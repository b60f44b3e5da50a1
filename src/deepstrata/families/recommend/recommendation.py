"""Recommendation: an interaction log → learned user and item features, beside baselines.

``fit_recommender`` reads the log, splits it (leave-last-out or temporal), trains MF-BPR
or a SASRec-style sequence model with the one training loop, scores the test split with
full ranking, and sets the model beside the most-popular and tuned item-kNN baselines on
the same split. ``recommend``, ``similar`` and ``update`` serve and refresh a finished run.

Every model is fitted on the training events only; at validation and test time each
user's history is every event before the held-out one (for test that includes the
validation event), and that history is excluded from the ranking.

Files a recommendation run adds to the run directory: ``interactions.npz`` (the cleaned
log as index arrays) and ``vocab.json`` (user and item ids, titles, notes), which
``recommend``/``similar``/``update`` read.
"""

from __future__ import annotations

import dataclasses
import html
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepstrata.config import ModelConfig, RecommendConfig, RunConfig, TrainConfig, dump_config, load_config
from deepstrata.data.interactions import (InteractionLog, RecSplit, load_log, merge_logs, read_interactions,
                                          read_raw_log, save_log, split_log)
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine.devices import resolve_device
from deepstrata.engine.loop import batch_generator, train
from deepstrata.errors import ConfigError, DataError, RunError
from deepstrata.models.recsys import MatrixFactorization, SASRec
from deepstrata.models.registry import RECOMMEND_MODELS
from deepstrata.recsys_metrics import METRIC_NAMES, ScoreFn, evaluate_scorer
from deepstrata.rundir import guarded

TASK = "recommendation"
PRIMARY = "ndcg@10"
LOG_FILE, VOCAB_FILE = "interactions.npz", "vocab.json"
DEFAULT_MODEL = "sasrec"

# Training defaults per family when no config says otherwise (the image defaults do not fit:
# embeddings want no label smoothing, larger batches for BPR, and many short epochs).
TRAIN_DEFAULTS: dict[str, dict] = {
    "sasrec": {"epochs": 30, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.0, "schedule": "cosine",
               "warmup_fraction": 0.05, "label_smoothing": 0.0, "grad_clip": 1.0, "patience": 10},
    "mf": {"epochs": 40, "batch_size": 1024, "lr": 5e-3, "weight_decay": 0.0, "schedule": "cosine",
           "warmup_fraction": 0.05, "label_smoothing": 0.0, "grad_clip": 0.0, "patience": 8},
}


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


# ---------------------------------------------------------------- config


def resolve_recommend_config(config: RunConfig | str | Path | None, data, model: str | None,
                             overrides: dict) -> RunConfig:
    """Merge a config with keyword overrides; recommendation defaults where neither says.

    ``width`` (or ``dim``) is the embedding size and ``depth`` (or ``layers``) the number
    of Transformer blocks here. Image-only options are refused by name rather than ignored.
    """
    if isinstance(config, (str, Path)):
        config = load_config(config)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    name = model or (config.model.name if config is not None and config.task == TASK else DEFAULT_MODEL)
    if name not in RECOMMEND_MODELS:
        raise ConfigError(f"--model: {name!r} is not a recommendation model; expected one of "
                          f"{', '.join(RECOMMEND_MODELS)}")
    if config is None:
        config = RunConfig(model=ModelConfig(name=name), train=TrainConfig(**TRAIN_DEFAULTS[name]), task=TASK)
    rec_keys = {f.name for f in dataclasses.fields(RecommendConfig)}
    rec = {k: overrides.pop(k) for k in list(overrides) if k in rec_keys}
    if "width" in overrides:
        rec["dim"] = overrides.pop("width")
    for alias in ("depth", "layers"):
        if alias in overrides:
            rec["blocks"] = overrides.pop(alias)
    if "format" in overrides:
        rec["interactions_format"] = overrides.pop("format")
    image_only = sorted(k for k in overrides if k in ("image_size", "skip_bad", "augment", "channels_last",
                                                      "data_dir", "val_fraction", "test_fraction"))
    if image_only:
        raise ConfigError(f"options {', '.join(image_only)} do not apply to recommendation")
    baselines = overrides.pop("baselines", None)
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in overrides if k not in train_keys)
    if unknown:
        raise ConfigError(f"unknown option(s) for recommendation: {', '.join(unknown)}")
    source = str(data) if data is not None else (config.data.source if config.task == TASK else None)
    if source is None:
        raise ConfigError("recommendation needs --data (an interaction log: CSV, TSV, Parquet, u.data, ratings.dat)")
    return config.override(data={"source": source}, model={"name": name}, train=overrides, recommend=rec,
                           baselines=baselines, task=TASK)


def _read(source: str, rc: RecommendConfig, raw: bool = False):
    reader = read_raw_log if raw else read_interactions
    return reader(source, user_column=rc.user_column, item_column=rc.item_column, rating_column=rc.rating_column,
                  time_column=rc.time_column, min_rating=rc.min_rating, format=rc.interactions_format)


def _split(log: InteractionLog, rc: RecommendConfig) -> RecSplit:
    return split_log(log, rc.split, val_fraction=rc.temporal_val_fraction, test_fraction=rc.temporal_test_fraction)


# ---------------------------------------------------------------- models and scoring


def build_recommender(name: str, num_users: int, num_items: int, rc: RecommendConfig) -> nn.Module:
    if name == "mf":
        return MatrixFactorization(num_users, num_items, dim=rc.dim)
    return SASRec(num_items, dim=rc.dim, blocks=rc.blocks, heads=rc.heads, max_len=rc.max_seq_len,
                  dropout=rc.dropout)


def padded_sequences(histories: list[np.ndarray], max_len: int) -> torch.Tensor:
    """Left-padded [B, L] of the last ``max_len`` items + 1 (0 is padding); L >= 1."""
    length = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), length), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = history[-length:]
        if len(tail):
            out[row, length - len(tail):] = tail + 1
    return torch.from_numpy(out)


def model_scorer(model: nn.Module, device: torch.device) -> ScoreFn:
    """Full-catalogue scores of a learned model, in eval mode, for users and their histories."""
    max_len = getattr(model, "max_len", 1)

    def score(users: np.ndarray, histories: list[np.ndarray]) -> torch.Tensor:
        model.eval()
        user_t = torch.from_numpy(np.asarray(users, dtype=np.int64)).to(device)
        seq = padded_sequences(histories, max_len).to(device)
        return model.user_scores(user_t, seq).float().cpu()

    return score


class _RankingValidation:
    """Shared ``validate``: full-ranking metrics and cross-entropy on the validation split."""

    primary_metric = PRIMARY
    split: RecSplit

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if not len(self.split.val):
            raise DataError("no user has three or more interactions (or events in the validation period); "
                            "nothing to validate on")
        result = evaluate_scorer(model_scorer(model, device), self.split.val, self.split.num_items, with_loss=True)
        return {"val_loss": result["loss"], **{f"val_{name}": result[name] for name in METRIC_NAMES}}


class BPRTask(_RankingValidation):
    """(user, positive, sampled negative) triples for matrix factorisation."""

    def __init__(self, split: RecSplit, reg: float = 0.0) -> None:
        self.split = split
        self.reg = reg
        self.users = torch.from_numpy(split.train_users)
        self.items = torch.from_numpy(split.train_items)
        self.keys = np.unique(split.train_users * split.num_items + split.train_items)

    def num_batches(self, batch_size: int) -> int:
        return max(1, -(-len(self.users) // batch_size))

    def _negatives(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Uniform items the user has not interacted with in training (a few redraws for collisions)."""
        n = self.split.num_items
        negatives = torch.randint(n, (len(users),), generator=generator)
        for _ in range(10):
            keys = users.numpy() * n + negatives.numpy()
            pos = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
            clash = torch.from_numpy(self.keys[pos] == keys)
            if not clash.any():
                break
            negatives[clash] = torch.randint(n, (int(clash.sum()),), generator=generator)
        return negatives

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        order = torch.randperm(len(self.users), generator=batch_generator(seed, epoch))
        for index in range(start, self.num_batches(batch_size)):
            idx = order[index * batch_size:(index + 1) * batch_size]
            users = self.users[idx]
            yield users, self.items[idx], self._negatives(users, batch_generator(seed, epoch, index))

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, None]:
        users, positives, negatives = batch
        return model.bpr_loss(users, positives, negatives, self.reg), None


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-item windows of every training sequence: inputs [W, L] (item + 1, 0 pad), targets [W, L] (-100 pad).

    A sequence longer than ``max_len + 1`` is cut into several windows from its end, so
    every training event is a target exactly once.
    """
    inputs, targets = [], []
    for seq in sequences:
        end = len(seq)
        while end > 1:
            start = max(0, end - max_len - 1)
            window = seq[start:end]
            pad = max_len - (len(window) - 1)
            inputs.append(np.concatenate([np.zeros(pad, dtype=np.int64), window[:-1] + 1]))
            targets.append(np.concatenate([np.full(pad, -100, dtype=np.int64), window[1:]]))
            if start == 0:
                break
            end = start + 1
    if not inputs:
        raise DataError("no user has two or more training interactions; the sequence model has nothing to learn")
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


class SequenceTask(_RankingValidation):
    """Next-item prediction over each user's training sequence, every position a target.

    ``negatives == 0``: cross-entropy over the full catalogue. Otherwise cross-entropy of
    the true item against ``negatives`` uniform items shared by the batch (accidental
    hits masked), for catalogues too large for a full softmax at every position.
    """

    def __init__(self, split: RecSplit, max_len: int, negatives: int = 0) -> None:
        self.split = split
        self.negatives = negatives
        self.inputs, self.targets = training_windows(split.train_sequences(), max_len)

    def num_batches(self, batch_size: int) -> int:
        return max(1, -(-len(self.inputs) // batch_size))

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        order = torch.randperm(len(self.inputs), generator=batch_generator(seed, epoch))
        for index in range(start, self.num_batches(batch_size)):
            idx = order[index * batch_size:(index + 1) * batch_size]
            inputs, targets = self.inputs[idx], self.targets[idx]
            used = (inputs != 0).any(0)
            first = int(used.nonzero()[0]) if used.any() else inputs.shape[1] - 1
            inputs, targets = inputs[:, first:], targets[:, first:]
            if self.negatives:
                negs = torch.randint(self.split.num_items, (self.negatives,),
                                     generator=batch_generator(seed, epoch, index))
                yield inputs, negs, targets
            else:
                yield inputs, targets

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, None]:
        inputs, targets = batch[0], batch[-1]
        states = model.hidden(inputs)
        mask = targets >= 0
        states, targets = states[mask], targets[mask]
        weights = model.item_weights()
        if not self.negatives:
            return F.cross_entropy((states @ weights.T).float(), targets), None
        negs = batch[1]
        positive = (states * weights[targets]).sum(-1, keepdim=True)
        negative = (states @ weights[negs].T).masked_fill(negs[None, :] == targets[:, None], -torch.inf)
        logits = torch.cat([positive, negative], dim=1).float()
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device)), None


def make_task(name: str, split: RecSplit, rc: RecommendConfig):
    if name == "mf":
        return BPRTask(split, rc.bpr_reg)
    return SequenceTask(split, rc.max_seq_len, rc.negatives)


# ---------------------------------------------------------------- baselines


def _metrics_only(result: dict) -> dict:
    return {name: round(float(result[name]), 6) for name in METRIC_NAMES}


def baseline_rows(split: RecSplit, neighbours: tuple[int, ...], quiet: bool = True) -> list[dict]:
    """Most-popular and item-kNN (neighbourhood size tuned on validation), scored like the models."""
    from deepstrata.baselines.itemknn import ItemKNN
    from deepstrata.baselines.popularity import Popularity

    rows = []
    started = time.perf_counter()
    popular = Popularity(split.train_items, split.num_items)
    fit_seconds = time.perf_counter() - started
    rows.append({"name": "popularity", "kind": "baseline",
                 "metrics": _metrics_only(evaluate_scorer(popular.scores, split.test, split.num_items)),
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
                 "metrics": _metrics_only(evaluate_scorer(knn.scores, split.test, split.num_items)),
                 "train_seconds": round(fit_seconds, 3), "feature_dim": split.num_users, "params": None,
                 "settings": {**knn.settings(), "val_" + PRIMARY + "_by_k": {str(k): round(v, 6)
                                                                            for k, v in tuning.items()}}})
    return rows


# ---------------------------------------------------------------- fit


def _write_log(run_dir: Path, log: InteractionLog) -> None:
    data, vocab = save_log(log)
    ckpt.atomic_write_bytes(run_dir / LOG_FILE, data)
    ckpt.atomic_write_json(run_dir / VOCAB_FILE, vocab)


def _data_section(split: RecSplit, log: InteractionLog) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in split.describe().items())
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in log.notes)
    text = (f"<p>Source: {html.escape(log.source)} ({html.escape(log.format)}). Full ranking over all "
            f"{log.num_items} items; each user's history is excluded from their ranking.</p>"
            f"<table>{rows}</table>")
    return text + (f"<ul>{notes}</ul>" if notes else "")


def _train_and_score(net: nn.Module, name: str, split: RecSplit, cfg: RunConfig, run_dir: Path, *,
                     resume: bool, quiet: bool, after_training=None) -> tuple[dict, object]:
    task = make_task(name, split, cfg.recommend)
    result = train(net, task, cfg.train, run_dir, resume=resume, quiet=quiet, description=name)
    if after_training is not None:
        after_training()
    device = resolve_device(cfg.train.device)
    started = time.perf_counter()
    test = evaluate_scorer(model_scorer(net, device), split.test, split.num_items)
    row = {
        "name": name, "kind": "learned", "metrics": _metrics_only(test),
        "train_seconds": round(result.train_seconds, 3), "feature_dim": net.feature_dim,
        "params": sum(p.numel() for p in net.parameters()),
        "settings": {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "device": result.device,
                     "loss": "bpr" if name == "mf" else
                     (f"sampled softmax ({cfg.recommend.negatives} negatives)" if cfg.recommend.negatives
                      else "full softmax"),
                     "test_seconds": round(time.perf_counter() - started, 3)},
    }
    return row, result


def _model_info(net: nn.Module, log: InteractionLog, split: RecSplit, extra: dict | None = None) -> dict:
    return {
        "task": TASK, "spec": net.spec, "layers": net.layer_names, "feature_dim": net.feature_dim,
        "params": sum(p.numel() for p in net.parameters()),
        "data": {"source": log.source, "format": log.format, "notes": list(log.notes), "users": log.num_users,
                 "items": log.num_items, "interactions": len(log), "titles": bool(log.titles)},
        "split": split.describe(), **(extra or {}),
    }


def _comparison(cfg: RunConfig, log: InteractionLog, split: RecSplit, rows: list[dict], **extra) -> dict:
    return {"task": TASK, "data": log.source, "split": {"train": int(len(split.train_users)),
                                                        "val": int(len(split.val)), "test": int(len(split.test)),
                                                        "method": split.method, "seed": cfg.train.seed},
            "primary_metric": PRIMARY, "rows": rows, **extra}


@guarded  # a fit that raises leaves its run directory marked and unlocked (see deepstrata.rundir)
def fit_recommender(data=None, model: str | None = None, *, config: RunConfig | str | Path | None = None,
                    out: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                    quiet: bool = False, **overrides):
    """Train a recommender on a raw interaction log and compare it with baselines; returns the ``Run``."""
    from deepstrata.report import format_comparison_table, write_report
    from deepstrata.run import Run, default_run_dir, prepare_run_dir, provenance, write_model_info
    from deepstrata.rundir import check_resumable, finish_run, kept_baseline_rows, resume_point

    if resume and out is None:
        raise RunError("--resume needs --out RUN (the run directory to continue)")
    if resume and config is None and (Path(out) / "config.yaml").is_file():
        config = load_config(Path(out) / "config.yaml")
    cfg = resolve_recommend_config(config, data, model, overrides)
    rc, name = cfg.recommend, cfg.model.name
    started = time.perf_counter()
    log = _read(cfg.data.source, rc)
    split = _split(log, rc)
    run_dir = prepare_run_dir(Path(out) if out is not None else default_run_dir(cfg.data.source, name),
                              resume=resume, overwrite=overwrite, data=(cfg.data.source,), quiet=quiet)
    resuming = resume_point(run_dir, resume, quiet)
    device = resolve_device(cfg.train.device)

    def write_records(info: dict) -> None:
        ckpt.atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        _write_log(run_dir, log)
        write_model_info(run_dir, info)
        ckpt.atomic_write_json(run_dir / "provenance.json", provenance(device, cfg.train.seed))

    counts = split.describe()
    _say(quiet, f"data: {log.source} — {log.num_users} users, {log.num_items} items, {len(log)} interactions; "
                f"{split.method} split: train {counts['train']} events, val {counts['val']} users, "
                f"test {counts['test']} users; read in {time.perf_counter() - started:.1f}s")
    for key in ("users_single_interaction", "users_not_in_test", "cold_users_not_in_test"):
        if counts.get(key):
            _say(quiet, f"note: {key.replace('_', ' ')}: {counts[key]}")
    for note in log.notes:
        _say(quiet, f"note: {note}")

    torch.manual_seed(cfg.train.seed)
    net = build_recommender(name, log.num_users, log.num_items, rc)
    info = _model_info(net, log, split)
    if resuming:  # a resume rewrites its records only once its training has run
        check_resumable(run_dir, info)
    else:
        write_records(info)
    _say(quiet, f"model: {name} ({sum(p.numel() for p in net.parameters()):,} parameters; layers "
                f"{', '.join(net.layer_names)}) on {device}")
    row, _ = _train_and_score(net, name, split, cfg, run_dir, resume=resuming, quiet=quiet,
                              after_training=(lambda: write_records(info)) if resuming else None)
    rows = [row]
    if not cfg.baselines and resume:
        same = _comparison(cfg, log, split, [])
        rows += kept_baseline_rows(run_dir, same["data"], same["split"], quiet)
    if cfg.baselines:
        _say(quiet, "baselines: most-popular, item-kNN (cosine co-occurrence)")
        rows += baseline_rows(split, rc.knn_neighbours, quiet)
    comparison = _comparison(cfg, log, split, rows)
    ckpt.atomic_write_json(run_dir / "comparison.json", comparison)
    report = write_report(run_dir, extra_sections=[("Interactions and split", _data_section(split, log))])
    if not quiet:
        print(format_comparison_table(comparison))
        print(f"run directory: {run_dir}")
        print(f"report: {report}")
    finish_run(run_dir)
    return Run(run_dir, device=str(device))


# ---------------------------------------------------------------- serving: recommend, similar


@dataclasses.dataclass
class _Served:
    """What serving needs from a run, read once per ``Run``."""

    log: InteractionLog
    user_index: dict[str, int]
    item_index: dict[str, int]
    histories: list[np.ndarray]
    popularity: torch.Tensor


def _served(run) -> _Served:
    state = getattr(run, "_recommend_state", None)
    if state is None:
        if run.task != TASK:
            run.family.refuse(run, "recommend, similar and update")
        log = load_log(run.path / LOG_FILE, run.path / VOCAB_FILE)
        spec = run.info["spec"]
        for key, count in (("num_items", log.num_items), ("num_users", log.num_users)):
            if isinstance(spec.get(key), int) and spec[key] != count:
                from deepstrata.runfiles import damaged

                raise damaged(run.path / VOCAB_FILE, f"{count} {key[4:]}, but the run's model was built for "
                                                     f"{spec[key]}")
        order = np.lexsort((np.arange(len(log)), log.times, log.users))
        bounds = np.searchsorted(log.users[order], np.arange(log.num_users + 1))
        items = log.items[order]
        state = _Served(log, {u: i for i, u in enumerate(log.user_ids)}, {t: i for i, t in enumerate(log.item_ids)},
                        [items[bounds[u]:bounds[u + 1]] for u in range(log.num_users)],
                        torch.from_numpy(np.bincount(log.items, minlength=log.num_items).astype(np.float32)))
        run._recommend_state = state
    return state


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"-k: got {k!r}, expected a positive integer")
    return k


def _entries(state: _Served, scores: torch.Tensor, k: int) -> list[dict]:
    valid = int((scores > -torch.inf).sum())
    values, index = torch.topk(scores, min(k, valid))
    titles = state.log.titles
    return [{"item": state.log.item_ids[i], "score": round(float(v), 4),
             "title": titles.get(state.log.item_ids[i])} for v, i in zip(values.tolist(), index.tolist())]


def recommend_users(run, users: list, k: int = 10) -> list[dict]:
    """Top-``k`` unseen items for each user, scored in batches; unknown users get popular items.

    Each answer is ``{"user", "items": [{"item", "score", "title"}], "fallback"}``; the
    history a known user's scores come from is all of their events in the run's log.
    """
    k = _check_k(k)
    state = _served(run)
    model = run.model
    score = model_scorer(model, run.device)
    keys = [str(user) for user in users]
    known = [state.user_index.get(key) for key in keys]
    results: list[dict | None] = [None] * len(keys)
    rows = [r for r, u in enumerate(known) if u is None]
    for r in rows:
        results[r] = {"user": keys[r], "items": _entries(state, state.popularity.clone(), k), "fallback": True}
    todo = [r for r, u in enumerate(known) if u is not None]
    step = 256
    for start in range(0, len(todo), step):
        chunk = todo[start:start + step]
        ids = np.array([known[r] for r in chunk], dtype=np.int64)
        histories = [state.histories[u] for u in ids]
        with torch.inference_mode():
            scores = score(ids, histories)
        for row, r in enumerate(chunk):
            row_scores = scores[row].clone()
            row_scores[torch.from_numpy(histories[row])] = -torch.inf
            results[r] = {"user": keys[r], "items": _entries(state, row_scores, k), "fallback": False}
    return results


def recommend(run, user, k: int = 10) -> dict:
    """Top-``k`` items for one user (see ``recommend_users``)."""
    return recommend_users(run, [user], k)[0]


def similar(run, item, k: int = 10) -> dict:
    """The ``k`` nearest items to ``item`` by cosine in the learned item-embedding space."""
    k = _check_k(k)
    state = _served(run)
    key = str(item)
    if key not in state.item_index:
        examples = ", ".join(state.log.item_ids[:3])
        raise DataError(f"{run.path}: unknown item {key!r} "
                        f"(the run knows {state.log.num_items} items, e.g. {examples})")
    with torch.inference_mode():
        vectors = F.normalize(run.model.item_features().float().cpu(), dim=1)
    index = state.item_index[key]
    scores = vectors @ vectors[index]
    scores[index] = -torch.inf
    return {"item": key, "title": state.log.titles.get(key), "items": _entries(state, scores, k)}


# ---------------------------------------------------------------- update


def _load_trained(run) -> nn.Module:
    return run.load_model()


@guarded  # an update that raises leaves both directories unlocked, the run as it was (see deepstrata.rundir)
def update_run(run, data, *, out: str | Path | None = None, epochs: int | None = None, quiet: bool = True):
    """Continue training a run on new interactions, new users and items included.

    The new events join the run's log (old ids keep their indices and embedding rows;
    new ids get fresh rows), the joined log is split as the run was, and the trained
    model continues from its weights for ``recommend.update_epochs`` epochs. The test
    metrics of the model before and after, and the seconds taken, are recorded in
    ``comparison.json`` under ``update`` and appended to ``model.json``'s ``updates``.
    Without ``out`` the run directory is replaced only once the update has finished (locked
    meanwhile; files in it that deepstrata did not write move to the updated run).
    """
    from deepstrata.report import write_report
    from deepstrata.run import Run, prepare_run_dir, provenance, write_model_info
    from deepstrata.rundir import carry_over, finish_run, lock_run, release, remove_run

    state = _served(run)
    cfg = run.config
    if epochs is not None:
        _check_k(epochs)
    rc = cfg.recommend
    name = run.info["spec"]["family"]
    started = time.perf_counter()
    raw = _read(str(data), rc, raw=True)
    log, stats = merge_logs(state.log, raw)
    split = _split(log, rc)
    net = _load_trained(run)
    # New users' and items' rows start random: drawn from the run's seed (without touching the
    # caller's random state), so identical updates report identical "before" metrics.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        net.grow(log.num_users, log.num_items)
    device = resolve_device(cfg.train.device)
    net.to(device)
    before = _metrics_only(evaluate_scorer(model_scorer(net, device), split.test, split.num_items))
    target = Path(out) if out is not None else run.path.with_name(f".{run.path.name}.update")
    if out is None:
        lock_run(run.path, quiet)  # no fit or other update may change the run meanwhile
        remove_run(target)  # the staging copy of an update that was killed (refused if it is not a run)
    target = prepare_run_dir(target, resume=False, overwrite=False, data=(str(data), str(run.path)), quiet=quiet)
    train_cfg = dataclasses.replace(cfg.train, epochs=epochs or rc.update_epochs)
    cfg_used = dataclasses.replace(cfg, train=train_cfg)
    ckpt.atomic_write_text(target / "config.yaml", dump_config(cfg))
    _write_log(target, log)
    ckpt.atomic_write_json(target / "provenance.json", provenance(device, cfg.train.seed))
    _say(quiet, f"update: +{stats['new_events']} events, {stats['new_users']} new users, {stats['new_items']} new "
                f"items; continuing {name} for {train_cfg.epochs} epochs")
    row, result = _train_and_score(net, name, split, cfg_used, target, resume=False, quiet=quiet)
    seconds = time.perf_counter() - started
    record = {"data": str(data), **stats, "epochs": train_cfg.epochs, "best_epoch": result.best_epoch,
              "seconds": round(seconds, 3), "train_seconds": round(result.train_seconds, 3),
              "before": before, "after": row["metrics"]}
    row["settings"]["update"] = {"from": str(run.path), "epochs": train_cfg.epochs}
    rows = [row]
    if cfg.baselines:
        rows += baseline_rows(split, rc.knn_neighbours)
    ckpt.atomic_write_json(target / "comparison.json", _comparison(cfg, log, split, rows, update=record))
    updates = list(run.info.get("updates", [])) + [record]
    write_model_info(target, _model_info(net, log, split, {"updates": updates}))
    write_report(target, extra_sections=[("Interactions and split", _data_section(split, log)),
                                         ("Update", _update_section(record))])
    finish_run(target)
    final = target
    if out is None:
        retired = run.path.with_name(f".{run.path.name}.old")
        remove_run(retired)
        carry_over(run.path, target)
        run.path.rename(retired)
        target.rename(run.path)
        remove_run(retired)
        release(run.path)
        final = run.path
    return Run(final, device=str(run.device)), record


def _update_section(record: dict) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in METRIC_NAMES)
    lines = "".join(f"<tr><td>{when}</td>" + "".join(f"<td>{record[when][m]:.4f}</td>" for m in METRIC_NAMES)
                    + "</tr>" for when in ("before", "after"))
    return (f"<p>Added {record['new_events']} events from {html.escape(record['data'])} "
            f"({record['new_users']} new users, {record['new_items']} new items); {record['epochs']} epochs, "
            f"{record['seconds']:.1f}s.</p><table><tr><th></th>{head}</tr>{lines}</table>")


def evaluate_recommender(run, data=None) -> dict:
    """Test metrics of a run's model on its own log, split as in training (full ranking).

    Another log cannot be scored against this run's ids without joining it first, which
    is what ``update`` does; asking for one is an error that says so.
    """
    state = _served(run)
    if data is not None and str(data) not in (run.config.data.source, state.log.source):
        raise RunError(f"{data}: a recommendation run is evaluated on its own log ({run.config.data.source}); "
                       f"add new interactions with `deepstrata update {run.path} --data {data}`")
    split = _split(state.log, run.config.recommend)
    result = evaluate_scorer(model_scorer(run.model, run.device), split.test, split.num_items)
    return {"data": state.log.source, "split": f"test split of the run ({split.method})",
            "examples": int(result["users"]), "metrics": _metrics_only(result)}
