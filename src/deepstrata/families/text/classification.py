"""Text classification: raw strings → tokens → an encoder that learns a vector per token → a class.

``fit_text`` is the whole job for text, as ``api.fit`` is for images: read and split the
data, learn the tokenizer on the training split, build the model, hand a ``Task`` to the
one training loop, score the test split, fit the TF-IDF baseline on the same split, and
write the run directory. ``predict_texts``, ``embed_texts`` and ``evaluate_text`` are what
``Run.predict`` / ``Run.embed`` / ``Run.evaluate`` do for a text run.

Batches are bucketed by length: the shuffled training set is cut into pools of 50
batches, each pool is sorted by token count and cut into batches, and the batch order is
shuffled again. A batch is padded only to its own longest text, so on IMDB's long-tailed
lengths most of the compute goes to real tokens. When the pretrained encoder is frozen,
its pooled features are computed once and the loop trains the head on them.

Under torchrun (``deepstrata fit --devices N``) text runs are data-parallel as image runs
are: each process takes a contiguous share of every global batch, validation is split
across processes and its sums all-reduced, and rank 0 alone writes the run. The last
batch of an epoch, whose size the world size need not divide, is split unevenly and each
share's gradient weighted by its size, so N processes take exactly the steps of one.
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from deepstrata.config import (RunConfig, TextConfig, TrainConfig, dump_config, load_config, per_world,
                               resolved_train)
from deepstrata.data.text import TextDataset, TextSplits, load_text, read_texts, split_text
from deepstrata.data.tokenizer import TextTokenizer, pad_batch
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
from deepstrata.engine.devices import autocast, resolve_device
from deepstrata.engine.loop import batch_generator, train
from deepstrata.errors import ConfigError, DataError, RunError
from deepstrata.models.registry import TEXT_MODELS
from deepstrata.rundir import guarded

TASK = "text-classification"
TOKENIZER_FILE = "tokenizer.json"
POOL_BATCHES = 50
"""Batches per length-sorted pool: large enough to group similar lengths, small enough to stay random."""

# Train settings that suit each text model better than the image defaults; used only when
# no config file is given, and any flag or keyword still overrides them. Epochs left out
# are sized from the data (config.resolved_train: about 1,500 steps, 4 to 40 epochs); the
# from-scratch Transformer overfits small sets within a few epochs, so it stops after 3
# epochs without a better validation accuracy (the best weights are kept).
TRAIN_DEFAULTS: dict[str, dict] = {
    "transformer": {"batch_size": 64, "lr": 1e-3, "weight_decay": 0.05, "warmup_fraction": 0.1,
                    "label_smoothing": 0.0, "grad_clip": 1.0, "eval_batch_size": 256, "patience": 3},
    "minilm": {"epochs": 3, "batch_size": 32, "lr": 5e-5, "weight_decay": 0.01, "warmup_fraction": 0.1,
               "label_smoothing": 0.0, "grad_clip": 1.0, "eval_batch_size": 128},
    "minilm-frozen": {"epochs": 30, "batch_size": 128, "lr": 3e-3, "weight_decay": 1e-4, "warmup_fraction": 0.1,
                      "label_smoothing": 0.0, "grad_clip": 1.0, "eval_batch_size": 128},
}
_DATA_KEYS = {"val_fraction", "test_fraction"}
_IMAGE_ONLY = {"image_size": "--image-size", "skip_bad": "--skip-bad", "data_dir": "--data-dir"}


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


# --- batching and inference ---------------------------------------------------------------

def bucketed_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator,
                     pool: int = POOL_BATCHES) -> list[np.ndarray]:
    """Index batches of similar lengths, in random order: ``ceil(N / batch_size)`` of them."""
    order = torch.randperm(len(lengths), generator=generator).numpy()
    chunk = batch_size * pool
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        idx = order[start:start + chunk]
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches.extend(idx[i:i + batch_size] for i in range(0, len(idx), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Deterministic batches for inference, longest first, so padding is minimal."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def map_batches(model: nn.Module, ids: list[np.ndarray], device: torch.device, fn: Callable, batch_size: int = 128,
                precision: str = "32") -> list:
    """Apply ``fn(model, ids_tensor)`` to length-sorted batches; results come back in input order."""
    model.eval()
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    out: list = [None] * len(ids)
    for batch in sorted_batches(lengths, batch_size):
        x = torch.from_numpy(pad_batch([ids[i] for i in batch], getattr(model, "pad_id", 0))).to(device)
        with autocast(device, precision):
            result = fn(model, x)
        for row, index in enumerate(batch.tolist()):
            out[index] = result[row] if not isinstance(result, tuple) else tuple(r[row] for r in result)
    return out


def predict_logits(model: nn.Module, ids: list[np.ndarray], device: torch.device, batch_size: int = 128,
                   precision: str = "32") -> torch.Tensor:
    """Logits ``[N, C]`` (float32, on the CPU) for token id sequences."""
    if not ids:
        return torch.empty(0)
    rows = map_batches(model, ids, device, lambda m, x: m(x).float().cpu(), batch_size, precision)
    return torch.stack(rows)


def pooled_features(model: nn.Module, ids: list[np.ndarray], device: torch.device, batch_size: int = 128,
                    precision: str = "32") -> torch.Tensor:
    """The vector the head classifies, one per text: ``[N, feature_dim]`` float32."""
    rows = map_batches(model, ids, device, lambda m, x: m.forward_features(x).float().cpu(), batch_size, precision)
    return torch.stack(rows) if rows else torch.empty(0, model.feature_dim)


def token_features(model: nn.Module, ids: list[np.ndarray], device: torch.device, batch_size: int = 128,
                   precision: str = "32") -> list[torch.Tensor]:
    """The vector generated for every token of every text: a ``[len_i, D]`` tensor per text."""
    def run(m, x):
        states, mask = m.forward_tokens(x)
        return states.float().cpu(), mask.sum(1).cpu()

    return [states[:int(count)] for states, count in map_batches(model, ids, device, run, batch_size, precision)]


# --- tasks for the loop --------------------------------------------------------------------

def batch_size_error(batch_size: int, world_size: int) -> ConfigError:
    return ConfigError(f"--batch-size {batch_size} is not divisible by {world_size} processes (--devices / torchrun "
                       f"--nproc-per-node); the global batch is split evenly, use a multiple of {world_size}")


def rank_share(size: int, batch_size: int) -> tuple[slice, float]:
    """This process's contiguous part of a global batch of ``size`` examples, and its gradient weight.

    A full batch (``size == batch_size``, which the world size must divide) is split
    evenly with weight 1. The epoch's last, shorter batch may not split evenly: each
    process then weights its mean loss by ``world_size * share / size`` so that DDP's
    average of the processes' gradients is the gradient of the whole batch's mean loss —
    the step one process takes. A share can be empty (fewer examples than processes).
    """
    env = distributed.current()
    world, rank = env.world_size, env.rank
    if world == 1:
        return slice(0, size), 1.0
    if batch_size % world:
        raise batch_size_error(batch_size, world)
    if size % world == 0:
        return distributed.local_share(size), 1.0
    lo, hi = size * rank // world, size * (rank + 1) // world
    return slice(lo, hi), world * (hi - lo) / size


def weighted_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                  label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy whose value is the share's mean (what the loop logs) and whose
    gradient is ``weight`` times it (see ``rank_share``); an empty share adds nothing."""
    if len(y) == 0:
        return logits.float().sum() * 0.0, torch.zeros((), dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    loss = loss + (weight - 1.0) * (loss - loss.detach())  # value unchanged; gradient scaled by weight
    return loss, (logits.detach().argmax(1) == y).sum()


class TextClassificationTask:
    """Token ids of each training text in memory; batches bucketed by length and padded per batch."""

    primary_metric = "accuracy"

    def __init__(self, train_ids: list[np.ndarray], train_y: np.ndarray, val_ids: list[np.ndarray], val_y: np.ndarray,
                 *, pad_id: int = 0, label_smoothing: float = 0.0, eval_batch_size: int = 128,
                 precision: str = "32") -> None:
        self.train_ids, self.val_ids = train_ids, val_ids
        self.train_y = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
        self.val_y = torch.from_numpy(np.asarray(val_y, dtype=np.int64))
        self.lengths = np.array([len(i) for i in train_ids], dtype=np.int64)
        self.pad_id = pad_id
        self.label_smoothing = label_smoothing
        self.eval_batch_size = eval_batch_size
        self.precision = precision

    @property
    def num_examples(self) -> int:
        return len(self.train_ids)

    def num_batches(self, batch_size: int) -> int:
        return max(1, math.ceil(len(self.train_ids) / batch_size))

    def padded_slots(self, batch_size: int, seed: int = 0) -> int:
        """Token slots one epoch computes (real tokens plus padding), to report bucketing's waste."""
        batches = bucketed_batches(self.lengths, batch_size, batch_generator(seed, 0))
        return int(sum(len(b) * self.lengths[b].max() for b in batches))

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        """Global batches bucketed by length, each process taking its share (``rank_share``).

        Batches are ``(ids, weight, targets)``; every process draws the same global batches
        (the order depends only on seed and epoch), so N processes see one process's examples.
        """
        batches = bucketed_batches(self.lengths, batch_size, batch_generator(seed, epoch))
        for index in range(start, len(batches)):
            idx = batches[index]
            part, weight = rank_share(len(idx), batch_size)
            local = idx[part]
            # An empty share still runs the model (on a stand-in text, with zero weight) so that
            # every process takes part in DDP's gradient all-reduce.
            texts = [self.train_ids[i] for i in (local if len(local) else idx[:1])]
            ids = torch.from_numpy(pad_batch(texts, self.pad_id))
            yield ids, torch.tensor(weight, dtype=torch.float32), self.train_y[torch.from_numpy(local)]

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        ids, weight, y = batch
        return weighted_loss(model(ids), y, weight, self.label_smoothing)

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Loss and accuracy on the validation split; each process scores every N-th text and
        the sums are added across processes, so no text is counted twice."""
        env = distributed.current()
        ids = self.val_ids[env.rank::env.world_size]
        y = self.val_y[env.rank::env.world_size]
        logits = predict_logits(model, ids, device, self.eval_batch_size, self.precision)
        return distributed.val_metrics(logits, y, device)


class FrozenFeatureTask:
    """Trains only the head on pooled features of a frozen encoder, computed once beforehand.

    The head is called outside DDP (``loss`` unwraps the model), so under several processes
    every process trains it on the whole global batch: a linear layer on cached features
    costs next to nothing, and the processes stay identical to one process without any
    gradient exchange. (The loop's all-reduced training sums then count every example once
    per process, in numerator and denominator alike, so the logged means are unchanged.)
    The feature extraction before it is what is split across processes (``shared_features``).
    """

    primary_metric = "accuracy"

    def __init__(self, train_features: torch.Tensor, train_y: np.ndarray, val_features: torch.Tensor,
                 val_y: np.ndarray, *, label_smoothing: float = 0.0) -> None:
        self.train_features, self.val_features = train_features, val_features
        self.train_y = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
        self.val_y = torch.from_numpy(np.asarray(val_y, dtype=np.int64))
        self.label_smoothing = label_smoothing

    @property
    def num_examples(self) -> int:
        return len(self.train_features)

    def num_batches(self, batch_size: int) -> int:
        return max(1, math.ceil(len(self.train_features) / batch_size))

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[tuple]:
        order = torch.randperm(len(self.train_features), generator=batch_generator(seed, epoch))
        for index in range(start, self.num_batches(batch_size)):
            idx = order[index * batch_size:(index + 1) * batch_size]
            yield self.train_features[idx], self.train_y[idx]

    def loss(self, model: nn.Module, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        features, y = batch
        logits = distributed.unwrap(model).layers["head"].classify(features)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return loss, (logits.detach().argmax(1) == y).sum()

    @torch.inference_mode()
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        model.eval()
        logits = model.layers["head"].classify(self.val_features.to(device)).float().cpu()
        return {"val_loss": F.cross_entropy(logits, self.val_y).item(),
                "val_accuracy": (logits.argmax(1) == self.val_y).float().mean().item()}


def shared_features(model: nn.Module, ids: list[np.ndarray], device: torch.device, batch_size: int = 128,
                    precision: str = "32") -> torch.Tensor:
    """``pooled_features`` with the texts split across processes (every N-th) and gathered on all."""
    env = distributed.current()
    if not env.active:
        return pooled_features(model, ids, device, batch_size, precision)
    mine = torch.arange(env.rank, len(ids), env.world_size)
    part = pooled_features(model, [ids[i] for i in mine.tolist()], device, batch_size, precision)
    full = torch.zeros(len(ids), model.feature_dim, dtype=torch.float32, device=device)
    full[mine.to(device)] = part.to(device)
    return distributed.all_reduce_sum(full).cpu()  # each row is non-zero on one process only: exact


# --- configuration -------------------------------------------------------------------------

def _defaults_key(model: str, freeze: bool) -> str:
    return "minilm-frozen" if model == "minilm" and freeze else model


def resolve_text_config(data, model: str | None, config: RunConfig | str | Path | None,
                        overrides: dict) -> RunConfig:
    """Merge defaults, a config (object or YAML), a data object's columns and keyword overrides."""
    overrides = dict(overrides)
    for key, flag in _IMAGE_ONLY.items():
        if overrides.pop(key, None) not in (None, False):
            raise ConfigError(f"{flag} applies to image data, not to text")
    text_keys = {f.name for f in fields(TextConfig)}
    text_over = {k: overrides.pop(k) for k in list(overrides) if k in text_keys}
    if "text_format" in overrides:
        text_over["format"] = overrides.pop("text_format")
    if "format" in overrides:
        text_over.setdefault("format", overrides.pop("format"))
    if "depth" in overrides:
        text_over.setdefault("layers", overrides.pop("depth"))
    if "width" in overrides:
        text_over.setdefault("dim", overrides.pop("width"))
    data_over = {k: overrides.pop(k) for k in list(overrides) if k in _DATA_KEYS}
    baselines = overrides.pop("baselines", None)
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - train_keys)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for a text run")

    explicit: set[str] | None = None  # train keys a YAML file sets; the text defaults fill the others
    if isinstance(config, (str, Path)):
        raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) if Path(config).is_file() else None
        explicit = set((raw.get("train") or {}) if isinstance(raw, dict) else {})
        config = load_config(config)
    if config is None:
        explicit = set()
        config = RunConfig(task=TASK)
    name = model or (config.model.name if config.model.name in TEXT_MODELS else "transformer")
    if name not in TEXT_MODELS:
        raise ConfigError(f"--model {name}: not a text model; expected one of {', '.join(TEXT_MODELS)}")
    if explicit is not None:
        freeze = bool(text_over.get("freeze", config.text.freeze))
        defaults = TRAIN_DEFAULTS[_defaults_key(name, freeze)]
        config = config.override(train={k: v for k, v in defaults.items() if k not in explicit})
    source = None
    if isinstance(data, TextDataset):
        source = data.source or "<in-memory texts>"
        for key, value in (("text_column", data.text_column), ("label_column", data.label_column),
                           ("format", data.format or None), ("encoding", data.encoding)):
            if value is not None:
                text_over.setdefault(key, value)
    elif data is not None:
        source = str(data)
    cfg = config.override(data={"source": source, **data_over}, model={"name": name}, train=overrides,
                          text=text_over, baselines=baselines, task=TASK)
    if cfg.data.source == "digits" and source is None:
        raise ConfigError("a text run needs --data: a CSV/TSV/JSONL/Parquet table, a fastText .txt, "
                          "a folder of class sub-folders or an aclImdb archive")
    if name == "minilm" and cfg.text.max_length > 512:
        raise ConfigError(f"text.max_length: got {cfg.text.max_length}, MiniLM takes at most 512 tokens")
    return cfg


