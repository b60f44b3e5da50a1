"""How an image folder's pictures become the model's input: the size policy, the resize and the memory check.

Photos arrive large, of mixed sizes and orientations; the model wants one small square.
This module decides that square (``input_size``), describes how every file is brought to
it (``Preprocess``: resize the short side, centre-crop, never squash) so that a run can
record it and ``predict``/``evaluate``/``inspect`` repeat it exactly, and checks before
anything is decoded that the decoded set fits a memory budget (``check_memory``).

Runs written before this existed record no preprocessing; their verbs keep the old
squash-to-size path (``image_files.decode_image`` without a ``Preprocess``).
"""

from __future__ import annotations

import math
import os
import shlex
from collections import Counter
from dataclasses import dataclass

from deepstrata.data.shard_format import parse_size
from deepstrata.errors import DataError

# Short side (px) a model trained from scratch gets by default: (on a CPU, on an accelerator).
SHORT_SIDE = {"cnn": (64, 128), "whitened-cnn": (64, 128), "mlp": (32, 64)}
DEFAULT_SHORT_SIDE = (64, 128)
DEFAULT_MEMORY_BUDGET = 4 * 2**30
BUDGET_ENV = "DEEPSTRATA_MEMORY_BUDGET"


@dataclass(frozen=True)
class Preprocess:
    """Every file scaled (aspect kept) until it covers ``height`` x ``width``, then centre-cropped to it.

    For a square target that is the ImageNet evaluation recipe: short side to the size,
    centre crop. ``record()`` is what model.json keeps under ``data.preprocess``.
    """

    height: int
    width: int

    def record(self) -> dict:
        if self.height == self.width:
            return {"resize": "short-side", "size": self.height, "crop": "centre"}
        return {"resize": "cover", "size": [self.height, self.width], "crop": "centre"}

    @classmethod
    def from_record(cls, record: dict) -> Preprocess:
        """The preprocessing a run recorded (``data.preprocess`` of model.json)."""
        size = record.get("size") if isinstance(record, dict) else None
        if (record.get("resize") not in ("short-side", "cover") or record.get("crop") != "centre"
                or not (isinstance(size, int) or (isinstance(size, list) and len(size) == 2))):
            raise DataError(f"model.json: data.preprocess is {record!r}; expected "
                            "{'resize': 'short-side', 'size': N, 'crop': 'centre'}")
        height, width = (size, size) if isinstance(size, int) else size
        return cls(int(height), int(width))

    def describe(self) -> str:
        if self.height == self.width:
            return f"short side resized to {self.height}, centre crop"
        return f"scaled to cover {self.width}x{self.height} (aspect kept), centre crop"


def short_side_for(model: str, device: str) -> int:
    """The default short side for ``model`` on a ``device`` type (``cpu``, ``cuda``, ``mps``)."""
    cpu, accelerator = SHORT_SIDE.get(model, DEFAULT_SHORT_SIDE)
    return cpu if device == "cpu" else accelerator


def input_size(common: tuple[int, int], *, model: str, device: str,
               image_size: int | None = None) -> tuple[Preprocess, str | None]:
    """The input an image folder trains at, and the note saying why (None: the images' own size).

    Why: the most common native size of camera or web photos (500x375 and up) costs
    memory and time quadratically and buys a CNN trained from scratch little — such
    models learn from 64-128 px, so the default is a short side of 64 px on a CPU (where
    an epoch must stay short) and 128 px on a GPU (``SHORT_SIDE`` per model: an MLP's
    first layer grows with the pixel count, so it gets half). Images already that small
    are never upscaled: they keep their most common size (width, height = ``common``),
    as before. ``--image-size`` (``image_size``) overrides both. Aspect is kept either
    way: scale until the target is covered, then centre-crop.
    """
    width, height = common
    if image_size is not None:
        return Preprocess(image_size, image_size), (
            f"input size {image_size}x{image_size} (--image-size; {Preprocess(image_size, image_size).describe()}; "
            f"the images' most common size is {width}x{height})")
    side = short_side_for(model, device)
    if min(width, height) <= side:
        return Preprocess(height, width), None
    return Preprocess(side, side), (
        f"input size {side}x{side} for {model} on {device} ({Preprocess(side, side).describe()}; the images' "
        f"most common size is {width}x{height}; --image-size to change)")


