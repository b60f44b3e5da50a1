"""Without a GPU: is deepstrata's speed-run config the same recipe as airbench94? A small-scale check.

airbench's own training code (PyPI ``airbench``) runs on the CPU here, with its CUDA
calls patched to CPU equivalents and its fp16 cast left out, beside ``deepstrata fit``
with ``configs/cifar10-94.yaml``; both on the same random 10,000 training / 2,000 test
images of the CIFAR-10 JPEG copy, at width 16 (stages 16/64/64), 4 epochs, batch 256
(airbench's learning rate per 1024 examples gives lr 0.375 at this batch). Each side runs
one process at a time, over seeds.

    PYTHONPATH=path/to/airbench python benchmarks/speedrun_cpu_check.py --seeds 0 1 2
    # full scale (all 50,000 images, width 64, 10 epochs of 1024): about an hour a side on 2 cores
    PYTHONPATH=path/to/airbench python benchmarks/speedrun_cpu_check.py --seeds 0 --limit 0 --width 64 \
        --epochs 10 --batch-size 1024 --fills reflect

Every row (side, seed, test accuracy, seconds) is kept in
``benchmarks/results/speedrun_cpu_check_<date>_<machine>_seeds<S>_<settings>.json`` (``--results``),
rewritten after each seed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cifar10_speedrun as speedrun  # noqa: E402  (the harness next to this file)
from results_io import result_path, write_results  # noqa: E402

AIRBENCH_ON_CPU = """
import sys, time, torch
seed, width, epochs, batch_size = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
class Event:  # torch.cuda.Event stand-in: wall-clock
    def __init__(self, **kwargs): pass
    def record(self): self.t = time.perf_counter()
    def elapsed_time(self, other): return (other.t - self.t) * 1000
torch.cuda.Event, torch.cuda.synchronize = Event, lambda *a: None
torch.nn.Module.cuda = lambda self, *a, **k: self
torch.nn.Module.half = lambda self: self  # fp32 on the CPU
from airbench import utils, lib_airbench94, train94
original = utils.CifarLoader.__init__
def on_cpu(self, *args, gpu=0, **kwargs):
    original(self, *args, gpu="cpu", **kwargs)
    object.__setattr__(self, "images", self.images.float())
utils.CifarLoader.__init__ = on_cpu
loader = utils.CifarLoader("cifar10", train=True, batch_size=batch_size, aug=dict(flip=True, translate=2),
                           altflip=True)
torch.manual_seed(seed)
train94(train_loader=loader, epochs=epochs, make_net=lambda: lib_airbench94.make_net94(
    widths=dict(block1=width, block2=4 * width, block3=4 * width)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parents[1] / "shared" / "data" / "cifar10-jpeg"))
    parser.add_argument("--work", default="/tmp/speedrun-cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--limit", type=int, default=10_000, help="random training images (0: all 50,000)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sides", default="airbench,deepstrata", help="which sides to run")
    parser.add_argument("--fills", default="zeros,reflect", help="deepstrata translate_fill settings to run")
    parser.add_argument("--results", type=Path, default=None, help="raw output JSON (default: benchmarks/results/"
                        "speedrun_cpu_check_<date>_<machine>_seeds<S>_w<W>-e<E>-b<B>-n<N>-<sides>.json)")
    args = parser.parse_args()
    results_path = args.results or result_path(
        "speedrun_cpu_check", args.seeds,
        f"w{args.width}-e{args.epochs}-b{args.batch_size}-n{args.limit or 50000}-{args.sides.replace(',', '+')}")
    settings = {k: v for k, v in vars(args).items() if k != "results"}
    kept: list[dict] = []

    import deepstrata as ds

    work = Path(args.work)
    x, y, tx, ty, classes, _ = speedrun.decode(args.data, args.limit or None)
    speedrun.write_cifar_batches(work / "batches", x, y, tx, ty, classes)
    speedrun.write_airbench_tensors(work / "airbench", x, y, tx, ty, classes)
    env = dict(os.environ)
    try:
        __import__("torchvision")
    except Exception:  # noqa: BLE001
        env["PYTHONPATH"] = f"{speedrun.torchvision_standin(work / 'airbench')}:{env.get('PYTHONPATH', '')}"
    sides = args.sides.split(",")
    fills = args.fills.split(",") if "deepstrata" in sides else []
    lr = 1.5 * args.batch_size / 1024  # airbench's 11.5 per 1024 examples at momentum 0.85, for the mean loss
    for seed in args.seeds:
        rows = []
        if "airbench" in sides:
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", AIRBENCH_ON_CPU, str(seed), str(args.width), str(args.epochs),
                                  str(args.batch_size)], cwd=work / "airbench", env=env, capture_output=True,
                                 text=True, check=True)
            final = speedrun.airbench_final_rows(out.stdout)[0]
            rows.append(("airbench94 (its code, on CPU)", seed, final["test_accuracy"], time.perf_counter() - start))
        for fill in fills:
            start = time.perf_counter()
            run = ds.fit(str(work / "batches"), config=str(speedrun.CONFIG), out=work / f"ds_{fill}_{seed}",
                         overwrite=True, quiet=True, baselines=False, width=args.width, epochs=args.epochs,
                         batch_size=args.batch_size, lr=lr, precision="32", device="cpu", seed=seed,
                         translate_fill=fill)
            accuracy = run.comparison()["rows"][0]["metrics"]["accuracy"]
            rows.append((f"deepstrata, translate_fill={fill}", seed, accuracy, time.perf_counter() - start))
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]:.4f} | {row[3]:.0f} |", flush=True)
        kept += [{"side": side, "seed": s, "test_accuracy": accuracy, "seconds": seconds}
                 for side, s, accuracy, seconds in rows]
        write_results(results_path, {"settings": settings, "lr": lr, "rows": kept}, args.seeds)


if __name__ == "__main__":
    main()