# --- fit -----------------------------------------------------------------------------------

def _load_data(data, cfg: RunConfig) -> TextDataset:
    if isinstance(data, TextDataset):
        return data
    return load_text(cfg.data.source, format=cfg.text.format, text_column=cfg.text.text_column,
                     label_column=cfg.text.label_column, encoding=cfg.text.encoding)


def _make_tokenizer(cfg: RunConfig, texts: list[str], run_dir: Path, resume: bool) -> tuple[TextTokenizer, float]:
    """The run's tokenizer, saved to the run directory by rank 0.

    Under several processes rank 0 alone learns (or, resuming, reads) the BPE tokenizer and
    sends it to the others, so every process encodes with the very same vocabulary.
    """
    start = time.perf_counter()
    saved = run_dir / TOKENIZER_FILE
    main = distributed.current().is_main
    if cfg.model.name == "minilm":
        from deepstrata.models.minilm import pretrained_dir

        tokenizer = TextTokenizer.from_file(pretrained_dir(cfg.text.pretrained_path) / TOKENIZER_FILE,
                                            cfg.text.max_length, "wordpiece")
    else:
        tokenizer = None
        if main:
            if resume and saved.is_file():
                tokenizer = TextTokenizer.from_file(saved, cfg.text.max_length, "bpe")
            else:
                tokenizer = TextTokenizer.train_bpe(texts, cfg.text.vocab_size, cfg.text.max_length)
        shared = distributed.broadcast_object(tokenizer.tokenizer.to_str() if main else None)
        if not main:
            import tokenizers

            tokenizer = TextTokenizer(tokenizers.Tokenizer.from_str(shared), cfg.text.max_length, "bpe")
    if main and not (resume and saved.is_file()):  # a resume keeps the run's file as it is
        tokenizer.save(saved)
    return tokenizer, time.perf_counter() - start


