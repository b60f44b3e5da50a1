"""Writing a shard directory: a source streamed, split as ``fit`` splits it, into ``.npy`` shards.

Writing streams: examples are read from the source in chunks of ``CHUNK_BYTES`` and
appended to the open shard. A folder of images is scanned (paths and image headers only),
split, and decoded chunk by chunk, so it never sits in memory whole; the fixed-size formats
(IDX, CIFAR, digits) and tar archives are read by ``images.load_images`` first (a tar.xz
has no random access) — unpack a larger-than-memory archive to a folder first. The split
is ``split.split_dataset`` with the same seed and fractions as ``fit``, so ``fit`` on the
shards trains, selects and tests on exactly the examples ``fit`` on the source would. The
training examples are shuffled once before they are written (a streaming reader only
mixes within its shuffle buffer, and folder order is sorted by class); val and test keep
the split's order.

Every file is written under a temporary name and renamed into place; ``index.json`` goes
last, and an existing manifest is removed before any shard is replaced, so an interrupted
write leaves a directory that no reader mistakes for a complete shard set.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import time
from pathlib import Path
from typing import Callable

import numpy as np

from deepstrata.data.shard_format import (
    DEFAULT_SHARD_SIZE, FORMAT_VERSION, MANIFEST, SHARD_FORMAT, SHARD_NAME, SPLIT_NAMES, parse_size, sha256_file,
)
from deepstrata.data.shard_reader import open_shards
from deepstrata.data.shard_set import ShardSet
from deepstrata.data.shard_sources import open_source, split_positions
from deepstrata.errors import ConfigError

CHUNK_BYTES = 32 * 2**20
LABEL_BYTES = 8


def _npy_header(shape: tuple[int, ...], length: int | None = None) -> bytes:
    """A version-1.0 ``.npy`` header for C-order uint8 ``shape``, padded with spaces to ``length`` bytes.

    A shard's header is written first for a full shard and rewritten in place for the
    count it ends with, which is never longer — so the data never moves.
    """
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (tuple(int(s) for s in shape),)
    minimal = 10 + len(text) + 1
    length = length if length is not None else -(-minimal // 64) * 64
    if minimal > length or length - 10 > 0xFFFF:
        raise ValueError(f"npy header for shape {shape} does not fit in {length} bytes")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", length - 10) + (text + " " * (length - minimal) + "\n").encode("latin1")


class _SplitWriter:
    """Appends one split's examples to shards of ``rows`` examples; each is renamed into place when full."""

    def __init__(self, out: Path, split: str, rows: int, shape: tuple[int, int, int]) -> None:
        self.out, self.split, self.rows, self.shape = out, split, rows, shape
        self.records: list[dict] = []
        self._handle = None
        self._labels: list[np.ndarray] = []
        self._filled = 0
        self._header_length = len(_npy_header((rows, *shape)))
        self.temporaries: list[Path] = []

    def _name(self, kind: str) -> str:
        return f"{self.split}-{len(self.records):05d}.{kind}.npy"

    def _open(self) -> None:
        tmp = self.out / f".{self._name('images')}.tmp"
        self.temporaries.append(tmp)
        self._handle = open(tmp, "wb")
        self._handle.write(_npy_header((self.rows, *self.shape), self._header_length))
        self._tmp = tmp

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        start = 0
        while start < len(images):
            if self._handle is None:
                self._open()
            take = min(self.rows - self._filled, len(images) - start)
            self._handle.write(np.ascontiguousarray(images[start:start + take]).tobytes())
            self._labels.append(np.asarray(labels[start:start + take], dtype=np.int64))
            self._filled += take
            start += take
            if self._filled == self.rows:
                self._finish()

    def _finish(self) -> None:
        handle, count = self._handle, self._filled
        handle.seek(0)
        handle.write(_npy_header((count, *self.shape), self._header_length))
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        images_name, labels_name = self._name("images"), self._name("labels")
        buffer = io.BytesIO()
        np.save(buffer, np.concatenate(self._labels))
        label_bytes = buffer.getvalue()
        labels_tmp = self.out / f".{labels_name}.tmp"
        self.temporaries.append(labels_tmp)
        with open(labels_tmp, "wb") as out:
            out.write(label_bytes)
            out.flush()
            os.fsync(out.fileno())
        record = {"images": images_name, "labels": labels_name, "count": count,
                  "sha256": {"images": sha256_file(self._tmp), "labels": hashlib.sha256(label_bytes).hexdigest()}}
        os.replace(self._tmp, self.out / images_name)
        os.replace(labels_tmp, self.out / labels_name)
        self.records.append(record)
        self._handle, self._labels, self._filled = None, [], 0

    def close(self) -> list[dict]:
        if self._handle is not None:
            self._finish()
        return self.records

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
        for tmp in self.temporaries:
            tmp.unlink(missing_ok=True)


