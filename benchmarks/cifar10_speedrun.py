"""CIFAR-10 to 94%: deepstrata's speed-run config beside airbench94 on the same card and tensors.

The JPEG folder is decoded once (by deepstrata's own reader); the decoded uint8 tensors
are written both as CIFAR python batches (which ``deepstrata fit`` reads) and as the
``cifar10/{train,test}.pt`` files airbench's loader reads, so both train on identical
pixels. Each side gets a warm-up run first (cuDNN autotuning, CUDA context), as airbench's
own ``warmup94`` does; timings are of the runs after it. airbench's time is what it
prints (whitening init + training + TTA evaluation, GPU-event timed); deepstrata's is
its loop's training seconds plus the timed TTA evaluation of the test split.

Seeds: deepstrata's run ``i`` of ``--runs`` uses seed ``i`` (0, 1, 2 for ``--runs 3``); the
two ``--compile`` runs and the warm-up use seed 0; airbench's runs are its own ``run=i``.
Every row is kept in ``benchmarks/results/cifar10_speedrun_<date>_<gpu>_seeds0-1-2_<precisions>.json``
(``--json`` to choose the file).

    python benchmarks/cifar10_speedrun.py --data cifar10-jpeg/ --work /tmp/speedrun --runs 3 \
        --precisions bf16,32 --compile
    python benchmarks/cifar10_speedrun.py --data ../shared/data/cifar10-jpeg --limit 2000 --epochs 1 \\
        --skip-airbench --precisions 32    # a CPU smoke test of the harness

airbench (PyPI ``airbench``, MIT) must be importable, e.g. ``PYTHONPATH=path/to/airbench``;
it imports torchvision only for ``transforms.Normalize`` once the ``.pt`` files exist, so
where torchvision is missing a two-line stand-in for that class is put on its path.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import result_path, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cifar10-94.yaml"

AIRBENCH_SCRIPT = """
import sys, time, airbench, torch
runs = int(sys.argv[1])
airbench.warmup94(verbose=False)
for run in range(runs):
    torch.cuda.synchronize(); start = time.perf_counter()
    airbench.train94(run=run)
    torch.cuda.synchronize(); print('WALL', time.perf_counter() - start, flush=True)
"""

TORCHVISION_STANDIN = {
    "torchvision/__init__.py": "from . import transforms\n",
    "torchvision/transforms.py": (
        "class Normalize:\n"
        "    def __init__(self, mean, std):\n"
        "        self.mean, self.std = mean, std\n"
        "    def __call__(self, x):\n"
        "        return (x - self.mean.view(-1, 1, 1).to(x)) / self.std.view(-1, 1, 1).to(x)\n"
    ),
}


def decode(folder: str, limit: int | None):
    from deepstrata.data.images import load_images

    start = time.perf_counter()
    ds = load_images(folder)
    seconds = time.perf_counter() - start
    x, y, tx, ty = ds.x, ds.y, ds.test_x, ds.test_y
    # The folder is ordered by class; the original CIFAR batches are not, and airbench fits its
    # whitening layer to the first 5,000 training images, so both sides get one fixed shuffle.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    if limit:  # a fixed random subset
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:limit]
        keep_test = torch.randperm(len(tx), generator=torch.Generator().manual_seed(1))[: max(1, limit // 5)]
        x, y, tx, ty = x[keep], y[keep], tx[keep_test], ty[keep_test]
    return x, y, tx, ty, ds.classes, seconds


def write_cifar_batches(folder: Path, x, y, tx, ty, classes) -> None:
    """The CIFAR-10 python layout (data_batch_1..5, test_batch, batches.meta); our own data, so pickle is fine."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = np.array_split(np.arange(len(x)), 5)
    for number, index in enumerate(parts, start=1):
        batch = {"data": x[index].reshape(len(index), -1).numpy(), "labels": y[index].tolist()}
        (folder / f"data_batch_{number}").write_bytes(pickle.dumps(batch, protocol=2))
    test = {"data": tx.reshape(len(tx), -1).numpy(), "labels": ty.tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(test, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(classes)}, protocol=2))


def write_airbench_tensors(folder: Path, x, y, tx, ty, classes) -> None:
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for name, images, labels in (("train", x, y), ("test", tx, ty)):
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels, "classes": list(classes)},
                   folder / "cifar10" / f"{name}.pt")