def _build_model(cfg: RunConfig, vocab_size: int, num_classes: int, pad_id: int) -> nn.Module:
    torch.manual_seed(cfg.train.seed)
    if cfg.model.name == "minilm":
        from deepstrata.models.minilm import MiniLMClassifier

        return MiniLMClassifier.pretrained(num_classes, path=cfg.text.pretrained_path, freeze=cfg.text.freeze,
                                           dropout=cfg.text.dropout)
    from deepstrata.models.transformer import TransformerClassifier

    t = cfg.text
    return TransformerClassifier(vocab_size, num_classes, dim=t.dim, layers=t.layers, heads=t.heads, ff_mult=t.ff_mult,
                                 max_length=t.max_length, positions=t.positions, pooling=t.pooling,
                                 dropout=t.dropout, pad_id=pad_id)


@guarded  # a fit that raises leaves its run directory marked and unlocked (see deepstrata.rundir)
def fit_text(data, model: str | None = None, *, config: RunConfig | str | Path | None = None,
             out: str | Path | None = None, resume: bool = False, overwrite: bool = False, quiet: bool = False,
             **overrides):
    """Train a text classifier from raw strings beside the TF-IDF baseline; returns the finished ``Run``.

    ``data`` is a path (table, fastText file, folder or archive) or a ``TextDataset``
    (``deepstrata.data.text.text_table``). Keywords override config fields by name
    (``epochs=2``, ``text_column="review"``, ``freeze=True``, ``baselines=False`` …).

    Under torchrun (or ``deepstrata fit --devices N``) every process calls this; rank 0
    alone writes the run directory, scores the test split, runs the baseline and returns
    the ``Run`` (the other processes return ``None``).
    """
    from deepstrata.baselines.text_features import run_text_baseline
    from deepstrata.metrics import classification_metrics, confusion_matrix
    from deepstrata.report import format_comparison_table, write_report
    from deepstrata.run import Run, default_run_dir, prepare_run_dir, write_run_records
    from deepstrata.rundir import check_resumable, finish_run, kept_baseline_rows, resume_point

    if resume and out is None:
        raise RunError("--resume needs --out RUN (the run directory to continue)")
    if resume and config is None and (Path(out) / "config.yaml").is_file():
        config = load_config(Path(out) / "config.yaml")
    cfg = resolve_text_config(data, model, config, overrides)
    if cfg.data.val_fraction == 0:
        raise ConfigError("data.val_fraction: 0 (no validation split) is for image runs; text runs select "
                          "their best epoch on a validation split")
    started = time.perf_counter()
    dataset = _load_data(data, cfg)
    cfg = cfg.override(text={"text_column": dataset.text_column, "label_column": dataset.label_column,
                             "format": dataset.format or None})
    splits = split_text(dataset, seed=cfg.train.seed, val_fraction=cfg.data.val_fraction,
                        test_fraction=cfg.data.test_fraction)
    load_seconds = time.perf_counter() - started
    env = distributed.join(resolve_device(cfg.train.device).type, cfg.train.devices)
    quiet = quiet or not env.is_main
    cfg = dataclasses.replace(cfg, train=resolved_train(cfg.train, len(splits.train_y)))
    global_batch = per_world(cfg.train, env.world_size).batch_size
    if global_batch % env.world_size:
        raise batch_size_error(global_batch, env.world_size)
    run_dir = Path(out) if out is not None else default_run_dir(cfg.data.source, cfg.model.name)
    if env.is_main:
        run_dir = prepare_run_dir(run_dir, resume=resume, overwrite=overwrite,
                                  data=(dataset.source, cfg.data.source), quiet=quiet)
    distributed.barrier()
    resuming = resume_point(run_dir, resume, quiet)
    device = distributed.device_for_rank(resolve_device(cfg.train.device))
    if env.is_main and not resuming:  # a resume rewrites its records only once its training has run
        ckpt.atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    num_classes = len(splits.classes)
    columns = (f"text column {cfg.text.text_column!r}, label column {cfg.text.label_column!r}"
               if cfg.text.text_column else "labels from " + ("folder names" if dataset.format == "folder"
                                                             else "__label__ prefixes"))
    _say(quiet, f"data: {dataset.source} ({dataset.format}; {columns}) — {num_classes} classes; split train "
                f"{len(splits.train_y)} / val {len(splits.val_y)} / test {len(splits.test_y)}"
                f"{' (official test split)' if splits.test_is_official else ''}; loaded in {load_seconds:.1f}s")
    for note in dataset.notes:
        _say(quiet, f"note: {note}")

    tokenizer, tokenizer_seconds = _make_tokenizer(cfg, splits.train_texts, run_dir, resuming)
    encoded = {name: tokenizer.encode(texts) for name, texts in
               (("train", splits.train_texts), ("val", splits.val_texts), ("test", splits.test_texts))}
    truncated = {name: enc.truncated for name, enc in encoded.items()}
    mean_tokens = {name: round(float(enc.lengths.mean()), 1) for name, enc in encoded.items()}
    _say(quiet, f"tokenizer: {tokenizer.kind}, {tokenizer.vocab_size:,} tokens"
                f"{' (learned from the training split)' if tokenizer.kind == 'bpe' else ''} in {tokenizer_seconds:.1f}s; "
                f"mean tokens per text {mean_tokens['train']}; truncated to {cfg.text.max_length}: "
                f"{truncated['train']} train / {truncated['val']} val / {truncated['test']} test texts")

    net = _build_model(cfg, tokenizer.vocab_size, num_classes, tokenizer.pad_id)
    params = sum(p.numel() for p in net.parameters())
    trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = cfg.model.name == "minilm" and cfg.text.freeze
    feature_seconds = 0.0
    if frozen:
        t0 = time.perf_counter()
        net.to(device)
        train_f = shared_features(net, encoded["train"].ids, device, cfg.train.eval_batch_size, cfg.train.precision)
        val_f = shared_features(net, encoded["val"].ids, device, cfg.train.eval_batch_size, cfg.train.precision)
        feature_seconds = time.perf_counter() - t0
        _say(quiet, f"frozen encoder: pooled features of {len(train_f) + len(val_f):,} texts in {feature_seconds:.1f}s")
        task = FrozenFeatureTask(train_f, splits.train_y, val_f, splits.val_y,
                                 label_smoothing=cfg.train.label_smoothing)
        tokens_per_epoch = padded_per_epoch = int(encoded["train"].lengths.sum())
    else:
        task = TextClassificationTask(encoded["train"].ids, splits.train_y, encoded["val"].ids, splits.val_y,
                                      pad_id=tokenizer.pad_id, label_smoothing=cfg.train.label_smoothing,
                                      eval_batch_size=cfg.train.eval_batch_size, precision=cfg.train.precision)
        tokens_per_epoch = int(encoded["train"].lengths.sum())
        padded_per_epoch = task.padded_slots(global_batch, cfg.train.seed)
    text_info = {
        "tokenizer": TOKENIZER_FILE, "tokenizer_kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
        "max_length": cfg.text.max_length, "text_column": cfg.text.text_column,
        "label_column": cfg.text.label_column, "encoding": cfg.text.encoding, "truncated": truncated,
        "mean_tokens": mean_tokens, "frozen_encoder": frozen,
    }
    model_info = {
        "task": TASK, "spec": net.spec, "classes": splits.classes, "layers": net.layer_names,
        "feature_dim": net.feature_dim, "params": params, "trained_params": trained,
        "data": {"source": dataset.source, "format": dataset.format, "notes": dataset.notes},
        "text": text_info,
    }
    if resuming:
        check_resumable(run_dir, model_info)
    elif env.is_main:
        write_run_records(run_dir, model_info, device, cfg.train.seed, env.world_size)
    _say(quiet, f"model: {cfg.model.name} ({params:,} parameters, {trained:,} trained; layers "
                f"{', '.join(net.layer_names)}) on {device}")

    result = train(net, task, cfg.train, run_dir, resume=resuming, quiet=quiet, description=cfg.model.name)
    if not env.is_main:
        distributed.teardown()
        return None
    if resuming:
        ckpt.atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        write_run_records(run_dir, model_info, device, cfg.train.seed, env.world_size)
    t0 = time.perf_counter()
    logits = predict_logits(net, encoded["test"].ids, device, cfg.train.eval_batch_size, cfg.train.precision)
    predict_seconds = time.perf_counter() - t0
    predicted = logits.argmax(1).numpy()
    train_seconds = result.train_seconds + tokenizer_seconds + feature_seconds
    if frozen:
        # The encoder runs once, forward only; its rate is what a frozen run's speed depends on.
        rate_of = "frozen encoder forward over train + val (features computed once)"
        token_rate = int(encoded["train"].lengths.sum() + encoded["val"].lengths.sum()) / max(feature_seconds, 1e-9)
    else:
        rate_of = "training steps (forward, backward, AdamW) over real tokens"
        token_rate = tokens_per_epoch * result.epochs_run / max(result.train_seconds, 1e-9)
    rows = [{
        "name": f"{cfg.model.name}-frozen" if frozen else cfg.model.name,
        "kind": "learned",
        "metrics": classification_metrics(splits.test_y, predicted, num_classes),
        "train_seconds": round(train_seconds, 3),
        "feature_dim": net.feature_dim,
        "params": params,
        "settings": {
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "device": result.device,
            "trained_params": trained, "frozen_encoder": frozen, "tokenizer_seconds": round(tokenizer_seconds, 3),
            "feature_seconds": round(feature_seconds, 3), "loop_seconds": round(result.train_seconds, 3),
            "train_tokens_per_second": round(token_rate), "tokens_per_second_of": rate_of,
            "padding_fraction": round(1.0 - tokens_per_epoch / max(padded_per_epoch, 1), 4),
            "test_texts_per_second": round(len(splits.test_texts) / max(predict_seconds, 1e-9), 1),
            "max_length": cfg.text.max_length, "truncated": truncated,
        },
    }]
    ckpt.atomic_write_json(run_dir / "confusion.json", {
        "classes": splits.classes, "matrix": confusion_matrix(splits.test_y, predicted, num_classes).tolist(),
    })
    split = {"train": len(splits.train_y), "val": len(splits.val_y), "test": len(splits.test_y),
             "test_is_official": splits.test_is_official, "seed": cfg.train.seed}
    if not cfg.baselines and resume:
        rows += kept_baseline_rows(run_dir, cfg.data.source, split, quiet)
    if cfg.baselines:
        _say(quiet, "baseline: TF-IDF word 1-2 grams (sublinear tf) → logistic regression, C chosen on val")
        rows.append(run_text_baseline(splits.train_texts, splits.train_y, splits.val_texts, splits.val_y,
                                      splits.test_texts, splits.test_y, num_classes, seed=cfg.train.seed,
                                      progress=None if quiet else (lambda m: _say(False, m))).row())
    skipped = _minilm_baseline(rows, splits, cfg, device, quiet) if cfg.baselines else []
    comparison = {
        "task": TASK,
        "data": cfg.data.source,
        "split": split,
        "primary_metric": "accuracy",
        "rows": rows,
        **({"skipped": skipped} if skipped else {}),
    }
    ckpt.atomic_write_json(run_dir / "comparison.json", comparison)
    report = write_report(run_dir, extra_sections=[("Text data and tokenizer", _report_html(dataset, splits,
                                                                                           text_info, rows[0]))])
    if not quiet:
        print(format_comparison_table(comparison))
        print(f"run directory: {run_dir}")
        print(f"report: {report}")
    finish_run(run_dir)
    distributed.teardown()
    return Run(run_dir, device=str(device))


