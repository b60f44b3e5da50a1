"""What a finished text run does: ``Run.predict``, ``Run.embed`` and ``Run.evaluate``, and reading their inputs.

``predict_texts``, ``embed_texts`` and ``evaluate_text`` tokenize with the run's own
tokenizer (``run_tokenizer``); ``read_input_texts`` reads the texts the CLI's ``predict
--file`` and ``embed --data`` are given; ``save_text_features`` and ``TokenFeatures.save``
write what ``embed`` returns.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepstrata.data.text import load_text, read_texts, split_text
from deepstrata.data.tokenizer import TextTokenizer
from deepstrata.engine import checkpoint as ckpt
from deepstrata.errors import ConfigError, DataError, RunError
from deepstrata.families.text.tasks import pooled_features, predict_logits, token_features


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


def run_tokenizer(run) -> TextTokenizer:
    info = run.info.get("text") or {}
    if "tokenizer" not in info:
        raise RunError(f"{run.path}: model.json has no text section; not a text run")
    from deepstrata import runfiles

    path = run.path / info["tokenizer"]
    runfiles.read_json(path)  # syntax and type first, so a damaged file is named as one
    try:
        # a run's truncation (head, or head+tail) is part of what its model saw: every verb repeats it
        tokenizer = TextTokenizer.from_file(path, info["max_length"], info.get("tokenizer_kind", "bpe"),
                                            info.get("truncate", "head"))
    except RunError as err:
        raise runfiles.rewrap(err, path) from None
    expected = info.get("vocab_size")
    if isinstance(expected, int) and tokenizer.vocab_size != expected:
        raise runfiles.damaged(path, f"{tokenizer.vocab_size:,} tokens, but the run's model was trained with "
                                     f"{expected:,}")
    return tokenizer


def as_texts(texts) -> list[str]:
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
    texts = as_texts(texts)
    ids = run_tokenizer(run).encode(texts).ids
    probs = torch.softmax(predict_logits(run.model, ids, run.device), dim=1)
    classes = run.classes
    out = []
    for text, row in zip(texts, probs.tolist()):
        best = int(np.argmax(row))
        out.append(TextPrediction(text, classes[best], row[best], dict(zip(classes, row))))
    return out


def embed_texts(run, texts, per_token: bool = False) -> np.ndarray | TokenFeatures:
    """One pooled vector per text ``[N, D]``, or with ``per_token`` one vector per token (``TokenFeatures``)."""
    texts = as_texts(texts)
    tokenizer = run_tokenizer(run)
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
    from deepstrata.data.text import joined_text, text_columns, detect_text_format, read_table

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
        columns = text_columns(table, saved, None)
    except DataError:
        raise DataError(f"{path}: no column {saved!r}, the text column this run was trained on (columns found: "
                        f"{', '.join(map(str, table.columns)) or 'none'})",
                        hint="name the column to read with --text-column") from None
    return [joined_text(table, columns, row) for row in range(len(table.rows))]


def read_by_run_columns(t, source: str):
    """Texts of another source than the run's, by the run's text and label columns (``t``: its ``TextConfig``)
    when the table has them, else by the columns guessed; ``(dataset, what was guessed or None)``."""
    try:
        dataset = load_text(source, text_column=t.text_column, label_column=t.label_column, encoding=t.encoding)
    except DataError:
        if t.text_column is None and t.label_column is None:
            raise
        dataset = load_text(source, encoding=t.encoding)
    if dataset.text_column and (dataset.text_column, dataset.label_column) != (t.text_column, t.label_column):
        return dataset, (f"texts from column {dataset.text_column!r}, labels from {dataset.label_column!r} "
                         f"(guessed: the run read {t.text_column!r} and {t.label_column!r})")
    return dataset, None


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
        dataset, guessed = read_by_run_columns(t, source)
        columns = f"; {guessed}" if guessed else ""
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
    ids = run_tokenizer(run).encode(texts).ids
    # in the run's own precision, as its fit scored the test split (predict stays fp32, as an export)
    predicted = predict_logits(run.model, ids, run.device, precision=str(run.config.train.precision)).argmax(1).numpy()
    num_classes = len(run.classes)
    return {
        "data": source, "split": which + columns, "examples": int(len(truth)),
        "metrics": classification_metrics(truth, predicted, num_classes),
        "confusion": confusion_matrix(truth, predicted, num_classes).tolist(),
    }
