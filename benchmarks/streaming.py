"""Streaming from shards: throughput and peak memory on a data set 10x larger than a memory limit.

The bytes are SYNTHETIC: 3x32x32 uint8 images, ten classes, each a class template plus
seeded noise (learnable, so the loss falls), generated chunk by chunk as they are
written. No real data set of that size travels with the code.

Each phase runs in its own fresh process and reports that process's peak resident set
(VmHWM from /proc/self/status), so one phase's memory never hides in another's:

* write   — synthesize the set and write it with ``write_shards`` (streamed)
* read    — one full epoch of ``ShardedImageTask.train_batches`` over every train shard
            (disk reads, shuffle buffer, float conversion; no augmentation, no model)
* train   — ``--steps`` steps of the one training loop on a CNN, streaming
* memory  — the same steps from an in-memory ``ImageClassificationTask`` holding exactly
            the examples those steps need (the reference for the streaming overhead)

The limit is checked, not enforced by the kernel (RLIMIT_AS counts virtual memory, which
torch reserves generously): the script exits 1 if a streaming phase's peak RSS exceeds
it. Before the read and train phases the shard files are dropped from the page cache
(``posix_fadvise(DONTNEED)``), so they are read from disk, not from memory.

    nice -n 15 python benchmarks/streaming.py --limit-mb 640 --steps 200

The synthetic bytes and the training use seed 0. Every phase's figures are kept in
``benchmarks/results/streaming_<date>_<machine>_seed0_<limit>MiB.json`` (``--results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from results_io import result_path, write_results

SHAPE = (3, 32, 32)
CLASSES = 10
MIB = 2**20


def peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class SyntheticSource:
    """A ``ShardSource`` that makes its pixels when asked: template of the class + seeded noise."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.classes = [f"class{i}" for i in range(CLASSES)]
        self.image_shape = SHAPE
        self.labels = rng.integers(0, CLASSES, size=n).astype(np.int64)
        self.test_labels = None
        self.source = f"synthetic ({n} images {'x'.join(map(str, SHAPE))}, seeded noise)"
        self.format = "synthetic"
        self.notes = ["synthetic bytes: class template + uniform noise"]
        self.templates = rng.integers(0, 160, size=(CLASSES, *SHAPE), dtype=np.uint8)
        self.seed = seed

    def read(self, part: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(positions[0]) if len(positions) else 0])
        images = rng.integers(0, 96, size=(len(positions), *SHAPE), dtype=np.uint8)
        images += self.templates[self.labels[positions]]
        return images, np.ones(len(positions), dtype=bool)


def drop_page_cache(root: Path) -> None:
    for path in root.glob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def phase_write(args) -> dict:
    from deepstrata.data.shards import write_shards

    n = int(args.data_mb * MIB) // int(np.prod(SHAPE))
    started = time.perf_counter()
    shards = write_shards(SyntheticSource(n), args.dir, args.shard_size, val_fraction=0.005, test_fraction=0.005)
    seconds = time.perf_counter() - started
    on_disk = sum(p.stat().st_size for p in Path(args.dir).glob("*.npy"))
    return {"examples": n, "bytes_on_disk": on_disk, "shards": {k: len(v.shards) for k, v in shards.splits.items()},
            "seconds": seconds, "MB_per_s": on_disk / 1e6 / seconds}


def phase_read(args) -> dict:
    import torch

    from deepstrata.families.image.streaming import ShardedImageTask

    torch.set_num_threads(args.threads)
    drop_page_cache(Path(args.dir))
    task = ShardedImageTask(args.dir, augment=False)
    started, seen = time.perf_counter(), 0
    for x, y in task.train_batches(0, args.batch_size, seed=0):
        seen += len(y)
    seconds = time.perf_counter() - started
    return {"examples": seen, "seconds": seconds, "samples_per_s": seen / seconds, "buffer": task.buffer_size}


class Limited:
    """A task cut to its first ``steps`` batches per epoch (the loop runs whole epochs)."""

    def __init__(self, task, steps: int) -> None:
        self.task, self.steps, self.primary_metric = task, steps, task.primary_metric
        self.num_examples = steps

    def num_batches(self, batch_size: int) -> int:
        return min(self.steps, self.task.num_batches(batch_size))

    def train_batches(self, epoch, batch_size, seed, start=0):
        for index, batch in enumerate(self.task.train_batches(epoch, batch_size, seed, start), start):
            if index >= self.steps:
                return
            yield batch

    def loss(self, model, batch):
        return self.task.loss(model, batch)

    def validate(self, model, device):
        return self.task.validate(model, device)


def _train(task, args, mean, std) -> dict:
    import torch

    from deepstrata.config import TrainConfig
    from deepstrata.engine.loop import train
    from deepstrata.models.cnn import CNN

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = CNN(SHAPE, CLASSES, width=args.width, mean=mean, std=std)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, device="cpu", seed=0)
    result = train(model, Limited(task, args.steps), cfg, None, quiet=True)
    row = result.history[-1]
    samples = result.steps * args.batch_size
    return {"steps": result.steps, "train_seconds": result.train_seconds,
            "samples_per_s": samples / result.train_seconds, "train_loss": row["train_loss"],
            "val_accuracy": row["val_accuracy"]}


