"""Image classification data: four on-disk formats read into one ``ImageDataset``.

Everything downstream (models, baselines, inspection) sees the same thing: uint8
tensors ``[N, C, H, W]`` with int64 labels and class names, plus the official test
split when the format ships one. Readers decide channels and size once for the whole
set, so a model can be built from ``x.shape[1:]`` without looking at files again.
Every problem with a user's file raises DataError naming that file.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import tarfile
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from PIL import Image

from deepstrata.data import datasets
from deepstrata.data.safe_pickle import restricted_load
from deepstrata.errors import DataError

FORMATS = ("digits", "folder", "idx", "cifar")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_CIFAR_BATCH = re.compile(r"data_batch_(\d+)")
_CIFAR_NAMES = ("batches.meta", "test_batch")
_HEAD = 1 << 16
_THREADED_PIXELS = 48 * 48
_T = TypeVar("_T")


@dataclass
class ImageDataset:
    """Images as uint8 ``[N, C, H, W]`` (C is 1 or 3), labels int64 ``[N]``, class names."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    source: str = ""
    format: str = ""
    notes: list[str] = field(default_factory=list)


def load_images(source: str, *, format: str | None = None, image_size: int | None = None,
                skip_bad: bool = False, data_dir: str | Path | None = None) -> ImageDataset:
    """Read ``source``: ``"digits"``, a named set (``datasets.NAMED``, fetched), or a path.

    ``format`` overrides detection. ``image_size`` resizes to a square: folder images are
    resized as they are decoded, the fixed-size formats as whole tensors.
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
        return read_image_folder(path, image_size=image_size, skip_bad=skip_bad)
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
    path = _single_archive(path)
    if path.is_dir():
        names = [entry.name for entry in path.iterdir() if not entry.name.startswith(".")]
        if any(n.startswith(("train-images-idx3", "train-images.idx3")) for n in names):
            return "idx"
        if any(n in ("cifar-10-batches-py", "cifar-10-python.tar.gz") or _CIFAR_BATCH.fullmatch(n)
               for n in names):
            return "cifar"
        if any((path / n).is_dir() or n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
            return "folder"
        raise DataError(f"{path}: cannot tell the data format; expected class sub-folders of images, "
                        "IDX files (train-images-idx3-ubyte[.gz]) or CIFAR batches (data_batch_1..5)")
    if _is_archive(path):
        for base in _archive_file_names(path, limit=64):
            if _CIFAR_BATCH.fullmatch(base) or base in _CIFAR_NAMES:
                return "cifar"
            if base.lower().endswith(IMAGE_EXTENSIONS):
                return "folder"
        raise DataError(f"{path}: archive holds neither CIFAR batches nor image files in its first entries",
                        hint=_TEXT_HINT if holds_text_files(path) else None)
    raise DataError(f"{path}: not a data set; expected a folder or a .tar[.gz|.xz] archive")


def read_digits() -> ImageDataset:
    """scikit-learn's bundled 8x8 digits, pixels 0..16 scaled to 0..255: ``[1797, 1, 8, 8]``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    x = torch.from_numpy(pixels).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return ImageDataset(x=x, y=y, classes=[str(c) for c in bunch.target_names],
                        source=f"digits (scikit-learn bundled, {len(y)} images)", format="digits")


# --- folders of class sub-folders --------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]
    name: str
    source: str | bytes


def folder_geometry(
    good: list[tuple[str, tuple[int, int]]], image_size: int | None, notes: list[str]
) -> tuple[int, tuple[int, int]]:
    """Channels and (height, width) for a folder's readable images, given their (mode, size) probes.

    Gray only if every image is gray; the size is ``image_size`` or the most common one.
    What was decided is appended to ``notes`` so the run can state it.
    """
    channels = 1 if all(mode in _GRAY_MODES for mode, _ in good) else 3
    if image_size is not None:
        size = (image_size, image_size)
        resized = sum(s != (image_size, image_size) for _, s in good)
        if resized:
            notes.append(f"resized {resized} of {len(good)} images to {image_size}x{image_size}")
    else:
        (w, h), count = Counter(s for _, s in good).most_common(1)[0]
        size = (h, w)
        notes.append(f"image size {w}x{h}: the most common size ({count} of {len(good)} images)")
        if count < len(good):
            notes.append(f"resized {len(good) - count} images of other sizes to {w}x{h}")
    if channels == 3 and any(mode in _GRAY_MODES for mode, _ in good):
        notes.append("converted grayscale images to RGB (the set mixes gray and color)")
    return channels, size


