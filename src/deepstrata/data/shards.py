"""Image data sets larger than memory: shards of fixed-shape ``.npy`` arrays and a manifest.

Layout of a shard directory (``deepstrata shard --data SOURCE --out shards/``)::

    index.json                  the manifest: format marker, classes, image shape, split
                                counts, per-channel statistics, every shard with its count
                                and sha256 — written last
    train-00000.images.npy      uint8 [n, C, H, W], C-order, version-1.0 .npy header
    train-00000.labels.npy      int64 [n]
    ...  val-00000.*  test-00000.*

Why memory-mappable arrays and not WebDataset tar shards: deepstrata's image tasks work on
fixed-shape uint8 tensors, and every reader already decides one shape for the whole set.
A fixed-shape array costs nothing to decode (a training step copies bytes, where a tar of
JPEGs spends a CPU core per few thousand images decoding them on every epoch), example
``i`` of a shard is at a known byte offset (random access with ``np.load(mmap_mode="r")``
or one ``pread``, which makes resuming mid-epoch and sampling for baselines cheap), and a
shard is checkable from its header and size alone. Tars win for variable-size encoded
files (photos kept compressed, audio, text), which is not what these shards hold; the
price here is disk space, since pixels are stored decoded (CIFAR-size images: 3 KB each).

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
import json
import os
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from deepstrata.errors import ConfigError, DataError

SHARD_FORMAT = "deepstrata-shards"
FORMAT_VERSION = 1
MANIFEST = "index.json"
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_SHARD_SIZE = "256MB"
CHUNK_BYTES = 32 * 2**20
LABEL_BYTES = 8
_UNITS = {"": 1, "b": 1, "kb": 10**3, "k": 10**3, "mb": 10**6, "m": 10**6, "gb": 10**9, "g": 10**9,
          "tb": 10**12, "t": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")
_SHARD_NAME = re.compile(r"(train|val|test)-\d{5}\.(images|labels)\.npy")


def parse_size(value: str | int, key: str = "shard_size") -> int:
    """Bytes in ``"256MB"``, ``"1GB"``, ``"500kB"``, ``"64MiB"`` or a plain count of bytes.

    Units are decimal (kB = 1000 bytes, MB = 10^6) unless binary (KiB, MiB, GiB); case is
    ignored. Anything else, zero or negative, is a ``ConfigError`` naming ``key``.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{key}: got {value!r}, expected a size such as 256MB, 1GB, 500kB or a number of bytes")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ConfigError(f"{key}: got {value!r}, expected a size such as 256MB, 1GB, 500kB, 64MiB "
                              "or a number of bytes")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"{key}: got {value!r}, expected a positive size")
    return size


# --- sources -----------------------------------------------------------------------------

