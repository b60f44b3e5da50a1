"""How the text family fits: raw strings → tokens → an encoder that learns a vector per token → a class.

The steps ``pipeline.fit`` asks of ``TextFamily``: read and split the data, learn the
tokenizer on the training split, build the model and the loop ``Task`` (``families.text.tasks``),
score the test split, fit the TF-IDF (and frozen-MiniLM) baselines on the same split, and
the report's "Text data and tokenizer" section.
"""

from __future__ import annotations

import html
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deepstrata.config import RunConfig, per_world
from deepstrata.data.text import TextDataset, TextSplits, load_text, split_text
from deepstrata.data.text_split import limit_text_labels
from deepstrata.data.tokenizer import TextTokenizer
from deepstrata.engine import distributed
from deepstrata.errors import ConfigError
from deepstrata.families.base import Built, FitContext, Prepared
from deepstrata.families.text.family import TASK
from deepstrata.families.text.tasks import (FrozenFeatureTask, TextClassificationTask, batch_size_error,
                                            predict_logits, shared_features)

TOKENIZER_FILE = "tokenizer.json"


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def check_config(cfg: RunConfig) -> None:
    if cfg.data.val_fraction == 0:
        raise ConfigError("data.val_fraction: 0 (no validation split) is for image runs; text runs select "
                          "their best epoch on a validation split")


def read(cfg: RunConfig, data) -> Prepared:
    """The texts read and split (few labels per class if asked); ``Prepared.cfg`` records the columns and
    format reading found, and a transfer's architecture and per-layer schedule."""
    plan = None
    if cfg.transfer.source is not None:  # the source is opened first: a bad --from is refused before reading
        from deepstrata.families.text import transfer

        source = transfer.open_source(cfg.transfer.source, pretrained_path=cfg.text.pretrained_path)
        plan = TransferPlan(source, transfer.reused_layers(source, cfg.transfer.up_to))
    if isinstance(data, TextDataset):
        dataset = data
    else:
        dataset = load_text(cfg.data.source, format=cfg.text.format, text_column=cfg.text.text_column,
                            label_column=cfg.text.label_column, encoding=cfg.text.encoding)
    cfg = cfg.override(text={"text_column": dataset.text_column, "label_column": dataset.label_column,
                             "format": dataset.format or None})
    splits = split_text(dataset, seed=cfg.train.seed, val_fraction=cfg.data.val_fraction,
                        test_fraction=cfg.data.test_fraction)
    if cfg.data.labels_per_class is not None:
        splits = limit_text_labels(splits, cfg.data.labels_per_class, cfg.train.seed)
    if plan is not None:
        cfg = _transferred_config(cfg, plan, len(splits.train_y))
    return Prepared(source=cfg.data.source, train_size=len(splits.train_y),
                    guarded_paths=(dataset.source, cfg.data.source), own=(dataset, splits, plan), cfg=cfg)


@dataclass
class TransferPlan:
    source: object       # transfer.Source
    reused: list


def _transferred_config(cfg: RunConfig, plan: TransferPlan, train_size: int) -> RunConfig:
    """The run's config says what it is: the source's architecture and shape, and the mode as the loop's
    per-layer controls (``engine.layer_schedule``), resolved into config.yaml so that a resume trains the same."""
    from deepstrata.config import resolved_train
    from deepstrata.engine.layer_schedule import transfer_schedule
    from deepstrata.families.text.transfer import shape_overrides

    source = plan.source
    cfg = cfg.override(model={"name": source.family}, text=shape_overrides(source, cfg.text.max_length))
    epochs = resolved_train(cfg.train, train_size).epochs
    return cfg.override(train=transfer_schedule(source.layer_names, plan.reused, cfg.transfer.mode, epochs))


