"""Image classification data: four on-disk formats read into one ``ImageDataset``.

Everything downstream (models, baselines, inspection) sees the same thing: uint8
tensors ``[N, C, H, W]`` with int64 labels and class names, plus the official test
split when the format ships one. Readers decide channels and size once for the whole
set, so a model can be built from ``x.shape[1:]`` without looking at files again.
Every problem with a user's file raises DataError naming that file.

This module is the public face: ``load_images`` and ``detect_format`` choose a reader,
and every public name of the image readers is importable from here. The readers live in
their own modules — ``image_folder`` (class sub-folders), ``image_idx`` (MNIST-style),
``image_cifar`` (CIFAR-10 batches), ``image_archives`` (tar archives), ``image_files``
(probing and decoding one file), ``image_preprocess`` (the size policy, the aspect-keeping
resize a run records, the memory budget) and ``image_dataset`` (the ``ImageDataset`` they return).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from deepstrata.data import datasets
from deepstrata.data.image_archives import (
    ARCHIVE_SUFFIXES, TEXT_HINT, archive_file_names, holds_text_files, is_archive, single_archive,
)
from deepstrata.data.image_cifar import CIFAR_BATCH, CIFAR_NAMES, read_cifar
from deepstrata.data.image_dataset import ImageDataset
from deepstrata.data.image_files import IMAGE_EXTENSIONS, load_image_files
from deepstrata.data.image_folder import folder_geometry, list_image_files, read_image_folder
from deepstrata.data.image_idx import read_idx, read_idx_dir
from deepstrata.data.image_preprocess import Preprocess, input_size, memory_budget
from deepstrata.errors import DataError

__all__ = [
    "ARCHIVE_SUFFIXES", "FORMATS", "IMAGE_EXTENSIONS", "ImageDataset", "detect_format", "folder_geometry",
    "holds_text_files", "input_size", "list_image_files", "load_image_files", "load_images", "memory_budget",
    "Preprocess", "read_cifar", "read_digits", "read_idx", "read_idx_dir", "read_image_folder",
]

FORMATS = ("digits", "folder", "idx", "cifar")


def load_images(source: str, *, format: str | None = None, image_size: int | None = None,
                skip_bad: bool = False, data_dir: str | Path | None = None, model: str | None = None,
                device: str | None = None, preprocess: Preprocess | None = None) -> ImageDataset:
    """Read ``source``: ``"digits"``, a named set (``datasets.NAMED``, fetched), or a path.

    ``format`` overrides detection. ``image_size`` resizes to a square: folder images are
    resized as they are decoded, the fixed-size formats as whole tensors (squashed: they
    are square already). For an image folder, a fit passes its ``model`` and ``device``
    type (the size policy, aspect kept, see ``read_image_folder``) and a run's verbs the
    ``preprocess`` it recorded; the fixed-size formats ignore both.
    """
    if format is not None and format not in FORMATS:
        raise DataError(f"format: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size: expected a positive integer, got {image_size!r}")
    name = str(source)
    if format == "digits" or (format is None and name == "digits"):
        return _resized(read_digits(), image_size)
    path = Path(name).expanduser()
    named = datasets.canonical_name(name)
    if named is not None and not path.exists():
        path = datasets.fetch(named, data_dir)
        fmt = format or datasets.NAMED[named].format
    else:
        named = None
        fmt = format or detect_format(path)
    if fmt == "folder":
        return read_image_folder(path, image_size=image_size, skip_bad=skip_bad, model=model, device=device,
                                 preprocess=preprocess)
    ds = read_idx_dir(path) if fmt == "idx" else read_cifar(path)
    if named is not None:
        spec = datasets.NAMED[named]
        ds.source = f"{named} ({path})"
        if spec.classes and len(spec.classes) == len(ds.classes):
            ds.classes = list(spec.classes)
    return _resized(ds, image_size)


def detect_format(path: str | Path) -> str:
    """Tell ``"idx"``, ``"cifar"`` or ``"folder"`` from what ``path`` holds."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    path = single_archive(path)
    if path.is_dir():
        names = [entry.name for entry in path.iterdir() if not entry.name.startswith(".")]
        if any(n.startswith(("train-images-idx3", "train-images.idx3")) for n in names):
            return "idx"
        if any(n in ("cifar-10-batches-py", "cifar-10-python.tar.gz") or CIFAR_BATCH.fullmatch(n)
               for n in names):
            return "cifar"
        if any((path / n).is_dir() or n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
            return "folder"
        raise DataError(f"{path}: cannot tell the data format; expected class sub-folders of images, "
                        "IDX files (train-images-idx3-ubyte[.gz]) or CIFAR batches (data_batch_1..5)")
    if is_archive(path):
        for base in archive_file_names(path, limit=64):
            if CIFAR_BATCH.fullmatch(base) or base in CIFAR_NAMES:
                return "cifar"
            if base.lower().endswith(IMAGE_EXTENSIONS):
                return "folder"
        raise DataError(f"{path}: archive holds neither CIFAR batches nor image files in its first entries",
                        hint=TEXT_HINT if holds_text_files(path) else None)
    raise DataError(f"{path}: not a data set; expected a folder or a .tar[.gz|.xz] archive")


def _digits_file() -> Path:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (1.6 s of a CLI fit)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("digits: scikit-learn is not installed (its bundled digits are the data set)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"digits: {path} not found in the scikit-learn installation")
    return path


def read_digits() -> ImageDataset:
    """scikit-learn's bundled 8x8 digits, pixels 0..16 scaled to 0..255: ``[1797, 1, 8, 8]``.

    Read as ``sklearn.datasets.load_digits`` reads it (the CSV's 64 pixel columns and its
    label column; tests/data compares the two), without scikit-learn's import.
    """
    with gzip.open(_digits_file(), "rt", encoding="ascii") as handle:
        table = np.loadtxt(handle, delimiter=",")
    images = table[:, :-1].reshape(-1, 8, 8)
    target = table[:, -1].astype(np.int64)
    pixels = np.rint(images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    x = torch.from_numpy(pixels).unsqueeze(1)
    y = torch.from_numpy(target)
    return ImageDataset(x=x, y=y, classes=[str(c) for c in range(10)],
                        source=f"digits (scikit-learn bundled, {len(y)} images)", format="digits")


def _resized(ds: ImageDataset, image_size: int | None) -> ImageDataset:
    """Resize fixed-size formats to ``image_size`` squared (bilinear, antialiased)."""
    if image_size is None or tuple(ds.x.shape[2:]) == (image_size, image_size):
        return ds
    h, w = ds.x.shape[2:]
    ds.x = _resize_tensor(ds.x, image_size)
    if ds.test_x is not None:
        ds.test_x = _resize_tensor(ds.test_x, image_size)
    ds.notes.append(f"resized from {w}x{h} to {image_size}x{image_size}")
    return ds


def _resize_tensor(x: torch.Tensor, side: int, batch: int = 4096) -> torch.Tensor:
    out = [torch.nn.functional.interpolate(x[i:i + batch].float(), size=(side, side), mode="bilinear",
                                           antialias=True, align_corners=False).round_().clamp_(0, 255)
           .to(torch.uint8) for i in range(0, len(x), batch)]
    return torch.cat(out) if out else x.new_empty((0, x.shape[1], side, side))