class ShardSource(Protocol):
    """What ``write_shards`` streams from. ``labels`` are the examples ``fit`` splits into
    train/val(/test); ``test_labels`` an official test split kept whole (or None).
    ``read(part, positions)`` returns uint8 ``[k, C, H, W]`` for positions of ``part``
    (``"main"`` or ``"test"``) and a bool ``[k]`` mask of the readable ones."""

    classes: list[str]
    image_shape: tuple[int, int, int]
    labels: np.ndarray
    test_labels: np.ndarray | None
    source: str
    format: str
    notes: list[str]

    def read(self, part: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class TensorSource:
    """An ``ImageDataset`` already in memory (digits, IDX, CIFAR, archives)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.classes = list(dataset.classes)
        self.image_shape = tuple(int(s) for s in dataset.x.shape[1:])
        self.labels = dataset.y.numpy()
        self.test_labels = dataset.test_y.numpy() if dataset.test_y is not None else None
        self.source = dataset.source or "in-memory images"
        self.format = dataset.format or "tensors"
        self.notes = list(dataset.notes)

    def read(self, part: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.dataset.test_x if part == "test" else self.dataset.x
        images = x[torch.from_numpy(positions.astype(np.int64))].numpy()
        return images, np.ones(len(positions), dtype=bool)


class FolderSource:
    """A folder of class sub-folders, read the way ``images.read_image_folder`` reads it —
    same classes, order, channels, size and bad-file rules — but decoded only when asked.

    Scanning keeps paths and image headers (a few dozen bytes per image), so the set can
    be far larger than memory. A file whose header reads but whose body does not decode is
    found only when its chunk is written: with ``skip_bad`` it is dropped then (after the
    split, so that split differs from ``fit``'s on the folder by those files, counted in
    the manifest's notes); without, it is a ``DataError`` naming the file.
    """

    def __init__(self, path: Path, image_size: int | None = None, skip_bad: bool = False) -> None:
        from deepstrata.data import images as im

        self._im = im
        entries, labels, is_test, classes, notes = im._layout(path, im._scan_dir(path))
        probes = im._parallel(lambda i: im._probe(entries[i].source), len(entries), threads=False)
        keep = im._drop_bad(entries, [p if isinstance(p, str) else None for p in probes], skip_bad, notes)
        if not keep:
            raise DataError(f"{path}: none of the {len(entries)} image files could be read")
        good = [probes[i] for i in keep]
        channels, size = im.folder_geometry(good, image_size, notes)
        main = [i for i in keep if not is_test[i]]
        test = [i for i in keep if is_test[i]]
        if not main:
            raise DataError(f"{path}: no readable training images left")
        self._entries = {"main": [entries[i] for i in main], "test": [entries[i] for i in test]}
        self.labels = np.array([labels[i] for i in main], dtype=np.int64)
        self.test_labels = np.array([labels[i] for i in test], dtype=np.int64) if test else None
        self.classes = classes
        self.image_shape = (channels, size[0], size[1])
        self.source = str(path)
        self.format = "folder"
        self.notes = notes
        self.skip_bad = skip_bad
        self._threads = np.mean([w * h for _, (w, h) in good]) >= im._THREADED_PIXELS
        self.dropped = 0

    def read(self, part: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        channels, height, width = self.image_shape
        entries = [self._entries[part][p] for p in positions]
        pixels = np.zeros((len(entries), height, width, channels), dtype=np.uint8)

        def decode(k: int) -> str | None:
            try:
                pixels[k] = self._im._decode(entries[k].source, channels, (height, width))
            except Exception as exc:  # any decoder failure is a bad file, reported by name
                return self._im._describe(exc)
            return None

        errors = self._im._parallel(decode, len(entries), threads=self._threads)
        ok = np.array([err is None for err in errors], dtype=bool)
        if not ok.all():
            first = int(np.flatnonzero(~ok)[0])
            if not self.skip_bad:
                raise DataError(f"{entries[first].name}: unreadable image ({errors[first]}); "
                                "skip_bad=True (--skip-bad) skips such files")
            self.dropped += int((~ok).sum())
        return pixels.transpose(0, 3, 1, 2), ok


def open_source(source, *, format: str | None = None, image_size: int | None = None, skip_bad: bool = False,
                data_dir: str | Path | None = None) -> ShardSource:
    """A ``ShardSource`` for an ``ImageDataset``, a source object, or a source name/path.

    Image folders on disk stream (``FolderSource``); everything else is loaded by
    ``images.load_images`` with the same options ``fit`` takes.
    """
    from deepstrata.data.images import ImageDataset, detect_format, load_images

    if isinstance(source, ImageDataset):
        return TensorSource(source)
    if not isinstance(source, (str, Path)):
        if all(hasattr(source, name) for name in ("classes", "image_shape", "labels", "read")):
            return source
        raise DataError(f"source: expected a data set name, a path or an ImageDataset, got {type(source).__name__}")
    path = Path(source).expanduser()
    if path.is_dir() and is_shard_dir(path):
        raise DataError(f"{path}: already a shard directory ({MANIFEST}); shard the original source instead")
    if format in (None, "folder") and path.is_dir() and (format == "folder" or detect_format(path) == "folder"):
        from deepstrata.data.images import _single_archive

        if _single_archive(path) == path:
            return FolderSource(path, image_size=image_size, skip_bad=skip_bad)
    return TensorSource(load_images(str(source), format=format, image_size=image_size, skip_bad=skip_bad,
                                    data_dir=data_dir))


@dataclass
class _Positions:
    """What ``split_dataset`` reads; ``x`` holds positions, so the split returns indices."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None


def split_positions(src: ShardSource, *, seed: int, val_fraction: float, test_fraction: float):
    """``{split: (part, positions, labels)}`` and whether the test split is official — ``fit``'s split."""
    from deepstrata.data.split import split_dataset

    labels = np.asarray(src.labels, dtype=np.int64)
    test = src.test_labels
    proxy = _Positions(
        x=torch.arange(len(labels)), y=torch.from_numpy(labels), classes=list(src.classes),
        test_x=torch.arange(len(test)) if test is not None else None,
        test_y=torch.from_numpy(np.asarray(test, dtype=np.int64)) if test is not None else None,
    )
    s = split_dataset(proxy, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    parts = {
        "train": ("main", s.train_x.numpy(), s.train_y.numpy()),
        "val": ("main", s.val_x.numpy(), s.val_y.numpy()),
        "test": ("test" if s.test_is_official else "main", s.test_x.numpy(), s.test_y.numpy()),
    }
    return parts, s.test_is_official


# --- writing -----------------------------------------------------------------------------

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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()


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
                  "sha256": {"images": _sha256(self._tmp), "labels": hashlib.sha256(label_bytes).hexdigest()}}
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
    strangers = [p.name for p in present if p.name != MANIFEST and not _SHARD_NAME.fullmatch(p.name)
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
) -> "ShardSet":
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
    from deepstrata.engine.checkpoint import atomic_write_json

    written = {out / r[kind] for s in splits.values() for r in s["shards"] for kind in ("images", "labels")}
    atomic_write_json(out / MANIFEST, manifest)
    for stale in old_files - written:
        stale.unlink(missing_ok=True)
    say(f"wrote {sum(len(s['shards']) for s in splits.values())} shards to {out} in "
        f"{time.perf_counter() - started:.1f}s")
    return open_shards(out)


# --- reading -----------------------------------------------------------------------------

def _read_exact(handle, view: memoryview, path: Path) -> None:
    done = 0
    while done < len(view):
        got = handle.readinto(view[done:])
        if not got:
            raise DataError(f"{path}: truncated shard (ended {len(view) - done} bytes early)")
        done += got


@dataclass(frozen=True)
class Shard:
    """One shard: ``count`` examples; the first is example ``first`` of its split."""

    images: Path
    labels: Path
    count: int
    first: int
    shape: tuple[int, int, int]
    offset: int
    sha256: dict = field(default_factory=dict)

    @property
    def example_bytes(self) -> int:
        return int(np.prod(self.shape))

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Examples ``start:stop`` as uint8 ``[stop - start, C, H, W]``, read with one positioned read."""
        n = stop - start
        out = np.empty((n, *self.shape), dtype=np.uint8) if out is None else out
        try:
            with open(self.images, "rb", buffering=0) as handle:
                handle.seek(self.offset + start * self.example_bytes)
                _read_exact(handle, memoryview(out).cast("B"), self.images)
        except FileNotFoundError:
            raise DataError(f"{self.images}: shard file missing") from None
        return out

    def gather(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Examples at ``rows`` (any order) into ``out`` ``[len(rows), C, H, W]``."""
        size = self.example_bytes
        try:
            fd = os.open(self.images, os.O_RDONLY)
        except FileNotFoundError:
            raise DataError(f"{self.images}: shard file missing") from None
        try:
            for k, row in enumerate(rows):
                data = os.pread(fd, size, self.offset + int(row) * size)
                if len(data) != size:
                    raise DataError(f"{self.images}: truncated shard (example {int(row)} is cut short)")
                out[k] = np.frombuffer(data, dtype=np.uint8).reshape(self.shape)
        finally:
            os.close(fd)

    def read_labels(self) -> np.ndarray:
        try:
            labels = np.load(self.labels, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{self.labels}: shard file missing") from None
        except ValueError as exc:
            raise DataError(f"{self.labels}: not a readable .npy file ({exc})") from None
        if labels.shape != (self.count,):
            raise DataError(f"{self.labels}: {labels.shape[0] if labels.ndim else 0} labels, "
                            f"expected {self.count} (index.json)")
        return labels.astype(np.int64, copy=False)


@dataclass(frozen=True)
class SplitShards:
    """The shards of one split, in manifest order; example ids run ``0..count-1`` across them."""

    name: str
    count: int
    class_counts: list[int]
    shards: tuple[Shard, ...]

    def chunks(self, size: int, part: int = 0, parts: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Sequential ``(images uint8 [k, C, H, W], labels int64 [k])`` chunks of at most ``size``;
        with ``parts`` > 1 only chunks number ``part``, ``part + parts``, ... are read (one process's share)."""
        number = 0
        for shard in self.shards:
            labels = None
            for start in range(0, shard.count, size):
                number += 1
                if (number - 1) % parts != part:
                    continue
                labels = shard.read_labels() if labels is None else labels
                stop = min(shard.count, start + size)
                yield shard.read(start, stop), labels[start:stop]

    def gather(self, ids: np.ndarray, images: np.ndarray, labels: np.ndarray) -> None:
        """Examples with split-wide ``ids`` into ``images`` ``[k, C, H, W]`` and ``labels`` ``[k]``, in order."""
        ids = np.asarray(ids, dtype=np.int64)
        firsts = np.array([s.first for s in self.shards], dtype=np.int64)
        which = np.searchsorted(firsts, ids, side="right") - 1
        for index in np.unique(which):
            shard = self.shards[index]
            where = np.flatnonzero(which == index)
            rows = ids[where] - shard.first
            block = np.empty((len(where), *shard.shape), dtype=np.uint8)
            shard.gather(rows, block)
            images[where] = block
            labels[where] = shard.read_labels()[rows]


@dataclass(frozen=True)
class ShardSet:
    """An opened shard directory: what ``index.json`` says, checked against the files."""

    root: Path
    classes: list[str]
    image_shape: tuple[int, int, int]
    splits: dict[str, SplitShards]
    mean: list[float]
    std: list[float]
    manifest: dict

    @property
    def source(self) -> str:
        return str(self.manifest.get("source", ""))

    @property
    def notes(self) -> list[str]:
        return list(self.manifest.get("notes", []))

    @property
    def seed(self) -> int:
        return int(self.manifest["split"]["seed"])

    @property
    def test_is_official(self) -> bool:
        return bool(self.manifest["split"].get("test_is_official", False))

    def nbytes(self, split: str) -> int:
        return self.splits[split].count * int(np.prod(self.image_shape))


def is_shard_dir(path: str | Path) -> bool:
    """Whether ``path`` is meant as a shard directory: its ``index.json`` carries the format
    marker, cannot be read (so opening it reports why), or is missing beside shard files."""
    path = Path(path)
    if not path.is_dir():
        return False
    manifest = path / MANIFEST
    if not manifest.is_file():
        return any(_SHARD_NAME.fullmatch(p.name) for p in path.iterdir())
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True
    return isinstance(raw, dict) and raw.get("format") == SHARD_FORMAT


def _need(raw: dict, key: str, kind: type | tuple, where: Path, prefix: str = ""):
    if not isinstance(raw, dict) or key not in raw:
        raise DataError(f"{where}: missing key {prefix}{key!r}")
    value = raw[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DataError(f"{where}: key {prefix}{key!r} has the wrong type ({type(value).__name__})")
    return value


def _open_shard(root: Path, manifest_path: Path, split: str, index: int, record: dict,
                shape: tuple[int, int, int]) -> Shard:
    prefix = f"splits.{split}.shards[{index}]."
    images = root / _need(record, "images", str, manifest_path, prefix)
    labels = root / _need(record, "labels", str, manifest_path, prefix)
    count = _need(record, "count", int, manifest_path, prefix)
    first = _need(record, "first", int, manifest_path, prefix)
    for path in (images, labels):
        if path.parent != root:
            raise DataError(f"{manifest_path}: shard name {path.name!r} in {prefix[:-1]} must be a file name "
                            "inside the shard directory")
        if not path.is_file():
            raise DataError(f"{path}: shard file missing (listed in {manifest_path})")
    try:
        with open(images, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            file_shape, fortran, dtype = reader(handle)
            offset = handle.tell()
    except (ValueError, OSError) as exc:
        raise DataError(f"{images}: not a readable .npy shard ({str(exc).splitlines()[0]})") from None
    expected = (count, *shape)
    if tuple(file_shape) != expected or fortran or dtype != np.uint8:
        raise DataError(f"{images}: holds {dtype} {list(file_shape)}, expected uint8 {list(expected)} ({manifest_path})")
    size = offset + count * int(np.prod(shape))
    if images.stat().st_size != size:
        raise DataError(f"{images}: {images.stat().st_size} bytes, expected {size}; the shard is truncated or "
                        "was changed after writing")
    return Shard(images, labels, count, first, shape, offset, dict(record.get("sha256", {})))


def open_shards(path: str | Path) -> ShardSet:
    """Open a shard directory, checking the manifest and every shard's header and size (not checksums:
    ``verify_shards`` reads every byte). Problems are ``DataError``s naming the file."""
    root = Path(path).expanduser()
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise DataError(f"{root}: no such shard directory")
    if not manifest_path.is_file():
        raise DataError(f"{manifest_path}: missing; a complete shard directory has one (it is written last, so "
                        "an interrupted `deepstrata shard` leaves none — run it again)")
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{manifest_path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{manifest_path}: cannot read ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != SHARD_FORMAT:
        raise DataError(f"{manifest_path}: not a deepstrata shard manifest (expected \"format\": \"{SHARD_FORMAT}\")")
    if raw.get("version") != FORMAT_VERSION:
        raise DataError(f"{manifest_path}: shard format version {raw.get('version')!r}; this deepstrata reads "
                        f"version {FORMAT_VERSION}")
    classes = _need(raw, "classes", list, manifest_path)
    shape = tuple(_need(raw, "image_shape", list, manifest_path))
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise DataError(f"{manifest_path}: image_shape must be [C, H, W] of positive integers, got {list(shape)}")
    stats = _need(raw, "train_stats", dict, manifest_path)
    _need(_need(raw, "split", dict, manifest_path), "seed", int, manifest_path, "split.")
    splits_raw = _need(raw, "splits", dict, manifest_path)
    splits = {}
    for name in SPLIT_NAMES:
        entry = _need(splits_raw, name, dict, manifest_path, "splits.")
        records = _need(entry, "shards", list, manifest_path, f"splits.{name}.")
        shards = tuple(_open_shard(root, manifest_path, name, i, r, shape) for i, r in enumerate(records))
        count = _need(entry, "count", int, manifest_path, f"splits.{name}.")
        if count != sum(s.count for s in shards):
            raise DataError(f"{manifest_path}: splits.{name}.count is {count} but its shards hold "
                            f"{sum(s.count for s in shards)}")
        splits[name] = SplitShards(name, count, list(entry.get("class_counts", [])), shards)
    return ShardSet(root, [str(c) for c in classes], shape, splits,
                    list(_need(stats, "mean", list, manifest_path, "train_stats.")),
                    list(_need(stats, "std", list, manifest_path, "train_stats.")), raw)


def verify_shards(path: str | Path) -> int:
    """Check every shard's sha256 against ``index.json``; the number of files checked."""
    shards = open_shards(path)
    checked = 0
    for split in shards.splits.values():
        for shard in split.shards:
            for kind, file in (("images", shard.images), ("labels", shard.labels)):
                expected = shard.sha256.get(kind)
                if expected is None:
                    raise DataError(f"{shards.root / MANIFEST}: no sha256 for {file.name}")
                if _sha256(file) != expected:
                    raise DataError(f"{file}: sha256 differs from {MANIFEST}; the shard is corrupt")
                checked += 1
    return checked
