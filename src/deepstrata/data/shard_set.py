"""An opened shard set and how examples are read from it: sequential chunks and gathers.

These are the objects ``open_shards`` returns and the streaming image task reads from.
They hold only what the manifest said and each shard's data offset; every read is a
positioned read of whole examples (``Shard.read`` for a run, ``Shard.gather`` for any
rows), so memory stays bounded by what the caller asks for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from deepstrata.errors import DataError


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
    def preprocess(self) -> dict | None:
        """How the source's files became these pixels (``data.preprocess`` of a run), or None."""
        return self.manifest.get("preprocess")

    @property
    def seed(self) -> int:
        return int(self.manifest["split"]["seed"])

    @property
    def test_is_official(self) -> bool:
        return bool(self.manifest["split"].get("test_is_official", False))

    def nbytes(self, split: str) -> int:
        return self.splits[split].count * int(np.prod(self.image_shape))