def centre_box(width: int, height: int, out_w: int, out_h: int) -> tuple[float, float, float, float]:
    """The region of a ``width`` x ``height`` picture that, scaled with its aspect kept, fills ``out_w`` x ``out_h``."""
    scale = max(out_w / width, out_h / height)
    # the side that decides the scale spans the whole picture: exactly, not to within rounding (Pillow refuses
    # a box that starts a hair below 0)
    box_w, box_h = min(width, out_w / scale), min(height, out_h / scale)
    left, top = max(0.0, (width - box_w) / 2), max(0.0, (height - box_h) / 2)
    return left, top, min(float(width), left + box_w), min(float(height), top + box_h)


def converted_modes_note(modes: list[str], channels: int) -> str | None:
    """One note counting the images whose mode is not plain gray or RGB (what converting them does)."""
    kinds = Counter()
    for mode in modes:
        if mode in ("L", "RGB"):
            continue
        if mode == "CMYK":
            kinds["CMYK"] += 1
        elif mode in ("P", "PA"):
            kinds["palette"] += 1
        elif mode.startswith("I;16") or mode in ("I", "F"):
            kinds["16-bit or wider"] += 1
        elif mode in ("LA", "RGBA", "La", "RGBa"):
            kinds["with alpha (dropped)"] += 1
        elif mode == "1":
            kinds["1-bit"] += 1
        else:
            kinds[mode] += 1
    if not kinds:
        return None
    parts = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
    return f"converted {sum(kinds.values())} images to {'grayscale' if channels == 1 else 'RGB'}: {parts}"


def memory_budget() -> int:
    """Bytes the decoded images may take: ``DEEPSTRATA_MEMORY_BUDGET`` (``2GB``, ``512MiB``, bytes) or 4 GiB."""
    value = os.environ.get(BUDGET_ENV, "").strip()
    return parse_size(value, BUDGET_ENV) if value else DEFAULT_MEMORY_BUDGET


def format_bytes(count: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


class OverBudget(DataError):
    """The decoded images would not fit the memory budget. A fit on a folder catches it and streams
    (writes shards into the run directory); everywhere else it is the one-line error it says."""

    def __init__(self, message: str, *, estimate: int, budget: int) -> None:
        super().__init__(message)
        self.estimate, self.budget = estimate, budget


def check_memory(source: str, count: int, channels: int, height: int, width: int) -> int:
    """The decoded size of ``count`` images; ``OverBudget`` saying how to shard instead when over the budget."""
    estimate = count * channels * height * width
    budget = memory_budget()
    if estimate > budget:
        from deepstrata.data.image_archives import ARCHIVE_SUFFIXES

        base = source.rstrip("/\\")
        archive = next((suffix for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True)
                        if base.lower().endswith(suffix)), None)
        head = (f"{source}: {count:,} images at {channels}x{height}x{width} decode to about "
                f"{format_bytes(estimate)}, over the memory budget of {format_bytes(budget)} ({BUDGET_ENV} to change)")
        if archive:  # an archive is read whole (a .tar.xz has no random access): the folder streams
            raise OverBudget(f"{head}; unpack it (tar -xf {shlex.quote(source)}) and give the folder: fit streams "
                             "a folder this large through shards", estimate=estimate, budget=budget)
        shards = shlex.quote(f"{base}-shards")
        size = f" --image-size {height}" if height == width else ""
        raise OverBudget(
            f"{head}; write shards and stream them: deepstrata shard --data {shlex.quote(source)} --out "
            f"{shards}{size}, then deepstrata fit --data {shards}", estimate=estimate, budget=budget)
    return estimate


def budget_share(example_bytes: int, fraction: float, most: int) -> int:
    """How many examples of ``example_bytes`` fit in ``fraction`` of the memory budget (at least 1, at most ``most``).

    What streaming keeps resident (the shuffle buffer, the baselines' sample) is sized by it,
    so a small budget bounds those too, not only the decision to stream.
    """
    return max(1, min(most, int(memory_budget() * fraction) // max(1, example_bytes)))


def decode_rate_note(count: int, channels: int, height: int, width: int, seconds: float, threads: int) -> str:
    rate = count / seconds if seconds > 0 else math.inf
    return (f"decoded {count} images to {channels}x{height}x{width} in {seconds:.1f}s ({rate:,.0f} images/s, "
            f"{threads} thread{'s' if threads != 1 else ''}); {format_bytes(count * channels * height * width)} in "
            f"memory, budget {format_bytes(memory_budget())}")