def phase_train(args) -> dict:
    from deepstrata.data.shards import open_shards
    from deepstrata.families.image.streaming import ShardedImageTask

    drop_page_cache(Path(args.dir))
    shards = open_shards(args.dir)
    task = ShardedImageTask(shards, flip=True, eval_batch_size=512)
    return {**_train(task, args, shards.mean, shards.std), "buffer": task.buffer_size}


def phase_memory(args) -> dict:
    """The reference: the same number of examples, held in memory, through ImageClassificationTask."""
    import torch

    from deepstrata.data.shards import open_shards
    from deepstrata.families.image.task import ImageClassificationTask

    shards = open_shards(args.dir)
    need = args.steps * args.batch_size
    images, labels, val_x, val_y = [], [], [], []
    for x, y in shards.splits["train"].chunks(4096):
        images.append(x), labels.append(y)
        if sum(len(part) for part in labels) >= need:
            break
    for x, y in shards.splits["val"].chunks(4096):
        val_x.append(x), val_y.append(y)
    train_x = torch.from_numpy(np.concatenate(images)[:need])
    train_y = torch.from_numpy(np.concatenate(labels)[:need])
    task = ImageClassificationTask(train_x, train_y, torch.from_numpy(np.concatenate(val_x)),
                                   torch.from_numpy(np.concatenate(val_y)), num_classes=CLASSES, flip=True,
                                   eval_batch_size=512)
    return {**_train(task, args, shards.mean, shards.std), "examples_in_memory": need}


PHASES = {"write": phase_write, "read": phase_read, "train": phase_train, "memory": phase_memory}


def run_phase(name: str, args) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--dir", str(args.dir), "--data-mb", str(args.data_mb),
               "--shard-size", args.shard_size, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--width", str(args.width), "--threads", str(args.threads)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"phase {name} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-mb", type=float, default=640, help="memory limit X in MiB (default 640)")
    parser.add_argument("--factor", type=float, default=10, help="data set size as a multiple of X (default 10)")
    parser.add_argument("--shard-size", default="64MiB", help="shard size (default 64MiB)")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=16, help="CNN width (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--dir", type=Path, help="where to write the shards (default: a temporary folder, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the shards")
    parser.add_argument("--results", type=Path, default=None, help="raw output JSON (default: "
                        "benchmarks/results/streaming_<date>_<machine>_seed0_<limit>MiB.json)")
    parser.add_argument("--phase", choices=tuple(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--data-mb", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        result = PHASES[args.phase](args)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return 0

    args.data_mb = args.limit_mb * args.factor
    temporary = args.dir is None
    args.dir = args.dir or Path(tempfile.mkdtemp(prefix="deepstrata-streaming-"))
    try:
        results = {name: run_phase(name, args) for name in PHASES}
    finally:
        if temporary and not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    w, r, t, m = (results[k] for k in ("write", "read", "train", "memory"))
    print(f"SYNTHETIC data: {w['examples']:,} images {'x'.join(map(str, SHAPE))} uint8, "
          f"{w['bytes_on_disk'] / MIB:,.0f} MiB on disk = {w['bytes_on_disk'] / MIB / args.limit_mb:.1f}x the "
          f"{args.limit_mb:.0f} MiB memory limit; shards of {args.shard_size} (train/val/test: "
          f"{w['shards']['train']}/{w['shards']['val']}/{w['shards']['test']})")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}, python "
          f"{platform.python_version()}")
    print(f"{'phase':<34} {'samples/s':>10} {'seconds':>8} {'peak RSS MiB':>13}")
    print(f"{'write shards (streamed)':<34} {w['examples'] / w['seconds']:>10,.0f} {w['seconds']:>8.1f} "
          f"{w['peak_rss_mb']:>13.0f}   ({w['MB_per_s']:.0f} MB/s)")
    print(f"{'read one full epoch (no aug/model)':<34} {r['samples_per_s']:>10,.0f} {r['seconds']:>8.1f} "
          f"{r['peak_rss_mb']:>13.0f}   (buffer {r['buffer']:,} examples)")
    print(f"{f'train {args.steps} steps, streaming':<34} {t['samples_per_s']:>10,.0f} {t['train_seconds']:>8.1f} "
          f"{t['peak_rss_mb']:>13.0f}   (loss {t['train_loss']:.3f}, val acc {t['val_accuracy']:.3f})")
    print(f"{f'train {args.steps} steps, in memory':<34} {m['samples_per_s']:>10,.0f} {m['train_seconds']:>8.1f} "
          f"{m['peak_rss_mb']:>13.0f}   (reference: {m['examples_in_memory']:,} examples held)")
    print(f"streaming / in-memory training throughput: {t['samples_per_s'] / m['samples_per_s']:.2f}")
    worst = max(w["peak_rss_mb"], r["peak_rss_mb"], t["peak_rss_mb"])
    verdict = "under" if worst <= args.limit_mb else "OVER"
    print(f"peak RSS of the streaming phases: {worst:.0f} MiB — {verdict} the {args.limit_mb:.0f} MiB limit, "
          f"with a data set of {w['bytes_on_disk'] / MIB:,.0f} MiB")
    print(json.dumps({"limit_mb": args.limit_mb, **results}))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("phase", "dir")}
    write_results(args.results or result_path("streaming", 0, f"{args.limit_mb:g}MiB"),
                  {"settings": settings, "limit_mb": args.limit_mb, "phases": results,
                   "streaming_over_memory": t["samples_per_s"] / m["samples_per_s"], "worst_peak_rss_mb": worst}, 0)
    return 0 if worst <= args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