def _minilm_baseline(rows: list[dict], splits: TextSplits, cfg: RunConfig, device: torch.device,
                     quiet: bool) -> list[dict]:
    """Append the frozen-MiniLM baseline row, or return why it was not run (``comparison.json``'s ``skipped``)."""
    from deepstrata.baselines.text_features import MINILM_NAME, minilm_skip_reason, run_minilm_baseline

    texts = len(splits.train_texts) + len(splits.val_texts) + len(splits.test_texts)
    reason = minilm_skip_reason(cfg.model.name, texts, device.type, cfg.text.pretrained_path)
    if reason is not None:
        _say(quiet, f"baseline {MINILM_NAME} skipped: {reason}")
        return [{"name": MINILM_NAME, "reason": reason}]
    _say(quiet, "baseline: frozen all-MiniLM-L6-v2 sentence vectors → logistic regression")
    rows.append(run_minilm_baseline(splits.train_texts, splits.train_y, splits.val_texts, splits.val_y,
                                    splits.test_texts, splits.test_y, len(splits.classes),
                                    max_length=cfg.text.max_length, device=device, precision=cfg.train.precision,
                                    seed=cfg.train.seed, pretrained_path=cfg.text.pretrained_path,
                                    progress=None if quiet else (lambda m: _say(False, m))).row())
    return []


