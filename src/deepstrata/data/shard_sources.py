"""Where shards come from: one ``ShardSource`` interface over in-memory sets and image folders.

``write_shards`` streams examples from a source; this module adapts what a user names
(a path, a data set name, an ``ImageDataset``) to that interface and computes ``fit``'s
split as positions into it, so the writer never holds a whole folder of pixels. Image
readers are imported when a source is opened, not with this module, so importing the
shard reader does not pull in Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from deepstrata.data.shard_format import MANIFEST
from deepstrata.data.shard_reader import is_shard_dir
from deepstrata.errors import DataError


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
        self.preprocess = dataset.preprocess  # how a folder's files became these pixels, or None

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

    def __init__(self, path: Path, image_size: int | None = None, skip_bad: bool = False, *,
                 model: str | None = None, device: str | None = None) -> None:
        """A fit that streams a folder over the memory budget names its ``model`` and ``device`` type: the
        size is then the size policy's (``image_preprocess.input_size``), as when the folder fits in memory;
        ``deepstrata shard`` names neither and keeps ``image_size`` or the most common size."""
        from deepstrata.data.image_files import THREADED_PIXELS, parallel_map, probe_image
        from deepstrata.data.image_folder import drop_bad, folder_geometry, folder_layout, scan_dir, sized_geometry
        from deepstrata.data.image_preprocess import Preprocess

        entries, labels, is_test, classes, notes = folder_layout(path, scan_dir(path))
        probes = parallel_map(lambda i: probe_image(entries[i].source), len(entries), threads=False)
        keep = drop_bad(entries, [p if isinstance(p, str) else None for p in probes], skip_bad, notes)
        if not keep:
            raise DataError(f"{path}: none of the {len(entries)} image files could be read")
        good = [probes[i] for i in keep]
        if model is not None or device is not None:
            channels, chosen = sized_geometry(good, image_size, notes, model=model, device=device, preprocess=None)
            size = (chosen.height, chosen.width)
        else:
            channels, size = folder_geometry(good, image_size, notes)
        main = [i for i in keep if not is_test[i]]
        test = [i for i in keep if is_test[i]]
        if not main:
            raise DataError(f"{path}: no readable training images left")
        self._entries = {"main": [entries[i] for i in main], "test": [entries[i] for i in test]}
        self.labels = np.array([labels[i] for i in main], dtype=np.int64)
        self.test_labels = np.array([labels[i] for i in test], dtype=np.int64) if test else None
        self.classes = classes
        self.image_shape = (channels, size[0], size[1])
        # Every file keeps its aspect (scaled to cover the size, centre-cropped), as fit reads folders;
        # the manifest records it so that predict on a shard-trained run repeats it.
        self._preprocess = Preprocess(size[0], size[1])
        self.preprocess = self._preprocess.record()
        self.source = str(path)
        self.format = "folder"
        self.notes = notes
        self.skip_bad = skip_bad
        self._threads = np.mean([w * h for _, (w, h) in good]) >= THREADED_PIXELS
        self.dropped = 0

    def read(self, part: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from deepstrata.data.image_files import decode_image, describe_error, parallel_map

        channels, height, width = self.image_shape
        entries = [self._entries[part][p] for p in positions]
        pixels = np.zeros((len(entries), height, width, channels), dtype=np.uint8)

        def decode(k: int) -> str | None:
            try:
                pixels[k] = decode_image(entries[k].source, channels, (height, width), self._preprocess)
            except Exception as exc:  # any decoder failure is a bad file, reported by name
                return describe_error(exc)
            return None

        errors = parallel_map(decode, len(entries), threads=self._threads)
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
        from deepstrata.data.image_archives import single_archive

        if single_archive(path) == path:
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