def describe(cfg: RunConfig, prepared: Prepared, load_seconds: float) -> list[str]:
    dataset, splits, _ = prepared.own
    columns = (f"text column {cfg.text.text_column!r}, label column {cfg.text.label_column!r}"
               if cfg.text.text_column else "labels from " + ("folder names" if dataset.format == "folder"
                                                             else "__label__ prefixes"))
    return [f"data: {dataset.source} ({dataset.format}; {columns}) — {len(splits.classes)} classes; split train "
            f"{len(splits.train_y)} / val {len(splits.val_y)} / test {len(splits.test_y)}"
            f"{' (official test split)' if splits.test_is_official else ''}; loaded in {load_seconds:.1f}s",
            *(f"note: {note}" for note in dataset.notes + splits.notes)]


def check_world(cfg: RunConfig, world_size: int) -> None:
    """The global batch is split evenly across processes (``tasks.rank_share``)."""
    global_batch = per_world(cfg.train, world_size).batch_size
    if global_batch % world_size:
        raise batch_size_error(global_batch, world_size)


def make_tokenizer(cfg: RunConfig, texts: list[str], run_dir: Path, resume: bool,
                   plan: TransferPlan | None = None) -> tuple[TextTokenizer, float]:
    """The run's tokenizer, saved to the run directory by rank 0: a transfer's source's, MiniLM's, or BPE
    learned from the training texts.

    Under several processes rank 0 alone learns (or, resuming, reads) the BPE tokenizer and
    sends it to the others, so every process encodes with the very same vocabulary.
    """
    start = time.perf_counter()
    saved = run_dir / TOKENIZER_FILE
    main = distributed.current().is_main
    truncate = cfg.text.truncate
    if plan is not None:
        tokenizer = TextTokenizer.from_file(plan.source.tokenizer, cfg.text.max_length, plan.source.tokenizer_kind,
                                            truncate)
    elif cfg.model.name == "minilm":
        from deepstrata.models.minilm import pretrained_dir

        tokenizer = TextTokenizer.from_file(pretrained_dir(cfg.text.pretrained_path) / TOKENIZER_FILE,
                                            cfg.text.max_length, "wordpiece", truncate)
    else:
        tokenizer = None
        if main:
            if resume and saved.is_file():
                tokenizer = TextTokenizer.from_file(saved, cfg.text.max_length, "bpe", truncate)
            else:
                tokenizer = TextTokenizer.train_bpe(texts, cfg.text.vocab_size, cfg.text.max_length,
                                                    truncate=truncate)
        shared = distributed.broadcast_object(tokenizer.tokenizer.to_str() if main else None)
        if not main:
            import tokenizers

            tokenizer = TextTokenizer(tokenizers.Tokenizer.from_str(shared), cfg.text.max_length, "bpe", truncate)
    if main and not (resume and saved.is_file()):  # a resume keeps the run's file as it is
        tokenizer.save(saved)
    return tokenizer, time.perf_counter() - start


def build_model(cfg: RunConfig, vocab_size: int, num_classes: int, pad_id: int) -> nn.Module:
    torch.manual_seed(cfg.train.seed)
    if cfg.model.name == "minilm":
        from deepstrata.models.minilm import MiniLMClassifier

        return MiniLMClassifier.pretrained(num_classes, path=cfg.text.pretrained_path, freeze=cfg.text.freeze,
                                           dropout=cfg.text.dropout, weights=cfg.text.init == "pretrained")
    from deepstrata.models.transformer import TransformerClassifier

    t = cfg.text
    return TransformerClassifier(vocab_size, num_classes, dim=t.dim, layers=t.layers, heads=t.heads, ff_mult=t.ff_mult,
                                 max_length=t.max_length, positions=t.positions, pooling=t.pooling,
                                 dropout=t.dropout, pad_id=pad_id)


