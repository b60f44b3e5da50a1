"""``Embeddings``: one vector per example with its id and label, and the files ``embed`` writes.

What ``deepstrata embed`` writes and ``deepstrata search`` reads back. Two forms:

* ``.parquet``: columns ``id`` (string), ``label`` (string or null) and ``vector``
  (FixedSizeList<float32>[D]); the file's schema metadata key ``deepstrata`` holds
  ``EmbeddingMeta`` as JSON (run, weights fingerprint, layer, rows, dimension, count).
* ``.npy``: the matrix ``[N, D]`` float32, and beside it ``<name>.ids.json`` with the
  same metadata plus ``ids`` and ``labels`` row by row — the sidecar ``features`` writes
  for a recommender's rows (a plain list of ids there: ``write_matrix`` is shared).

Every file is written atomically (temporary file, fsync, rename): complete or absent.
The metadata lets ``search`` embed a query exactly as the index was embedded, and refuse
an index another run (or other weights of this run) made.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deepstrata.engine import checkpoint as ckpt
from deepstrata.errors import ConfigError, DataError

META_KEY = b"deepstrata"
FORMAT = 1
SUFFIXES = (".parquet", ".npy")


@dataclass(frozen=True)
class EmbeddingMeta:
    """Which run, weights and layer made a set of vectors: what a query must be embedded with."""

    run: str                 # the run directory, as it was when the vectors were made
    weights: str             # sha256 (first 16 hex digits) of the run's best.safetensors
    layer: str               # the layer read ("features": the vector the head classifies)
    dim: int
    rows: str = "examples"   # examples (images, texts), users or items
    task: str = ""
    format: int = FORMAT


@dataclass
class EmbeddedRows:
    """What a family read for ``embed``: the vectors, one id and label per row, the layer read and the rows' kind."""

    vectors: np.ndarray
    ids: list[str]
    labels: list[str | None]
    layer: str
    rows: str = "examples"
    source: str = ""


@dataclass
class Embeddings:
    """``vectors [N, D]`` float32, one ``id`` (str) and ``label`` (str or None) per row, and their ``meta``."""

    vectors: np.ndarray
    ids: list[str]
    labels: list[str | None]
    meta: EmbeddingMeta
    source: str = ""
    _unit: object = field(default=None, repr=False, compare=False)   # the row-normalised torch matrix, cached

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.ids) != len(self.vectors) or len(self.labels) != len(self.vectors):
            raise DataError(f"embeddings: {self.vectors.shape} vectors for {len(self.ids)} ids and "
                            f"{len(self.labels)} labels; expected one id and label per row")

    @property
    def layer(self) -> str:
        return self.meta.layer

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def unit(self):
        """The vectors as a torch tensor with rows of length 1 (zero rows stay zero), made once."""
        if self._unit is None:
            from deepstrata.vector_search import normalise

            self._unit = normalise(self.vectors)
        return self._unit

    def save(self, path: str | Path) -> Path:
        """Write ``.parquet`` (id, label, vector + metadata) or ``.npy`` (+ ``.ids.json``), atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            ckpt.atomic_write_bytes(path, _parquet_bytes(self, path))
        elif suffix == ".npy":
            write_matrix(path, self.vectors, {**asdict(self.meta), "ids": self.ids, "labels": self.labels})
        else:
            raise ConfigError(f"--out {path}: embeddings are written as .parquet or .npy")
        return path


def sidecar(path: str | Path) -> Path:
    """``emb.npy`` → ``emb.ids.json``: where the ids of a ``.npy`` matrix's rows are kept."""
    return Path(path).with_suffix(".ids.json")


def write_matrix(path: str | Path, values: np.ndarray, ids) -> Path | None:
    """``values`` as ``.npy`` and, if ``ids`` is given (a list, or a dict with ``ids``), the sidecar; atomically.

    The sidecar goes first, so that a matrix on disk always has the ids that describe it.
    """
    path = Path(path)
    id_file = None
    if ids is not None:
        id_file = sidecar(path)
        ckpt.atomic_write_json(id_file, ids)
    buffer = io.BytesIO()
    np.save(buffer, values)
    ckpt.atomic_write_bytes(path, buffer.getvalue())
    return id_file


