"""One image file, probed or decoded: the pixel-level layer under every image reader.

It exists so that the folder reader, the streaming shard writer (``shard_sources``) and
``predict`` decode files the same way — same header probe, same grayscale rule, same
resize, same error text — without any of them reaching into another's private helpers.
Nothing here knows about classes, splits or data set layouts.

Two resizes: given a ``Preprocess`` (what runs record since issue 17) a file is turned
upright by its EXIF orientation, decoded at reduced scale where JPEG allows (``draft``),
scaled with its aspect kept and centre-cropped; without one it is squashed to the size,
exactly as runs made before that expect.
"""

from __future__ import annotations

import io
import math
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps

from deepstrata.data.image_preprocess import Preprocess, centre_box
from deepstrata.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
# Mean pixels per image from which decoding on threads pays (see ``parallel_map``).
THREADED_PIXELS = 48 * 48
EXIF_ORIENTATION = 0x0112
_HEAD = 1 << 16
_T = TypeVar("_T")


def describe_error(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name: how a bad file's problem is quoted."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parallel_map(fn: Callable[[int], _T], n: int, threads: bool = True) -> list[_T]:
    """``[fn(i) for i in range(n)]``, on a thread pool if ``threads``.

    Pillow releases the GIL while it decodes, which pays off for photos; for thumbnails
    the Python around each decode dominates and threads only contend for the GIL.
    """
    workers = map_threads(n, threads)
    if workers == 1:
        return [fn(i) for i in range(n)]
    chunk = max(64, n // (workers * 8))
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda s: [fn(i) for i in range(s, min(n, s + chunk))], range(0, n, chunk))
        return [r for part in parts for r in part]


def map_threads(n: int, threads: bool = True) -> int:
    """How many threads ``parallel_map`` uses for ``n`` items."""
    workers = min(8, os.cpu_count() or 1)
    return 1 if not threads or n < 64 else workers


def _open(source: str | Path | bytes) -> Image.Image:
    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def probe_image(source: str | Path | bytes) -> tuple[str, tuple[int, int]] | str:
    """(mode, (width, height)) from the header alone, or an error description."""
    try:
        head = source[:_HEAD] if isinstance(source, bytes) else _read_head(source)
        found = peek_header(head)
        if found is not None:
            return found
        with _open(source) as im:
            return im.mode, im.size
    except Exception as exc:  # any decoder failure is a bad file, reported by name
        return describe_error(exc)


def _read_head(path: str | Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(_HEAD)


def peek_header(head: bytes) -> tuple[str, tuple[int, int]] | None:
    """Mode and size of a PNG or JPEG from its first bytes; Pillow's open costs 10x more.

    None means "ask Pillow": another format, or a header this quick look cannot place.
    """
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 26:
        w, h = struct.unpack(">II", head[16:24])
        mode = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}.get(head[25])
        if mode == "L" and head[24] == 16:
            mode = "I;16"  # what Pillow opens a 16-bit gray PNG as
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


def decode_image(source: str | Path | bytes, channels: int, size: tuple[int, int],
                 preprocess: Preprocess | None = None) -> np.ndarray:
    """One image as uint8 ``[H, W, C]`` at ``size`` (height, width).

    With ``preprocess`` (its size is ``size``): EXIF orientation applied, aspect kept,
    centre-cropped (``decode_kept_aspect``). Without: squashed to ``size``, as old runs expect.
    """
    if preprocess is not None:
        return decode_kept_aspect(source, channels, size)
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


def decode_kept_aspect(source: str | Path | bytes, channels: int, size: tuple[int, int]) -> np.ndarray:
    """One image, upright (EXIF), scaled until it covers ``size`` (height, width) and centre-cropped to it.

    A JPEG much larger than the target is decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``,
    the DCT does the first reduction almost for free), never below the size the crop needs.
    """
    h, w = size
    mode = "L" if channels == 1 else "RGB"
    with _open(source) as im:
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
        turned = orientation in (5, 6, 7, 8)  # the stored picture is the upright one transposed
        upright = (im.height, im.width) if turned else im.size
        if im.format == "JPEG":
            scale = max(w / upright[0], h / upright[1])
            need = (math.ceil(upright[0] * scale), math.ceil(upright[1] * scale))
            im.draft(mode, need[::-1] if turned else need)
        im.load()
        if orientation in range(2, 9):
            im = ImageOps.exif_transpose(im)
        im = to_mode(im, channels)
        if im.size != (w, h):
            left, top, right, bottom = centre_box(im.width, im.height, w, h)
            if right - left == w and bottom - top == h and left == int(left) and top == int(top):
                im = im.crop((int(left), int(top), int(right), int(bottom)))  # no scaling: the exact pixels
            else:
                im = im.resize((w, h), Image.BILINEAR, box=(left, top, right, bottom), reducing_gap=3.0)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[:, :, None] if channels == 1 else arr


def to_mode(im: Image.Image, channels: int) -> Image.Image:
    """``im`` as 8-bit gray (``channels`` 1) or RGB: 16-bit keeps its high byte, palette transparency and
    alpha are dropped, CMYK is converted."""
    if im.mode.startswith("I;16"):
        im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
    elif im.mode == "I":
        values = np.asarray(im)
        im = Image.fromarray((values >> 8 if values.max(initial=0) > 255 else values).clip(0, 255).astype(np.uint8))
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("L" if channels == 1 else "RGB")


def load_image_files(paths: list[Path], channels: int, size: tuple[int, int],
                     preprocess: Preprocess | None = None) -> torch.Tensor:
    """Decode image files to uint8 ``[N, C, H, W]``, ``size`` being (height, width); for predict.

    ``preprocess`` is the run's recorded preprocessing (aspect kept, centre crop); without
    it files are squashed to ``size`` as runs made before it expect.
    """
    if channels not in (1, 3):
        raise DataError(f"channels: expected 1 or 3, got {channels!r}")
    paths = [Path(p) for p in paths]
    pixels = np.empty((len(paths), size[0], size[1], channels), dtype=np.uint8)

    def decode(i: int) -> str | None:
        try:
            pixels[i] = decode_image(paths[i], channels, size, preprocess)
        except Exception as exc:  # any decoder failure is a bad file, reported by name
            return describe_error(exc)
        return None

    for i, err in enumerate(parallel_map(decode, len(paths))):
        if err is not None:
            raise DataError(f"{paths[i]}: unreadable image ({err})")
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