def build(cfg: RunConfig, prepared: Prepared, fit: FitContext) -> Built:
    """Tokenizer, encoded splits, model and loop ``Task``; ``Built.own`` keeps what scoring needs."""
    dataset, splits, plan = prepared.own
    quiet, device = fit.quiet, fit.device
    tokenizer, tokenizer_seconds = make_tokenizer(cfg, splits.train_texts, fit.run_dir, fit.resuming, plan)
    encoded = {name: tokenizer.encode(texts) for name, texts in
               (("train", splits.train_texts), ("val", splits.val_texts), ("test", splits.test_texts))}
    truncated = {name: enc.truncated for name, enc in encoded.items()}
    mean_tokens = {name: round(float(enc.lengths.mean()), 1) for name, enc in encoded.items()}
    _say(quiet, f"tokenizer: {tokenizer.kind}, {tokenizer.vocab_size:,} tokens"
                f"{' (learned from the training split)' if tokenizer.kind == 'bpe' else ''} in {tokenizer_seconds:.1f}s; "
                f"mean tokens per text {mean_tokens['train']}; truncated to {cfg.text.max_length} "
                f"({cfg.text.truncate}): "
                f"{truncated['train']} train / {truncated['val']} val / {truncated['test']} test texts")

    if plan is not None:
        from deepstrata.families.text import transfer

        torch.manual_seed(cfg.train.seed)
        net = transfer.build(plan.source, len(splits.classes), plan.reused, cfg.text.dropout)
        frozen = transfer.features_once(cfg.transfer.mode, plan.reused, net.layer_names)
        held = set(cfg.train.frozen)
        trained = sum(p.numel() for name, layer in net.layers.items() if name not in held for p in layer.parameters())
    else:
        net = build_model(cfg, tokenizer.vocab_size, len(splits.classes), tokenizer.pad_id)
        frozen = cfg.model.name == "minilm" and cfg.text.freeze
        trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
    params = sum(p.numel() for p in net.parameters())
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
        global_batch = per_world(cfg.train, fit.env.world_size).batch_size
        padded_per_epoch = task.padded_slots(global_batch, cfg.train.seed)
    text_info = {
        "tokenizer": TOKENIZER_FILE, "tokenizer_kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
        "max_length": cfg.text.max_length, "text_column": cfg.text.text_column,
        "label_column": cfg.text.label_column, "encoding": cfg.text.encoding, "truncated": truncated,
        "truncate": cfg.text.truncate,
        "mean_tokens": mean_tokens, "frozen_encoder": frozen,
    }
    info = {
        "task": TASK, "spec": net.spec, "classes": splits.classes, "layers": net.layer_names,
        "feature_dim": net.feature_dim, "params": params, "trained_params": trained,
        "data": {"source": dataset.source, "format": dataset.format, "notes": dataset.notes + splits.notes},
        "text": text_info,
    }
    name = cfg.model.name
    if plan is not None:
        fresh = [layer for layer in net.layer_names if layer not in plan.reused]
        info["transfer"] = transfer.record(plan.source, cfg.transfer.mode, plan.reused, fresh, cfg.text.truncate)
        name = (f"{cfg.model.name} from {plan.source.describe()} ({cfg.transfer.mode}: reused "
                f"{', '.join(plan.reused)}; fresh {', '.join(fresh)}"
                + ("; frozen layers in eval mode, dropout off; features computed once" if frozen else
                   "; frozen layers in eval mode, dropout off" if cfg.train.frozen else "") + ")")
    line = (f"model: {name} ({params:,} parameters, {trained:,} trained; layers "
            f"{', '.join(net.layer_names)}) on {device}")
    return Built(net=net, task=task, info=info, model_line=line, description=cfg.model.name,
                 own={"encoded": encoded, "truncated": truncated, "frozen": frozen, "params": params,
                      "trained": trained, "tokenizer_seconds": tokenizer_seconds, "feature_seconds": feature_seconds,
                      "tokens_per_epoch": tokens_per_epoch, "padded_per_epoch": padded_per_epoch})


def write_records(cfg: RunConfig, built: Built, fit: FitContext) -> None:
    from deepstrata.records import write_run_records

    write_run_records(fit.run_dir, built.info, fit.device, cfg.train.seed, fit.env.world_size,
                      (cfg.train.precision, fit.precision_reason))


