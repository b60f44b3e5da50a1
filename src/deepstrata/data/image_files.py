"""One image file, probed or decoded: the pixel-level layer under every image reader.

It exists so that the folder reader, the streaming shard writer (``shard_sources``) and
``predict`` decode files the same way — same header probe, same grayscale rule, same
resize, same error text — without any of them reaching into another's private helpers.
Nothing here knows about classes, splits or data set layouts.
"""

from __future__ import annotations

import io
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from PIL import Image

from deepstrata.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
# Mean pixels per image from which decoding on threads pays (see ``parallel_map``).
THREADED_PIXELS = 48 * 48
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
    workers = min(8, os.cpu_count() or 1)
    if not threads or n < 64 or workers == 1:
        return [fn(i) for i in range(n)]
    chunk = max(64, n // (workers * 8))
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda s: [fn(i) for i in range(s, min(n, s + chunk))], range(0, n, chunk))
        return [r for part in parts for r in part]


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


def decode_image(source: str | Path | bytes, channels: int, size: tuple[int, int]) -> np.ndarray:
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
            pixels[i] = decode_image(paths[i], channels, size)
        except Exception as exc:  # any decoder failure is a bad file, reported by name
            return describe_error(exc)
        return None

    for i, err in enumerate(parallel_map(decode, len(paths))):
        if err is not None:
            raise DataError(f"{paths[i]}: unreadable image ({err})")
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
