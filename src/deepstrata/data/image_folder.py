"""Folders (or tar archives) of class sub-folders of images: scanning, layout and decoding.

The one format whose images vary in size and mode, so the one that has to decide a
shape for the whole set. Its pieces are public because the streaming shard writer
(``shard_sources.FolderSource``) applies the same scan, layout, bad-file and geometry
rules while decoding chunk by chunk instead of all at once.
"""

from __future__ import annotations

import os
import tarfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepstrata.data.image_archives import TEXT_HINT, holds_text_files, is_archive, single_archive
from deepstrata.data.image_dataset import ImageDataset
from deepstrata.data.image_files import (
    GRAY_MODES, IMAGE_EXTENSIONS, THREADED_PIXELS, decode_image, describe_error, map_threads, parallel_map,
    probe_image,
)
from deepstrata.data.image_preprocess import (
    Preprocess, check_memory, converted_modes_note, decode_rate_note, input_size,
)
from deepstrata.errors import DataError


@dataclass(frozen=True)
class ImageEntry:
    """One image found by a scan: path ``parts`` relative to the root, a display ``name``,
    and the ``source`` to decode (a file path, or the bytes of an archive member)."""

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
    channels = 1 if all(mode in GRAY_MODES for mode, _ in good) else 3
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
    if channels == 3 and any(mode in GRAY_MODES for mode, _ in good):
        notes.append("converted grayscale images to RGB (the set mixes gray and color)")
    return channels, size


def sized_geometry(good: list[tuple[str, tuple[int, int]]], image_size: int | None, notes: list[str], *,
                   model: str | None, device: str | None,
                   preprocess: Preprocess | None) -> tuple[int, Preprocess]:
    """Channels and the ``Preprocess`` of a fit (the size policy for ``model`` on ``device``) or of a run's
    record (``preprocess``), with what was decided appended to ``notes``."""
    channels = 1 if all(mode in GRAY_MODES for mode, _ in good) else 3
    (w, h), count = Counter(s for _, s in good).most_common(1)[0]
    if preprocess is None:
        preprocess, note = input_size((w, h), model=model or "cnn", device=device or "cpu", image_size=image_size)
        if note is None:
            notes.append(f"image size {w}x{h}: the most common size ({count} of {len(good)} images)")
        else:
            notes.append(note)
    target = (preprocess.width, preprocess.height)
    resized = sum(s != target for _, s in good)
    if resized and resized < len(good):
        notes.append(f"resized {resized} images of other sizes to {target[0]}x{target[1]} (aspect kept, centre crop)")
    if channels == 3 and any(mode in GRAY_MODES for mode, _ in good):
        notes.append("converted grayscale images to RGB (the set mixes gray and color)")
    converted = converted_modes_note([mode for mode, _ in good], channels)
    if converted:
        notes.append(converted)
    return channels, preprocess