def score(cfg: RunConfig, prepared: Prepared, built: Built, result, fit: FitContext) -> list[dict]:
    """The learned row on the test split (with the tokenizer's and encoder's share of the time), and confusion.json."""
    from deepstrata.families.classification import write_confusion
    from deepstrata.metrics import classification_metrics

    _, splits, _ = prepared.own
    own, net = built.own, built.net
    encoded, frozen = own["encoded"], own["frozen"]
    t0 = time.perf_counter()
    logits = predict_logits(net, encoded["test"].ids, fit.device, cfg.train.eval_batch_size, cfg.train.precision)
    predict_seconds = time.perf_counter() - t0
    predicted = logits.argmax(1).numpy()
    train_seconds = result.train_seconds + own["tokenizer_seconds"] + own["feature_seconds"]
    if frozen:
        # The encoder runs once, forward only; its rate is what a frozen run's speed depends on.
        rate_of = "frozen encoder forward over train + val (features computed once)"
        token_rate = (int(encoded["train"].lengths.sum() + encoded["val"].lengths.sum())
                      / max(own["feature_seconds"], 1e-9))
    else:
        rate_of = "training steps (forward, backward, AdamW) over real tokens"
        token_rate = own["tokens_per_epoch"] * result.epochs_run / max(result.train_seconds, 1e-9)
    row = {
        "name": f"{cfg.model.name}-frozen" if frozen else cfg.model.name,
        "kind": "learned",
        "metrics": classification_metrics(splits.test_y, predicted, len(splits.classes)),
        "train_seconds": round(train_seconds, 3),
        "feature_dim": net.feature_dim,
        "params": own["params"],
        "settings": {
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "device": result.device,
            "trained_params": own["trained"], "frozen_encoder": frozen,
            "tokenizer_seconds": round(own["tokenizer_seconds"], 3),
            "feature_seconds": round(own["feature_seconds"], 3), "loop_seconds": round(result.train_seconds, 3),
            "train_tokens_per_second": round(token_rate), "tokens_per_second_of": rate_of,
            "padding_fraction": round(1.0 - own["tokens_per_epoch"] / max(own["padded_per_epoch"], 1), 4),
            "test_texts_per_second": round(len(splits.test_texts) / max(predict_seconds, 1e-9), 1),
            "max_length": cfg.text.max_length, "truncated": own["truncated"],
        },
    }
    write_confusion(fit.run_dir, splits.classes, splits.test_y, predicted)
    return [row]


def baselines(cfg: RunConfig, prepared: Prepared, fit: FitContext) -> tuple[list[dict], list[dict]]:
    """The TF-IDF row and the frozen-MiniLM row, and what was skipped (``comparison.json``'s ``skipped``)."""
    from deepstrata.baselines import helper
    from deepstrata.baselines.text_features import run_text_baseline

    _, splits, _ = prepared.own
    quiet = fit.quiet
    _say(quiet, "baseline: TF-IDF word 1-2 grams (sublinear tf) → logistic regression, C chosen on val")
    result, where = helper.run(run_text_baseline, splits.train_texts, splits.train_y, splits.val_texts,
                               splits.val_y, splits.test_texts, splits.test_y, len(splits.classes),
                               seed=cfg.train.seed, progress=None if quiet else (lambda m: _say(False, m)))
    rows = [result.row()]
    rows[0]["settings"]["process"] = where
    skipped = minilm_baseline(rows, splits, cfg, fit.device, quiet)
    return rows, skipped


def minilm_baseline(rows: list[dict], splits: TextSplits, cfg: RunConfig, device, quiet: bool) -> list[dict]:
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


def comparison(cfg: RunConfig, prepared: Prepared, rows: list[dict]) -> dict:
    _, splits, _ = prepared.own
    split = {"train": len(splits.train_y), "val": len(splits.val_y), "test": len(splits.test_y),
             "test_is_official": splits.test_is_official, "seed": cfg.train.seed}
    return {"task": TASK, "data": cfg.data.source, "split": split, "primary_metric": "accuracy", "rows": rows}


def report_html(dataset: TextDataset, splits: TextSplits, info: dict, row: dict) -> str:
    """The report's "Text data and tokenizer" section: source, columns, tokenizer, truncation, throughput."""
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


def report_sections(prepared: Prepared, built: Built, rows: list[dict]) -> list[tuple[str, str]]:
    dataset, splits, _ = prepared.own
    return [("Text data and tokenizer", report_html(dataset, splits, built.info["text"], rows[0]))]
