"""IDX files (MNIST, Fashion-MNIST): the header-described binary arrays, raw or gzipped.

A reader of its own because IDX is a format with its own failure modes (magic numbers,
truncated headers, label/image count mismatches), each reported as a ``DataError``
naming the file; nothing else in the image readers shares them.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from deepstrata.data.image_dataset import ImageDataset
from deepstrata.data.image_files import describe_error
from deepstrata.errors import DataError

_IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file, gzip-compressed or raw, as an array of the dtype its header names."""
    path = Path(path)
    return _parse_idx(_read_maybe_gzip(path), path)


def read_idx_dir(path: str | Path) -> ImageDataset:
    """MNIST-style folder: train-/t10k- images (idx3) and labels (idx1), ``.gz`` or raw."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: expected a folder of IDX files (train-images-idx3-ubyte[.gz], ...)")
    # The test pair is decompressed on a second thread while this one reads the training
    # pair (zlib releases the GIL); a training-pair error is still the one raised first.
    with ThreadPoolExecutor(1) as pool:
        test = pool.submit(_idx_pair, path, "t10k", required=False)
        x, y = _idx_pair(path, "train", required=True)
        test_x, test_y = test.result()
    top = max(int(y.max()), int(test_y.max()) if test_y is not None and len(test_y) else 0)
    return ImageDataset(x=x, y=y, classes=[str(i) for i in range(top + 1)], test_x=test_x,
                        test_y=test_y, source=str(path), format="idx")


def _idx_pair(folder: Path, prefix: str, required: bool):
    images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        if required or images is not None or labels is not None:
            missing = f"{prefix}-images-idx3-ubyte" if images is None else f"{prefix}-labels-idx1-ubyte"
            raise DataError(f"{folder / missing}[.gz]: missing; expected MNIST-style IDX files")
        return None, None
    x = _parse_idx(_read_maybe_gzip(images), images, expected=0x0803, kind="image")
    y = _parse_idx(_read_maybe_gzip(labels), labels, expected=0x0801, kind="label")
    if len(x) != len(y):
        raise DataError(f"{labels}: {len(y)} labels, but {images.name} holds {len(x)} images")
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem.replace("-idx", ".idx")):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip data ({describe_error(exc)})") from None


def _parse_idx(data: bytes, path: Path, expected: int | None = None, kind: str = "") -> np.ndarray:
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic is None:
        raise DataError(f"{path}: too short for an IDX file ({len(data)} bytes)")
    if expected is not None and magic != expected:
        raise DataError(f"{path}: not an IDX {kind} file "
                        f"(magic number 0x{magic:08X}, expected 0x{expected:08X})")
    if data[0] or data[1] or data[2] not in _IDX_TYPES or data[3] == 0:
        raise DataError(f"{path}: not an IDX file (magic number 0x{magic:08X}, expected 0x0000TTDD "
                        "with type TT in 08,09,0B,0C,0D,0E)")
    ndim, header = data[3], 4 + 4 * data[3]
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    count = int(np.prod(shape, dtype=np.int64))
    need, have = count * dtype.itemsize, len(data) - header
    if have != need:
        problem = "truncated IDX file" if have < need else "IDX file with trailing bytes"
        raise DataError(f"{path}: {problem} ({have} data bytes, expected {need} for shape {shape})")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))