def read_image_folder(path: str | Path, image_size: int | None = None, skip_bad: bool = False, *,
                      model: str | None = None, device: str | None = None,
                      preprocess: Preprocess | None = None) -> ImageDataset:
    """Read ``root/<class>/*`` or ``root/{train,test}/<class>/*``, a folder or a tar archive.

    A single top-level folder holding only folders is looked through (archives usually
    wrap their content in one). Grayscale (C=1) only if every image is single-channel.

    A fit names its ``model`` and ``device`` type: the size is ``image_preprocess.input_size``'s
    choice (``image_size`` overrides it), every image keeps its aspect (scaled to cover,
    centre-cropped, EXIF orientation honoured), the decoded size is checked against the
    memory budget first, and ``ImageDataset.preprocess`` records it all. A run's verbs
    pass that record back as ``preprocess``. With neither, the reading of runs made before
    it: the most common size (or ``image_size`` squared) and other images squashed to it.
    """
    source = str(path)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    path = single_archive(path)
    if path.is_dir():
        entries = scan_dir(path)
    elif is_archive(path):
        entries = scan_archive(path)
    else:
        raise DataError(f"{path}: not a folder or a .tar[.gz|.xz] archive of images")
    entries, labels, is_test, classes, notes = folder_layout(path, entries)

    probes = parallel_map(lambda i: probe_image(entries[i].source), len(entries), threads=False)
    keep = drop_bad(entries, [p if isinstance(p, str) else None for p in probes], skip_bad, notes)
    if not keep:
        raise DataError(f"{path}: none of the {len(entries)} image files could be read")
    good = [probes[i] for i in keep]
    sized = model is not None or device is not None or preprocess is not None
    if sized:
        channels, preprocess = sized_geometry(good, image_size, notes, model=model, device=device,
                                              preprocess=preprocess)
        size = (preprocess.height, preprocess.width)
        check_memory(source, len(keep), channels, *size)
    else:
        channels, size = folder_geometry(good, image_size, notes)

    # decoded straight into [N, C, H, W]: one buffer of the estimated size, no permuted copy
    x = torch.empty((len(keep), channels, size[0], size[1]), dtype=torch.uint8)

    def decode(k: int) -> str | None:
        try:
            x[k].numpy()[...] = decode_image(entries[keep[k]].source, channels, size, preprocess).transpose(2, 0, 1)
        except Exception as exc:  # any decoder failure is a bad file, reported by name
            return describe_error(exc)
        return None

    big = np.mean([w * h for _, (w, h) in good]) >= THREADED_PIXELS
    started = time.perf_counter()
    errors = parallel_map(decode, len(keep), threads=big)
    if sized:
        notes.append(decode_rate_note(len(keep), channels, *size, time.perf_counter() - started,
                                      map_threads(len(keep), big)))
    ok = drop_bad([entries[i] for i in keep], errors, skip_bad, notes)
    if len(ok) < len(keep):
        x, keep = x[ok], [keep[k] for k in ok]
    y = torch.tensor([labels[i] for i in keep], dtype=torch.int64)
    test = torch.tensor([is_test[i] for i in keep], dtype=torch.bool)
    train = (x, y) if not bool(test.any()) else (x[~test], y[~test])
    ds = ImageDataset(x=train[0], y=train[1], classes=classes, source=str(path),
                      format="folder", notes=notes, preprocess=preprocess.record() if sized else None)
    if bool(test.any()):
        ds.test_x, ds.test_y = x[test], y[test]
    if len(ds.y) == 0:
        raise DataError(f"{path}: no readable training images left")
    return ds


def scan_dir(root: Path) -> list[ImageEntry]:
    """Every image file under ``root`` (hidden files and folders skipped), by relative path."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = tuple(os.path.relpath(folder, root).split(os.sep)) if folder != str(root) else ()
        rel = tuple(p for p in rel if p != ".")
        for f in files:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                full = os.path.join(folder, f)
                found.append(ImageEntry(rel + (f,), full, full))
    return found


def scan_archive(path: Path) -> list[ImageEntry]:
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
                found.append(ImageEntry(parts, f"{path}:{member.name}", data))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar archive ({describe_error(exc)})") from None
    return found


def folder_layout(root: Path, entries: list[ImageEntry]):
    """Find classes and the train/test split from the relative paths of the images.

    Returns ``(entries, labels, is_test, classes, notes)``: the placed entries in order,
    a class index and a test flag for each, the sorted class names, and what was ignored.
    """
    if not entries:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found",
                        hint=TEXT_HINT if holds_text_files(root) else None)
    while (all(len(e.parts) >= 3 for e in entries) and len({e.parts[0] for e in entries}) == 1
           and entries[0].parts[0].lower() not in ("train", "test")):
        entries = [ImageEntry(e.parts[1:], e.name, e.source) for e in entries]
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


def drop_bad(entries: list[ImageEntry], errors: list[str | None], skip_bad: bool,
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


def list_image_files(path: str | Path) -> list[Path]:
    """``path`` itself if it is an image file, else the image files under it, sorted."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file():
        if not path.name.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{path}: not an image file; expected one of {', '.join(IMAGE_EXTENSIONS)}")
        return [path]
    files = sorted(Path(e.name) for e in scan_dir(path))
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files