def _report_html(dataset: TextDataset, splits: TextSplits, info: dict, row: dict) -> str:
    settings = row["settings"]
    items = [
        ("source", f"{dataset.source} ({dataset.format})"),
        ("columns", f"text: {info['text_column']}, label: {info['label_column']}" if info["text_column"]
         else f"labels from {'folder names' if dataset.format == 'folder' else '__label__ prefixes'}"),
        ("classes", ", ".join(splits.classes)),
        ("tokenizer", f"{info['tokenizer_kind']}, {info['vocab_size']:,} tokens"
         + (" learned from the training split only" if info["tokenizer_kind"] == "bpe" else " (pretrained)")),
        ("mean tokens per text", ", ".join(f"{k} {v}" for k, v in info["mean_tokens"].items())),
        (f"truncated to {info['max_length']} tokens", ", ".join(f"{k} {v}" for k, v in info["truncated"].items())),
        ("trained parameters", f"{settings['trained_params']:,} of {row['params']:,}"
         + (" (encoder frozen, head trained)" if info["frozen_encoder"] else "")),
        ("throughput", f"{settings['train_tokens_per_second']:,} tokens/s ({settings['tokens_per_second_of']}); "
                       f"padding {100 * settings['padding_fraction']:.1f}% of slots"),
    ]
    items += [("note", note) for note in dataset.notes]
    body = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items)
    return f'<dl class="meta">{body}</dl>'


