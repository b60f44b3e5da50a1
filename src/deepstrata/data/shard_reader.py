"""Opening a shard directory: recognising one, checking its manifest and files, verifying checksums.

Everything that can be wrong with a shard directory on disk (a missing or foreign
manifest, a wrong version, a shard whose header or size disagrees with the manifest, a
changed byte) is found here and reported as a ``DataError`` naming the file, before any
training step reads from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deepstrata.data.shard_format import FORMAT_VERSION, MANIFEST, SHARD_FORMAT, SHARD_NAME, SPLIT_NAMES, sha256_file
from deepstrata.data.shard_set import Shard, ShardSet, SplitShards
from deepstrata.errors import DataError


def is_shard_dir(path: str | Path) -> bool:
    """Whether ``path`` is meant as a shard directory: its ``index.json`` carries the format
    marker, cannot be read (so opening it reports why), or is missing beside shard files."""
    path = Path(path)
    if not path.is_dir():
        return False
    manifest = path / MANIFEST
    if not manifest.is_file():
        return any(SHARD_NAME.fullmatch(p.name) for p in path.iterdir())
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
                if sha256_file(file) != expected:
                    raise DataError(f"{file}: sha256 differs from {MANIFEST}; the shard is corrupt")
                checked += 1
    return checked