def weights_fingerprint(run_path: str | Path) -> str:
    """The first 16 hex digits of the sha256 of a run's kept weights: which weights made a vector."""
    digest = hashlib.sha256()
    with open(Path(run_path) / "checkpoints" / "best.safetensors", "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _pyarrow(path: Path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path}: Parquet needs pyarrow (pip install 'deepstrata[parquet]'); use .npy") from None
    return pa, pq


def _parquet_bytes(emb: Embeddings, path: Path) -> bytes:
    pa, pq = _pyarrow(path)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.vectors.reshape(-1), type=pa.float32()), emb.dim)
    table = pa.table({"id": pa.array(emb.ids, type=pa.string()), "label": pa.array(emb.labels, type=pa.string()),
                      "vector": vectors})
    table = table.replace_schema_metadata({META_KEY: json.dumps(asdict(emb.meta)).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _check_record(record, path: Path) -> None:
    if not isinstance(record, dict) or not {"run", "weights", "layer", "dim"} <= set(record):
        raise DataError(f"--index {path}: no deepstrata embedding metadata (run, layer, dim); "
                        "write an index with `deepstrata embed RUN --out FILE`")


def _meta(record, path: Path, rows: int, dim: int) -> EmbeddingMeta:
    """The metadata of a file, checked against what the file holds; anything else names the file."""
    names = {f for f in EmbeddingMeta.__dataclass_fields__}
    _check_record(record, path)
    try:
        meta = EmbeddingMeta(**{k: v for k, v in record.items() if k in names})
    except TypeError as err:
        raise DataError(f"--index {path}: damaged embedding metadata ({err})") from None
    if meta.dim != dim:
        raise DataError(f"--index {path}: metadata says dimension {meta.dim}, but the vectors have {dim}")
    return meta


def load_embeddings(path: str | Path) -> Embeddings:
    """Read an index ``embed`` wrote (``.parquet``, or ``.npy`` with its ``.ids.json``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"--index {path}: expected a .parquet or .npy file written by `deepstrata embed`")
    if not path.is_file():
        raise DataError(f"--index {path}: no such file")
    if suffix == ".parquet":
        pa, pq = _pyarrow(path)
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"--index {path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
        missing = [c for c in ("id", "label", "vector") if c not in table.column_names]
        if missing:
            raise DataError(f"--index {path}: no column {missing[0]!r}; expected id, label and vector "
                            "(write an index with `deepstrata embed`)")
        raw = (table.schema.metadata or {}).get(META_KEY)
        try:
            record = json.loads(raw) if raw else None
        except ValueError:
            record = None
        _check_record(record, path)
        column = table.column("vector").combine_chunks()
        if not pa.types.is_fixed_size_list(column.type):
            raise DataError(f"--index {path}: column 'vector' is {column.type}, expected a fixed-size list of float32 "
                            "(write an index with `deepstrata embed`)")
        vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        vectors = vectors.reshape(len(table), column.type.list_size)
        meta = _meta(record, path, len(table), vectors.shape[1])
        ids = [str(i) for i in table.column("id").to_pylist()]
        labels = table.column("label").to_pylist()
        return Embeddings(vectors, ids, labels, meta, source=str(path))
    try:
        vectors = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"--index {path}: not a readable .npy file ({err})") from None
    if vectors.ndim != 2:
        raise DataError(f"--index {path}: a {vectors.ndim}-d array; expected a matrix [N, D]")
    id_file = sidecar(path)
    if not id_file.is_file():
        raise DataError(f"--index {path}: no {id_file.name} beside it (the ids and metadata `deepstrata embed` "
                        "writes with a .npy)")
    from deepstrata import runfiles

    record = runfiles.read_json(id_file)
    meta = _meta(record, id_file, len(vectors), vectors.shape[1])
    ids, labels = record.get("ids"), record.get("labels")
    if not isinstance(ids, list) or not isinstance(labels, list) or not len(ids) == len(labels) == len(vectors):
        raise DataError(f"--index {id_file}: expected {len(vectors)} ids and labels, one per row of {path.name}")
    return Embeddings(vectors, [str(i) for i in ids], labels, meta, source=str(path))