# --- using a finished run ------------------------------------------------------------------

@dataclass
class TextPrediction:
    text: str
    label: str
    probability: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"text": self.text, "label": self.label, "probability": round(self.probability, 6),
                "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()}}


@dataclass
class TokenFeatures:
    """One vector per token of every text, with the tokens beside them.

    ``vectors [T, D]`` stacks all texts' tokens; ``offsets [N+1]`` marks where each text's
    tokens start (text ``i`` owns rows ``offsets[i]:offsets[i+1]``). ``tokens`` shows what
    each token holds; ``start``/``end`` are its character span in the text (0, 0 for ``[CLS]``).
    """

    vectors: np.ndarray
    text_index: np.ndarray
    position: np.ndarray
    token_ids: np.ndarray
    tokens: list[str]
    start: np.ndarray
    end: np.ndarray
    offsets: np.ndarray

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (arrays) or ``.parquet`` (one row per token), atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            buffer = io.BytesIO()
            np.savez(buffer, vectors=self.vectors, text_index=self.text_index, position=self.position,
                     token_ids=self.token_ids, tokens=np.array(self.tokens, dtype=str), start=self.start,
                     end=self.end, offsets=self.offsets)
            ckpt.atomic_write_bytes(path, buffer.getvalue())
        elif suffix == ".parquet":
            pa, pq = _pyarrow(path)
            dim = self.vectors.shape[1]
            table = pa.table({
                "text_index": self.text_index, "position": self.position, "token": self.tokens,
                "token_id": self.token_ids, "start": self.start, "end": self.end,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(self.vectors.reshape(-1)), dim),
            })
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            ckpt.atomic_write_bytes(path, buffer.getvalue())
        else:
            raise ConfigError(f"--out {path}: per-token features are written as .npz or .parquet")
        return path


