"""Engine overhead: deepstrata's loop vs a minimal hand-written PyTorch loop.

Both train the same CNN on the same uint8 tensors for the same steps with the same
augmentation, loss, clipping, schedule and a validation pass per epoch, in fp32 (the
engine with ``precision="32"``, so a bf16 CPU compares like with like). The engine runs
twice: with its defaults (``engine``: metrics.jsonl and checkpoints by time, one per 60 s
and at the end) and with a checkpoint at every epoch's end (``engine-per-epoch``,
``checkpoint_seconds=0``: what the engine did before time-based checkpoints). The three
rotate their order every repeat, in one process; the median time ratio to the hand loop
is reported, and every repeat's seconds are kept in ``benchmarks/results/`` (``--results``
to choose the file). Seed 0 throughout (split, initialisation, batches).

    python benchmarks/engine_overhead.py --data digits --epochs 5 --repeats 7
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from deepstrata.config import TrainConfig
from deepstrata.data.augment import random_crop
from deepstrata.data.images import load_images
from deepstrata.data.split import split_dataset
from deepstrata.engine.loop import batch_generator, build_optimizer, learning_rate, train
from deepstrata.models.cnn import CNN
from deepstrata.families.image.task import ImageClassificationTask, channel_stats, predict_logits, to_float
from results_io import result_path, write_results


def hand_loop(model, splits, cfg: TrainConfig, padding: int) -> None:
    opt = build_optimizer(model, cfg)
    n = len(splits.train_x)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=batch_generator(cfg.seed, epoch))
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            x = random_crop(to_float(splits.train_x[idx]), padding, batch_generator(cfg.seed, epoch, i))
            y = splits.train_y[idx]
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step, total)
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
        logits = predict_logits(model, splits.val_x, torch.device("cpu"))
        (logits.argmax(1) == splits.val_y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-train", type=int, default=None, help="use only this many training images")
    parser.add_argument("--results", type=Path, default=None,
                        help="raw output JSON (default: benchmarks/results/engine_overhead_<date>_<machine>_seed0_"
                        "<data>.json)")
    args = parser.parse_args()

    splits = split_dataset(load_images(args.data), seed=0)
    if args.max_train:
        splits.train_x, splits.train_y = splits.train_x[: args.max_train], splits.train_y[: args.max_train]
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device="cpu", seed=0, precision="32")
    variants = {"engine": cfg, "engine-per-epoch": dataclasses.replace(cfg, checkpoint_seconds=0), "hand": None}
    mean, std = channel_stats(splits.train_x)
    shape = tuple(splits.train_x.shape[1:])

    def fresh():
        torch.manual_seed(0)
        return CNN(shape, len(splits.classes), width=args.width, mean=mean, std=std)

    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats + 1):
        shift = repeat % len(names)
        for which in names[shift:] + names[:shift]:  # every variant takes every position in turn
            model = fresh()
            start = time.perf_counter()
            if variants[which] is not None:
                task = ImageClassificationTask(splits.train_x, splits.train_y, splits.val_x, splits.val_y,
                                               num_classes=len(splits.classes), label_smoothing=cfg.label_smoothing)
                with tempfile.TemporaryDirectory() as tmp:
                    train(model, task, variants[which], Path(tmp), quiet=True)
            else:
                hand_loop(model, splits, cfg, padding=ImageClassificationTask(
                    splits.train_x[:1], splits.train_y[:1], splits.val_x, splits.val_y, num_classes=1).padding)
            elapsed = time.perf_counter() - start
            if repeat > 0:  # the first round warms up allocators and caches
                times[which].append(elapsed)
    print(f"data={args.data} epochs={args.epochs} width={args.width} batch={args.batch_size} "
          f"threads={torch.get_num_threads()} repeats={args.repeats}")
    results = {"data": args.data, "epochs": args.epochs, "width": args.width, "batch_size": args.batch_size,
               "repeats": args.repeats, "max_train": args.max_train, "torch_threads": torch.get_num_threads(),
               "seconds": times}
    for name in names:
        print(f"{name:>16} s: {', '.join(f'{t:.3f}' for t in times[name])}")
    for name in names[:-1]:
        ratios = [e / h for e, h in zip(times[name], times["hand"])]
        results[f"ratios_{name}"] = ratios
        results[f"median_ratio_{name}"] = statistics.median(ratios)
        print(f"median ratio {name}/hand: {statistics.median(ratios):.3f}  "
              f"(per-repeat: {', '.join(f'{r:.3f}' for r in ratios)})")
    write_results(args.results or result_path("engine_overhead", 0, Path(args.data).name), results, 0)


if __name__ == "__main__":
    main()
