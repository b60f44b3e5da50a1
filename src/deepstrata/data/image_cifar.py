"""CIFAR-10 python batches, from a folder, a folder holding the ``.tar.gz``, or the archive.

A reader of its own because its batches are pickles: they are unpickled only through
``safe_pickle.restricted_load`` (a pickle can run code), and every shape, dtype and label
check that makes an untrusted batch safe to use lives here. ``CIFAR_BATCH`` and
``CIFAR_NAMES`` are public because format detection recognises a CIFAR set by them.
"""

from __future__ import annotations

import io
import re
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from deepstrata.data.image_archives import is_archive, single_archive
from deepstrata.data.image_dataset import ImageDataset
from deepstrata.data.image_files import describe_error
from deepstrata.data.safe_pickle import restricted_load
from deepstrata.errors import DataError

CIFAR_BATCH = re.compile(r"data_batch_(\d+)")
CIFAR_NAMES = ("batches.meta", "test_batch")


def read_cifar(path: str | Path) -> ImageDataset:
    """CIFAR-10 python batches: a folder, a folder holding the ``.tar.gz``, or the archive itself.

    Batches are unpickled by ``safe_pickle.restricted_load`` only: a pickle can run code.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir() and (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    path = single_archive(path)
    if path.is_dir() and (path / "cifar-10-python.tar.gz").is_file():
        path = path / "cifar-10-python.tar.gz"
    if path.is_dir():
        blobs = {f.name: (str(f), f.read_bytes()) for f in path.iterdir()
                 if f.is_file() and (CIFAR_BATCH.fullmatch(f.name) or f.name in CIFAR_NAMES)}
    elif is_archive(path):
        blobs = _cifar_members(path)
    else:
        raise DataError(f"{path}: expected a CIFAR-10 folder (data_batch_1..5, test_batch) or its .tar.gz")
    train = sorted((n for n in blobs if CIFAR_BATCH.fullmatch(n)),
                   key=lambda n: int(CIFAR_BATCH.fullmatch(n).group(1)))
    if not train:
        raise DataError(f"{path}: no CIFAR batches (data_batch_1..5) found")
    parts = [_cifar_batch(*blobs[n]) for n in train]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    y = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    if len(y) == 0:
        raise DataError(f"{path}: the CIFAR training batches hold no images")
    ds = ImageDataset(x=x, y=y, classes=[], source=str(path), format="cifar")
    if "test_batch" in blobs:
        tx, ty = _cifar_batch(*blobs["test_batch"])
        ds.test_x, ds.test_y = torch.from_numpy(tx), torch.from_numpy(ty)
    top = max(int(y.max()), int(ds.test_y.max()) if ds.test_y is not None and len(ds.test_y) else 0)
    if "batches.meta" in blobs:
        ds.classes = _cifar_classes(*blobs["batches.meta"], needed=top + 1)
    else:
        ds.classes = [str(i) for i in range(top + 1)]
        ds.notes.append("no batches.meta: classes are named by index")
    return ds


def _cifar_members(path: Path) -> dict[str, tuple[str, bytes]]:
    blobs = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and (CIFAR_BATCH.fullmatch(base) or base in CIFAR_NAMES):
                    blobs[base] = (f"{path}:{member.name}", tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar archive ({describe_error(exc)})") from None
    return blobs


def _unpickle_dict(name: str, data: bytes) -> dict[str, object]:
    obj = restricted_load(io.BytesIO(data), name=name)
    if not isinstance(obj, dict):
        raise DataError(f"{name}: not a CIFAR batch (a pickled {type(obj).__name__}, expected a dict)")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch as uint8 ``[N, 3, 32, 32]`` and int64 labels ``[N]``."""
    batch = _unpickle_dict(name, data)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{name}: not a CIFAR batch (expected b'data' and b'labels' entries)")
    pixels, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.shape[1] != 3072:
        shape = getattr(pixels, "shape", type(pixels).__name__)
        raise DataError(f"{name}: CIFAR data has shape {shape}, expected (N, 3072) = N x 3x32x32")
    if pixels.dtype != np.uint8 and not (pixels.dtype.kind in "iu" and pixels.size
                                         and 0 <= pixels.min() and pixels.max() <= 255):
        raise DataError(f"{name}: CIFAR data has dtype {pixels.dtype}, expected uint8")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(pixels):
        raise DataError(f"{name}: {labels.size} labels for {len(pixels)} images; expected one integer each")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{name}: negative class label {labels.min()}")
    return pixels.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_classes(name: str, data: bytes, needed: int) -> list[str]:
    names = _unpickle_dict(name, data).get("label_names")
    if not isinstance(names, list) or len(names) < needed:
        raise DataError(f"{name}: expected b'label_names' with at least {needed} class names")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
