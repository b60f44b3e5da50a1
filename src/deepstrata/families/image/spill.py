"""An image folder over the memory budget: decoded once into shards inside the run directory, then streamed.

When a folder's decoded pixels (at the size the policy chose) would not fit the memory
budget (``image_preprocess.memory_budget``), ``fit`` does what it would otherwise tell the
user to do: it writes the folder as shards into ``RUN/data-shards/`` and trains from them
with the shard streaming path (``streaming.ShardedImageTask``).

Why shards and not DataLoader workers decoding the files every epoch: a file is decoded
once rather than once per epoch (on 2 cores JPEG decoding costs about as much as the
training step it feeds), writing streams chunk by chunk (``shard_writer``), and the shard
path already has what a fit needs — a bounded shuffle buffer, a mid-epoch resume that
matches an uninterrupted run, ranks that read whole shards, baselines on a sample. The
shards use the fit's own split (seed and fractions), so the examples trained, selected
and tested on are those the in-memory read would have used. They are deepstrata's files
in the run (``rundir_marker.OWNED_DIRS``): ``--overwrite`` removes them with the
checkpoints, a resume reuses them when they still describe the same folder.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from deepstrata.data.image_preprocess import OverBudget, format_bytes
from deepstrata.engine import distributed
from deepstrata.errors import DataError

SHARD_DIR = "data-shards"
SHARDS_PER_PROCESS = 20  # the unused share of an epoch stays under ~10% (see streaming.py)
SMALLEST_SHARD = 1 * 2**20


@dataclass
class Spill:
    """A folder that will be streamed: its source (scanned, not decoded) and the estimate that decided it."""

    source: object  # shard_sources.FolderSource
    estimate: int
    budget: int
    counts: dict

    def line(self) -> str:
        c, h, w = self.source.image_shape
        total = sum(self.counts.values())
        return (f"data: {self.source.source} — {total:,} images at {c}x{h}x{w} decode to about "
                f"{format_bytes(self.estimate)}, over the memory budget of {format_bytes(self.budget)}: decoding "
                f"them once into shards in the run directory ({SHARD_DIR}/) and streaming those")


def plan(cfg, over: OverBudget, device: str) -> Spill:
    """The folder scanned for streaming, or the budget error itself for a source that cannot stream (an archive)."""
    from deepstrata.data.image_archives import is_archive, single_archive
    from deepstrata.data.shard_sources import FolderSource, split_positions

    path = Path(cfg.data.source).expanduser()
    if not path.is_dir() or single_archive(path) != path or is_archive(path):
        raise over
    source = FolderSource(path, image_size=cfg.data.image_size, skip_bad=cfg.data.skip_bad, model=cfg.model.name,
                          device=device)
    parts, _ = split_positions(source, seed=cfg.train.seed, val_fraction=cfg.data.val_fraction,
                               test_fraction=cfg.data.test_fraction)
    counts = {name: len(positions) for name, (_, positions, _) in parts.items()}
    return Spill(source, over.estimate, over.budget, counts)


def shard_size(spill: Spill, world_size: int) -> int:
    """Bytes per shard: small enough for ``SHARDS_PER_PROCESS`` train shards per process, at most 256 MB."""
    from deepstrata.data.shard_format import DEFAULT_SHARD_SIZE, parse_size

    example = 8 + int(spill.source.image_shape[0] * spill.source.image_shape[1] * spill.source.image_shape[2])
    wanted = spill.counts["train"] * example // (SHARDS_PER_PROCESS * world_size)
    return max(example, min(parse_size(DEFAULT_SHARD_SIZE), max(SMALLEST_SHARD, wanted)))


def _reusable(shards, spill: Spill, cfg) -> bool:
    """A resumed run's shards still describe this folder, at this size, with this split."""
    split = shards.manifest.get("split", {})
    return (shards.source == spill.source.source and tuple(shards.image_shape) == tuple(spill.source.image_shape)
            and list(shards.classes) == list(spill.source.classes) and split.get("seed") == cfg.train.seed
            and split.get("val_fraction") == cfg.data.val_fraction
            and split.get("test_fraction") == cfg.data.test_fraction
            and {name: shards.splits[name].count for name in spill.counts} == spill.counts)


def write(cfg, spill: Spill, run_dir: Path, resuming: bool, world_size: int, say) -> object:
    """The run's shards of the folder: written by rank 0 (reused on a resume when unchanged), then opened by all."""
    from deepstrata.data.shards import is_shard_dir, open_shards, write_shards

    out = Path(run_dir) / SHARD_DIR
    if distributed.current().is_main:
        reuse = resuming and is_shard_dir(out) and _reusable(open_shards(out), spill, cfg)
        if reuse:
            say(f"data: reusing the run's shards in {out}")
        else:
            free = shutil.disk_usage(run_dir).free
            if free < spill.estimate * 1.05:
                raise DataError(f"{run_dir}: {format_bytes(free)} free on disk; the folder's shards need about "
                                f"{format_bytes(spill.estimate)} (DEEPSTRATA_MEMORY_BUDGET larger to decode into "
                                "memory instead, or --out on a larger disk)")
            started = time.perf_counter()
            write_shards(spill.source, out, shard_size(spill, world_size), seed=cfg.train.seed,
                         val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction, overwrite=True,
                         progress=lambda message: say(f"data: shards: {message}"))
            seconds, total = time.perf_counter() - started, sum(spill.counts.values())
            say(f"data: decoded {total:,} images into shards in {seconds:.1f}s "
                f"({total / max(seconds, 1e-9):,.0f} images/s)")
    distributed.barrier()
    return open_shards(out)