def _prepare_out(out: Path, overwrite: bool) -> set[Path]:
    """Create ``out``; on overwrite, drop its manifest first and return its old shard files."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; expected a folder for the shards")
    out.mkdir(parents=True, exist_ok=True)
    present = [p for p in out.iterdir()]
    if not present:
        return set()
    if not overwrite:
        what = f"a shard set ({MANIFEST})" if (out / MANIFEST).exists() else "files"
        raise ConfigError(f"{out}: already holds {what}; use another --out or --overwrite")
    strangers = [p.name for p in present if p.name != MANIFEST and not SHARD_NAME.fullmatch(p.name)
                 and not (p.name.startswith(".") and p.name.endswith(".tmp"))]
    if strangers:
        raise ConfigError(f"{out}: holds {strangers[0]!r}, which is not a shard file; refusing to overwrite it")
    (out / MANIFEST).unlink(missing_ok=True)
    return {p for p in present if p.name != MANIFEST}


def _channel_histogram(images: np.ndarray) -> np.ndarray:
    """``[C, 256]`` counts of each pixel value per channel; mean and std follow exactly from it.

    Counted a slice at a time: ``bincount`` widens its input to int64, 8x the chunk.
    """
    n, channels = images.shape[:2]
    flat = images.reshape(n, channels, -1)
    hist = np.zeros((channels, 256), dtype=np.int64)
    step = max(1, 2**20 // flat.shape[2])
    for start in range(0, n, step):
        for c in range(channels):
            hist[c] += np.bincount(flat[start:start + step, c].ravel(), minlength=256)
    return hist


def _stats(hist: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std of pixels scaled to [0, 1], as ``channel_stats`` computes them."""
    values = np.arange(256, dtype=np.float64) / 255.0
    n = hist.sum(axis=1).astype(np.float64)
    mean = (hist * values).sum(axis=1) / np.maximum(n, 1)
    var = ((hist * values**2).sum(axis=1) - n * mean**2) / np.maximum(n - 1, 1)
    return mean.tolist(), np.sqrt(np.maximum(var, 0.0)).clip(min=1e-3).tolist()


def write_shards(
    source,
    out_dir: str | Path,
    shard_size: str | int = DEFAULT_SHARD_SIZE,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    format: str | None = None,
    image_size: int | None = None,
    skip_bad: bool = False,
    data_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ShardSet:
    """Write ``source`` (a name or path as ``fit`` takes, an ``ImageDataset`` or a ``ShardSource``)
    as train/val/test shards of about ``shard_size`` bytes each under ``out_dir``.

    The split is ``fit``'s for ``seed``, ``val_fraction`` and ``test_fraction``. Returns
    the opened ``ShardSet``.
    """
    size = parse_size(shard_size)
    out = Path(out_dir)
    started = time.perf_counter()
    say = progress or (lambda _message: None)
    src = open_source(source, format=format, image_size=image_size, skip_bad=skip_bad, data_dir=data_dir)
    shape = tuple(int(s) for s in src.image_shape)
    example_bytes = int(np.prod(shape))
    rows = size // (example_bytes + LABEL_BYTES)
    if rows < 1:
        raise ConfigError(f"shard_size: {size} bytes is smaller than one {'x'.join(map(str, shape))} image "
                          f"({example_bytes + LABEL_BYTES} bytes with its label)")
    parts, official = split_positions(src, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    old_files = _prepare_out(out, overwrite)
    chunk = max(1, min(rows, CHUNK_BYTES // example_bytes))
    hist = np.zeros((shape[0], 256), dtype=np.int64)
    splits: dict[str, dict] = {}
    writers: list[_SplitWriter] = []
    try:
        for split in SPLIT_NAMES:
            part, positions, labels = parts[split]
            if split == "train":
                order = np.random.default_rng([seed, 7]).permutation(len(positions))
                positions, labels = positions[order], labels[order]
            writer = _SplitWriter(out, split, rows, shape)
            writers.append(writer)
            for start in range(0, len(positions), chunk):
                images, ok = src.read(part, positions[start:start + chunk])
                chunk_labels = labels[start:start + chunk]
                if not ok.all():
                    images, chunk_labels = images[ok], chunk_labels[ok]
                writer.add(images, chunk_labels)
                if split == "train":
                    hist += _channel_histogram(images)
            records = writer.close()
            first = 0
            for record in records:
                record["first"] = first
                first += record["count"]
            counts = np.zeros(len(src.classes), dtype=np.int64)
            for record in records:
                counts += np.bincount(np.load(out / record["labels"]), minlength=len(src.classes))[: len(src.classes)]
            splits[split] = {"count": first, "class_counts": counts.tolist(), "shards": records}
            say(f"{split}: {first} images in {len(records)} shard(s)")
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    notes = list(src.notes)
    dropped = getattr(src, "dropped", 0)
    if dropped:
        notes.append(f"skipped {dropped} images that failed to decode after the split (--skip-bad)")
    mean, std = _stats(hist)
    from deepstrata import __version__

    manifest = {
        "format": SHARD_FORMAT,
        "version": FORMAT_VERSION,
        "layout": "npy: <split>-NNNNN.images.npy uint8 [n, C, H, W] + <split>-NNNNN.labels.npy int64 [n]",
        "created_by": f"deepstrata {__version__}",
        "source": src.source,
        "source_format": src.format,
        "classes": list(src.classes),
        "image_shape": list(shape),
        "dtype": "uint8",
        "shard_size_bytes": size,
        "examples_per_shard": rows,
        "split": {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
                  "test_is_official": official, "train_shuffled_with_seed": seed},
        "train_stats": {"mean": mean, "std": std},
        "notes": notes,
        "splits": splits,
    }
    if getattr(src, "preprocess", None) is not None:  # a folder's files: aspect kept, centre crop
        manifest["preprocess"] = src.preprocess
    from deepstrata.engine.checkpoint import atomic_write_json

    written = {out / r[kind] for s in splits.values() for r in s["shards"] for kind in ("images", "labels")}
    atomic_write_json(out / MANIFEST, manifest)
    for stale in old_files - written:
        stale.unlink(missing_ok=True)
    say(f"wrote {sum(len(s['shards']) for s in splits.values())} shards to {out} in "
        f"{time.perf_counter() - started:.1f}s")
    return open_shards(out)