def read_image_folder(path: str | Path, image_size: int | None = None,
                      skip_bad: bool = False) -> ImageDataset:
    """Read ``root/<class>/*`` or ``root/{train,test}/<class>/*``, a folder or a tar archive.

    A single top-level folder holding only folders is looked through (archives usually
    wrap their content in one). Grayscale (C=1) only if every image is single-channel.
    Without ``image_size`` the most common size wins and other images are resized to it.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    path = _single_archive(path)
    if path.is_dir():
        entries = _scan_dir(path)
    elif _is_archive(path):
        entries = _scan_archive(path)
    else:
        raise DataError(f"{path}: not a folder or a .tar[.gz|.xz] archive of images")
    entries, labels, is_test, classes, notes = _layout(path, entries)

    probes = _parallel(lambda i: _probe(entries[i].source), len(entries), threads=False)
    keep = _drop_bad(entries, [p if isinstance(p, str) else None for p in probes], skip_bad, notes)
    if not keep:
        raise DataError(f"{path}: none of the {len(entries)} image files could be read")
    good = [probes[i] for i in keep]
    channels, size = folder_geometry(good, image_size, notes)

    pixels = np.empty((len(keep), size[0], size[1], channels), dtype=np.uint8)

    def decode(k: int) -> str | None:
        try:
            pixels[k] = _decode(entries[keep[k]].source, channels, size)
        except Exception as exc:  # any decoder failure is a bad file, reported by name
            return _describe(exc)
        return None

    big = np.mean([w * h for _, (w, h) in good]) >= _THREADED_PIXELS
    errors = _parallel(decode, len(keep), threads=big)
    ok = _drop_bad([entries[i] for i in keep], errors, skip_bad, notes)
    if len(ok) < len(keep):
        pixels, keep = pixels[ok], [keep[k] for k in ok]
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([labels[i] for i in keep], dtype=torch.int64)
    test = torch.tensor([is_test[i] for i in keep], dtype=torch.bool)
    ds = ImageDataset(x=x[~test], y=y[~test], classes=classes, source=str(path),
                      format="folder", notes=notes)
    if bool(test.any()):
        ds.test_x, ds.test_y = x[test], y[test]
    if len(ds.y) == 0:
        raise DataError(f"{path}: no readable training images left")
    return ds


def _scan_dir(root: Path) -> list[_Entry]:
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = tuple(os.path.relpath(folder, root).split(os.sep)) if folder != str(root) else ()
        rel = tuple(p for p in rel if p != ".")
        for f in files:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                full = os.path.join(folder, f)
                found.append(_Entry(rel + (f,), full, full))
    return found


def _scan_archive(path: Path) -> list[_Entry]:
    """Stream the archive once (xz has no random access) and keep image members in memory."""
    found = []
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if (not member.isfile() or ".." in parts or any(p.startswith(".") for p in parts)
                        or not parts[-1].lower().endswith(IMAGE_EXTENSIONS)):
                    continue
                data = tar.extractfile(member).read()
                found.append(_Entry(parts, f"{path}:{member.name}", data))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar archive ({_describe(exc)})") from None
    return found


_TEXT_HINT = "it holds .txt files in class folders: for text classification add --task text"


def holds_text_files(path: str | Path, limit: int = 10_000) -> bool:
    """Whether ``path`` (a folder or tar archive) looks like text data: ``.txt`` files inside sub-folders.

    Looks at no more than ``limit`` files (or an archive's first 64), so a big folder costs little.
    """
    path = Path(path)
    if path.is_dir():
        seen = 0
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            if folder != str(path) and any(f.lower().endswith(".txt") for f in files):
                return True
            seen += len(files)
            if seen >= limit:
                break
        return False
    if _is_archive(path):
        try:
            return any(name.lower().endswith(".txt") for name in _archive_file_names(path, limit=64))
        except DataError:
            return False
    return False


def _layout(root: Path, entries: list[_Entry]):
    """Find classes and the train/test split from the relative paths of the images."""
    if not entries:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found",
                        hint=_TEXT_HINT if holds_text_files(root) else None)
    while (all(len(e.parts) >= 3 for e in entries) and len({e.parts[0] for e in entries}) == 1
           and entries[0].parts[0].lower() not in ("train", "test")):
        entries = [_Entry(e.parts[1:], e.name, e.source) for e in entries]
    tops = {e.parts[0].lower() for e in entries if len(e.parts) >= 3}
    split = {"train", "test"} <= tops
    placed, ignored = [], 0
    for e in entries:
        if split and len(e.parts) >= 3 and e.parts[0].lower() in ("train", "test"):
            placed.append((e.parts[0].lower() == "test", e.parts[1], e))
        elif not split and len(e.parts) >= 2:
            placed.append((False, e.parts[0], e))
        else:
            ignored += 1
    if not placed:
        raise DataError(f"{root}: images must sit in one sub-folder per class (root/<class>/image.png)")
    classes = sorted({label for test, label, _ in placed if not test})
    if len(classes) < 2:
        raise DataError(f"{root}: only one class folder ({classes[0]!r}); a classifier needs at least two")
    unknown = sorted({label for test, label, _ in placed if test} - set(classes))
    if unknown:
        raise DataError(f"{root}: test class folder {unknown[0]!r} has no counterpart under train/")
    placed.sort(key=lambda t: (t[0], t[1], t[2].parts))
    notes = [f"ignored {ignored} images outside the class folders"] if ignored else []
    index = {c: i for i, c in enumerate(classes)}
    return ([e for _, _, e in placed], [index[label] for _, label, _ in placed],
            [test for test, _, _ in placed], classes, notes)


def _drop_bad(entries: list[_Entry], errors: list[str | None], skip_bad: bool,
              notes: list[str]) -> list[int]:
    """Indices of good entries; without ``skip_bad`` the first bad file is an error."""
    bad = [i for i, err in enumerate(errors) if err is not None]
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"{entries[bad[0]].name}: unreadable image ({errors[bad[0]]}){more}; "
                        "skip_bad=True (--skip-bad) skips such files")
    if bad:
        notes.append(f"skipped {len(bad)} unreadable images (--skip-bad)")
    return [i for i, err in enumerate(errors) if err is None]


def _open(source: str | Path | bytes) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _probe(source: str | Path | bytes) -> tuple[str, tuple[int, int]] | str:
    """(mode, (width, height)) from the header alone, or an error description."""
    try:
        head = source[:_HEAD] if isinstance(source, bytes) else _read_head(source)
        found = _peek_header(head)
        if found is not None:
            return found
        with _open(source) as im:
            return im.mode, im.size
    except Exception as exc:  # any decoder failure is a bad file, reported by name
        return _describe(exc)


def _read_head(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(_HEAD)


def _peek_header(head: bytes) -> tuple[str, tuple[int, int]] | None:
    """Mode and size of a PNG or JPEG from its first bytes; Pillow's open costs 10x more.

    None means "ask Pillow": another format, or a header this quick look cannot place.
    """
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 26:
        w, h = struct.unpack(">II", head[16:24])
        mode = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}.get(head[25])
        return (mode, (w, h)) if mode and w and h else None
    if head[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 10 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[i + 5:i + 9])
            mode = {1: "L", 3: "RGB", 4: "CMYK"}.get(head[i + 9])
            return (mode, (w, h)) if mode and w and h else None
        else:
            i += 2 + int.from_bytes(head[i + 2:i + 4], "big")
    return None


def _decode(source: str | Path | bytes, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 ``[H, W, C]`` at ``size`` (height, width)."""
    h, w = size
    with _open(source) as im:
        if im.format == "JPEG":
            im.draft("L" if channels == 1 else "RGB", (w, h))
        im.load()
        if im.mode.startswith("I;16"):
            im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
        im = im.convert("L" if channels == 1 else "RGB")
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if channels == 1 else arr


def load_image_files(paths: list[Path], channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Decode image files to uint8 ``[N, C, H, W]``, ``size`` being (height, width); for predict."""
    if channels not in (1, 3):
        raise DataError(f"channels: expected 1 or 3, got {channels!r}")
    paths = [Path(p) for p in paths]
    pixels = np.empty((len(paths), size[0], size[1], channels), dtype=np.uint8)

    def decode(i: int) -> str | None:
        try:
            pixels[i] = _decode(paths[i], channels, size)
        except Exception as exc:  # any decoder failure is a bad file, reported by name
            return _describe(exc)
        return None

    for i, err in enumerate(_parallel(decode, len(paths))):
        if err is not None:
            raise DataError(f"{paths[i]}: unreadable image ({err})")
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def list_image_files(path: str | Path) -> list[Path]:
    """``path`` itself if it is an image file, else the image files under it, sorted."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file():
        if not path.name.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{path}: not an image file; expected one of {', '.join(IMAGE_EXTENSIONS)}")
        return [path]
    files = sorted(Path(e.name) for e in _scan_dir(path))
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files


# --- IDX (MNIST, Fashion-MNIST) ----------------------------------------------------------

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
        raise DataError(f"{path}: truncated or corrupt gzip data ({_describe(exc)})") from None


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


# --- CIFAR-10 python batches -------------------------------------------------------------

def read_cifar(path: str | Path) -> ImageDataset:
    """CIFAR-10 python batches: a folder, a folder holding the ``.tar.gz``, or the archive itself.

    Batches are unpickled by ``safe_pickle.restricted_load`` only: a pickle can run code.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir() and (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    path = _single_archive(path)
    if path.is_dir() and (path / "cifar-10-python.tar.gz").is_file():
        path = path / "cifar-10-python.tar.gz"
    if path.is_dir():
        blobs = {f.name: (str(f), f.read_bytes()) for f in path.iterdir()
                 if f.is_file() and (_CIFAR_BATCH.fullmatch(f.name) or f.name in _CIFAR_NAMES)}
    elif _is_archive(path):
        blobs = _cifar_members(path)
    else:
        raise DataError(f"{path}: expected a CIFAR-10 folder (data_batch_1..5, test_batch) or its .tar.gz")
    train = sorted((n for n in blobs if _CIFAR_BATCH.fullmatch(n)),
                   key=lambda n: int(_CIFAR_BATCH.fullmatch(n).group(1)))
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
                if member.isfile() and (_CIFAR_BATCH.fullmatch(base) or base in _CIFAR_NAMES):
                    blobs[base] = (f"{path}:{member.name}", tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar archive ({_describe(exc)})") from None
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


# --- helpers -----------------------------------------------------------------------------

def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _single_archive(path: Path) -> Path:
    """The archive inside ``path`` if that is all the folder holds (a download cache), else ``path``."""
    if not path.is_dir():
        return path
    entries = [e for e in path.iterdir() if not e.name.startswith(".")]
    archives = [e for e in entries if _is_archive(e)]
    if len(archives) != 1 or any(e.is_dir() or e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries):
        return path
    return archives[0]


def _archive_file_names(path: Path, limit: int) -> list[str]:
    """Base names of the first ``limit`` files in an archive, read without unpacking it all."""
    names = []
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if member.isfile():
                    names.append(member.name.rsplit("/", 1)[-1])
                    if len(names) >= limit:
                        break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar archive ({_describe(exc)})") from None
    return names


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _parallel(fn: Callable[[int], _T], n: int, threads: bool = True) -> list[_T]:
    """``[fn(i) for i in range(n)]``, on a thread pool if ``threads``.

    Pillow releases the GIL while it decodes, which pays off for photos; for thumbnails
    the Python around each decode dominates and threads only contend for the GIL.
    """
    workers = min(8, os.cpu_count() or 1)
    if not threads or n < 64 or workers == 1:
        return [fn(i) for i in range(n)]
    chunk = max(64, n // (workers * 8))
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda s: [fn(i) for i in range(s, min(n, s + chunk))], range(0, n, chunk))
        return [r for part in parts for r in part]


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