def run_deepstrata(batches: Path, out: Path, precision: str, epochs: int | None, compile_: bool, seed: int = 0) -> dict:
    import deepstrata as ds
    from deepstrata.engine.devices import synchronize
    from deepstrata.families.image.task import predict_logits

    overrides = {"precision": precision, "compile": compile_, "seed": seed}
    if epochs:
        overrides["epochs"] = epochs
    start = time.perf_counter()
    run = ds.fit(str(batches), config=str(CONFIG), out=out, overwrite=True, quiet=True, baselines=False,
                 **overrides)
    wall = time.perf_counter() - start
    row = run.comparison()["rows"][0]
    # Time the test split's TTA evaluation as fit did it (fit does not time it separately).
    test = ds.load(out)
    from deepstrata.data.images import load_images

    data = load_images(str(batches))
    device = torch.device(row["settings"]["device"])
    model = test.model.to(device).to(memory_format=torch.channels_last)
    synchronize(device)
    eval_start = time.perf_counter()
    logits = predict_logits(model, data.test_x.to(device), device, 1024, precision, True, tta=True, mirror=True)
    synchronize(device)
    eval_seconds = time.perf_counter() - eval_start
    accuracy = float((logits.argmax(1) == data.test_y).float().mean())
    return {"side": "deepstrata", "precision": precision, "compile": compile_,
            "test_accuracy": row["metrics"]["accuracy"], "recheck_accuracy": accuracy,
            "train_seconds": row["train_seconds"], "tta_eval_seconds": round(eval_seconds, 3),
            "seconds": round(row["train_seconds"] + eval_seconds, 3), "fit_wall_seconds": round(wall, 2),
            "epochs": row["settings"]["epochs_run"], "seed": seed}


def torchvision_standin(folder: Path) -> Path:
    """Write the stand-in ``torchvision`` package under ``folder``; returns the path to put on PYTHONPATH."""
    shim = folder / "standin"
    for name, text in TORCHVISION_STANDIN.items():
        (shim / name).parent.mkdir(parents=True, exist_ok=True)
        (shim / name).write_text(text)
    return shim


def airbench_final_rows(stdout: str) -> list[dict]:
    """The last row of each table airbench prints: |  run  |  eval  | ... | tta_val_acc | total_time_seconds |
    (the run cell is blank after a run's first row)."""
    rows = []
    for line in re.findall(r"\|[^|\n]*\|\s*eval\s*\|[^\n]*", stdout):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append({"side": "airbench94", "test_accuracy": float(cells[5]), "seconds": float(cells[6])})
    return rows


def run_airbench(folder: Path, runs: int) -> list[dict]:
    env = dict(os.environ)
    try:
        __import__("torchvision")
    except Exception:  # noqa: BLE001 - any import failure means we need the stand-in
        env["PYTHONPATH"] = f"{torchvision_standin(folder)}:{env.get('PYTHONPATH', '')}"
    out = subprocess.run([sys.executable, "-c", AIRBENCH_SCRIPT, str(runs)], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=600)
    print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
    walls = [float(w) for w in re.findall(r"WALL ([\d.]+)", out.stdout)]
    return [{**row, "wall_seconds": round(wall, 2)} for row, wall in zip(airbench_final_rows(out.stdout), walls)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
    parser.add_argument("--work", default="/tmp/speedrun")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precisions", default="bf16", help="comma-separated, e.g. bf16,32")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs (smoke tests)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N training images (smoke tests)")
    parser.add_argument("--compile", action="store_true", help="also one deepstrata run with --compile")
    parser.add_argument("--skip-airbench", action="store_true")
    parser.add_argument("--json", default=None, help="write the rows here (default: benchmarks/results/"
                        "cifar10_speedrun_<date>_<machine>_seeds<S>_<precisions>[-compile].json)")
    args = parser.parse_args()

    work = Path(args.work)
    x, y, tx, ty, classes, decode_seconds = decode(args.data, args.limit)
    print(f"decoded {len(x)} + {len(tx)} images in {decode_seconds:.1f}s", file=sys.stderr)
    write_cifar_batches(work / "batches", x, y, tx, ty, classes)
    write_airbench_tensors(work / "airbench", x, y, tx, ty, classes)
    rows: list[dict] = []
    if not args.skip_airbench:
        rows += run_airbench(work / "airbench", args.runs)
        print(json.dumps(rows, indent=1), file=sys.stderr, flush=True)
    for precision in args.precisions.split(","):
        run_deepstrata(work / "batches", work / "warmup", precision, 1, False)  # cuDNN autotuning, CUDA context
        for index in range(args.runs):
            row = run_deepstrata(work / "batches", work / f"ds_{precision}_{index}", precision, args.epochs, False, index)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if args.compile:
        for index in range(2):  # the first pays for compilation
            row = run_deepstrata(work / "batches", work / f"ds_compile_{index}", args.precisions.split(",")[0],
                                 args.epochs, True)
            rows.append({**row, "note": "first (compiles)" if index == 0 else "second (compiled graphs cached)"})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = {"decode_seconds": round(decode_seconds, 2), "device": torch.cuda.get_device_name()
               if torch.cuda.is_available() else "cpu", "torch": torch.__version__, "rows": rows}
    ab = [r["seconds"] for r in rows if r["side"] == "airbench94"]
    mine = [r["seconds"] for r in rows if r["side"] == "deepstrata" and not r["compile"]]
    if ab and mine:
        summary["ratio_median"] = round(float(np.median(mine) / np.median(ab)), 3)
    print(json.dumps(summary, indent=1))
    tag = args.precisions.replace(",", "+") + ("-compile" if args.compile else "") + (f"-n{args.limit}" if args.limit else "")
    write_results(Path(args.json) if args.json else result_path("cifar10_speedrun", list(range(args.runs)), tag),
                  {**summary, "settings": vars(args)}, list(range(args.runs)))


if __name__ == "__main__":
    main()