def _pyarrow(path: Path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"--out {path}: writing Parquet needs pyarrow (pip install 'deepstrata[text]'); "
                          "use .npz or .npy") from None
    return pa, pq


def save_text_features(features: np.ndarray, path: str | Path) -> Path:
    """Write one vector per text as ``.npy``, ``.npz`` (key ``features``) or ``.parquet``, atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(buffer, features)
    elif suffix == ".npz":
        np.savez(buffer, features=features)
    elif suffix == ".parquet":
        pa, pq = _pyarrow(path)
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])
        pq.write_table(pa.table({"text_index": np.arange(len(features)), "vector": vectors}), buffer)
    else:
        raise ConfigError(f"--out {path}: features are written as .npy, .npz or .parquet")
    ckpt.atomic_write_bytes(path, buffer.getvalue())
    return path


def _run_tokenizer(run) -> TextTokenizer:
    info = run.info.get("text") or {}
    if "tokenizer" not in info:
        raise RunError(f"{run.path}: model.json has no text section; not a text run")
    from deepstrata import runfiles

    path = run.path / info["tokenizer"]
    runfiles.read_json(path)  # syntax and type first, so a damaged file is named as one
    try:
        tokenizer = TextTokenizer.from_file(path, info["max_length"], info.get("tokenizer_kind", "bpe"))
    except RunError as err:
        raise runfiles.rewrap(err, path) from None
    expected = info.get("vocab_size")
    if isinstance(expected, int) and tokenizer.vocab_size != expected:
        raise runfiles.damaged(path, f"{tokenizer.vocab_size:,} tokens, but the run's model was trained with "
                                     f"{expected:,}")
    return tokenizer


def _as_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"text {bad[0]}: expected a string, got {type(texts[bad[0]]).__name__}")
    if not texts:
        raise DataError("no texts given")
    return texts


def predict_texts(run, texts) -> list[TextPrediction]:
    """Label, its probability and every class's probability for each text."""
    texts = _as_texts(texts)
    ids = _run_tokenizer(run).encode(texts).ids
    probs = torch.softmax(predict_logits(run.model, ids, run.device), dim=1)
    classes = run.classes
    out = []
    for text, row in zip(texts, probs.tolist()):
        best = int(np.argmax(row))
        out.append(TextPrediction(text, classes[best], row[best], dict(zip(classes, row))))
    return out


