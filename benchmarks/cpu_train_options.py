"""Which CPU training options pay on this machine: channels-last and ``torch.compile``, through the engine.

Issue 18 asks for defaults a performance engineer would choose on the machine that runs
them, and for ``torch.compile`` on the CPU only where it measurably pays back its compile
time. This script measures both on the engine's own path (``engine.loop.train``, what
``fit`` runs): the default image CNN on the first ``--steps`` × ``--batch-size`` training
images of ``--data``, two epochs of ``--steps`` steps each, fp32 (``--precision``) on the
CPU. Per variant it keeps the first epoch's seconds (which carry compilation and warm-up)
and the second's (the steady state). The variants rotate their order every repeat, in one
process, so the machine's load falls on all of them; medians and every repeat are reported.

From the medians: each variant's steady-state step time as a ratio of eager NCHW's, and for
compiled variants the break-even, in steps, where the compile time is paid back:
``(its first − second epoch seconds − eager's first − second) / (eager step − compiled step)``.

    python benchmarks/cpu_train_options.py --data ../shared/data/mnist --steps 30 --repeats 3

Raw output: ``benchmarks/results/cpu_train_options_<date>_<machine>_seed0_<data>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from deepstrata.config import TrainConfig
from deepstrata.data.images import load_images
from deepstrata.data.split import split_dataset
from deepstrata.engine.loop import train
from deepstrata.families.image.task import ImageClassificationTask, channel_stats
from deepstrata.models.registry import build_image_model
from results_io import result_path, write_results

VARIANTS = {"eager": (False, False), "channels-last": (True, False), "compile": (False, True),
            "compile+channels-last": (True, True)}


def epoch_seconds(splits, examples: int, cfg: TrainConfig, width: int) -> tuple[float, float]:
    """Seconds of the first and of the second training epoch of one fresh model."""
    x, y = splits.train_x[:examples], splits.train_y[:examples]
    mean, std = channel_stats(x)
    torch.manual_seed(0)
    net = build_image_model("cnn", tuple(x.shape[1:]), len(splits.classes), mean=mean, std=std, width=width)
    task = ImageClassificationTask(x, y, splits.val_x[:256], splits.val_y[:256], num_classes=len(splits.classes),
                                   precision=cfg.precision, channels_last=cfg.channels_last)
    torch._dynamo.reset()  # each compiled variant pays its own compilation, as a fresh fit process would
    with tempfile.TemporaryDirectory() as tmp:
        history = train(net, task, cfg, Path(tmp), quiet=True).history
    return history[0]["seconds"], history[1]["seconds"] - history[0]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--steps", type=int, default=30, help="steps of each of the two epochs")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--precision", default="32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--results", type=Path, default=None)
    options = parser.parse_args()
    from deepstrata.engine.devices import cpu_bf16_feature

    splits = split_dataset(load_images(options.data), seed=0)
    examples = options.steps * options.batch_size
    if examples > len(splits.train_x):
        parser.error(f"--steps {options.steps} × --batch-size {options.batch_size} is more than the "
                     f"{len(splits.train_x)} training images")
    path = options.results or result_path(__file__, [0], Path(options.data).name)
    runs: dict[str, list[dict]] = {name: [] for name in options.variants}
    results = {"data": options.data, "steps_per_epoch": options.steps, "batch_size": options.batch_size,
               "width": options.width, "precision": options.precision, "cpu_bf16_feature": cpu_bf16_feature(),
               "torch_threads": torch.get_num_threads(), "runs": runs}
    for repeat in range(options.repeats):
        shift = repeat % len(options.variants)
        for name in options.variants[shift:] + options.variants[:shift]:
            channels_last, compiled = VARIANTS[name]
            cfg = TrainConfig(epochs=2, batch_size=options.batch_size, device="cpu", precision=options.precision,
                              compile=compiled, channels_last=channels_last, schedule="constant",
                              checkpoint_seconds=0, plateau="off")
            first, second = epoch_seconds(splits, examples, cfg, options.width)
            runs[name].append({"repeat": repeat, "first_epoch_s": round(first, 3), "second_epoch_s": round(second, 3)})
            print(f"{name:<24} repeat {repeat}: first epoch {first:7.2f} s, second {second:7.2f} s",
                  file=sys.stderr, flush=True)
            write_results(path, results, [0])
    step = {name: statistics.median(r["second_epoch_s"] for r in rows) / options.steps for name, rows in runs.items()}
    eager = step.get("eager")
    warmup = lambda rows: statistics.median(r["first_epoch_s"] - r["second_epoch_s"] for r in rows)  # noqa: E731
    summary = {}
    for name, rows in runs.items():
        entry = {"median_step_s": round(step[name], 4),
                 "median_first_epoch_s": round(statistics.median(r["first_epoch_s"] for r in rows), 3)}
        if eager is not None:
            entry["step_ratio_to_eager"] = round(step[name] / eager, 3)
        if VARIANTS[name][1] and eager is not None:
            extra = warmup(rows) - warmup(runs["eager"])  # compilation, beyond eager's own first-epoch warm-up
            saved = eager - step[name]
            entry["compile_extra_s"] = round(extra, 2)
            entry["break_even_steps"] = round(extra / saved) if saved > 0 else None
        summary[name] = entry
        print(f"{name:<24} {entry}", file=sys.stderr)
    results["summary"] = summary
    write_results(path, results, [0])


if __name__ == "__main__":
    main()