def embed_texts(run, texts, per_token: bool = False) -> np.ndarray | TokenFeatures:
    """One pooled vector per text ``[N, D]``, or with ``per_token`` one vector per token (``TokenFeatures``)."""
    texts = _as_texts(texts)
    tokenizer = _run_tokenizer(run)
    if not per_token:
        return pooled_features(run.model, tokenizer.encode(texts).ids, run.device).numpy()
    encoded = tokenizer.encode(texts, with_offsets=True)
    states = token_features(run.model, encoded.ids, run.device)
    tokens: list[str] = []
    spans: list[tuple[int, int]] = []
    for text, ids, offsets, special in zip(texts, encoded.ids, encoded.offsets, encoded.special):
        tokens.extend(tokenizer.token_strings(text, ids, offsets, special))
        spans.extend(offsets)
    spans_array = np.array(spans, dtype=np.int64).reshape(-1, 2)
    counts = np.array([len(s) for s in states], dtype=np.int64)
    return TokenFeatures(
        vectors=torch.cat(states).numpy() if states else np.zeros((0, run.model.feature_dim), np.float32),
        text_index=np.repeat(np.arange(len(texts)), counts),
        position=np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64),
        token_ids=np.concatenate(encoded.ids),
        tokens=tokens,
        start=spans_array[:, 0],
        end=spans_array[:, 1],
        offsets=np.concatenate([[0], np.cumsum(counts)]),
    )


def read_input_texts(source: str | Path, run=None, text_column: str | None = None) -> list[str]:
    """Texts to predict or embed: lines of a ``.txt``, a table's text column, or every text of a class folder.

    A table is read by ``text_column``, else by the column the run was trained on (its
    ``model.json``); a file without that column is refused, naming the column and the
    columns found, rather than answered from another column that happens to look like text.
    A folder (or archive) of class sub-folders gives its texts in order: training, then test.
    """
    from deepstrata.data.text import _joined, _text_columns, detect_text_format, read_table

    info = (run.info.get("text") or {}) if run is not None else {}
    encoding = info.get("encoding") or "utf-8"
    path = Path(source).expanduser()
    if path.is_dir() or (path.is_file() and detect_text_format(path) == "folder"):
        dataset = load_text(path, format="folder", encoding=encoding)
        return list(dataset.texts) + list(dataset.test_texts or [])
    saved = info.get("text_column")
    if text_column is not None or not saved or not path.is_file() or path.name.lower().endswith(".txt"):
        return read_texts(source, text_column=text_column, encoding=encoding)
    table = read_table(path, detect_text_format(path), encoding=encoding)
    try:
        columns = _text_columns(table, saved, None)
    except DataError:
        raise DataError(f"{path}: no column {saved!r}, the text column this run was trained on (columns found: "
                        f"{', '.join(map(str, table.columns)) or 'none'})",
                        hint="name the column to read with --text-column") from None
    return [_joined(table, columns, row) for row in range(len(table.rows))]


def evaluate_text(run, data: str | None = None) -> dict:
    """Accuracy and macro-F1 on the run's own test split, or on another labelled source.

    Another source is scored on its official test split if it has one, else on every
    example; its classes are matched to the run's by name. A table is read by the run's
    text and label columns when it has them; otherwise the columns are guessed, and the
    answer's ``split`` says which were used.
    """
    from deepstrata.metrics import classification_metrics, confusion_matrix

    cfg = run.config
    source = data or cfg.data.source
    same = source == cfg.data.source
    t = cfg.text
    columns = ""
    if same:
        dataset = load_text(source, format=t.format, text_column=t.text_column, label_column=t.label_column,
                            encoding=t.encoding)
    else:
        try:
            dataset = load_text(source, text_column=t.text_column, label_column=t.label_column, encoding=t.encoding)
        except DataError:
            if t.text_column is None and t.label_column is None:
                raise
            dataset = load_text(source, encoding=t.encoding)
        if dataset.text_column and (dataset.text_column, dataset.label_column) != (t.text_column, t.label_column):
            columns = (f"; texts from column {dataset.text_column!r}, labels from {dataset.label_column!r} (guessed: "
                       f"the run read {t.text_column!r} and {t.label_column!r})")
    if same:
        splits = split_text(dataset, seed=cfg.train.seed, val_fraction=cfg.data.val_fraction,
                            test_fraction=cfg.data.test_fraction)
        texts, labels, which = splits.test_texts, splits.test_y, "test split of the run"
    elif dataset.test_texts is not None:
        texts, labels, which = dataset.test_texts, dataset.test_labels, "official test split"
    else:
        texts, labels, which = dataset.texts, dataset.labels, "all examples"
    unknown = [name for name in dataset.classes if name not in run.classes]
    if unknown:
        raise DataError(f"{source}: classes {', '.join(unknown[:5])} are not among the run's classes "
                        f"({', '.join(run.classes)})")
    truth = np.array([run.classes.index(dataset.classes[y]) for y in labels], dtype=np.int64)
    ids = _run_tokenizer(run).encode(texts).ids
    predicted = predict_logits(run.model, ids, run.device).argmax(1).numpy()
    num_classes = len(run.classes)
    return {
        "data": source, "split": which + columns, "examples": int(len(truth)),
        "metrics": classification_metrics(truth, predicted, num_classes),
        "confusion": confusion_matrix(truth, predicted, num_classes).tolist(),
    }
