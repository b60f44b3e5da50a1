"""Real photos: a folder of large mixed-size JPEGs, trained with `deepstrata fit`'s defaults (issue 17).

The photos are made from data that travels with the code: a seeded subset of CIFAR-10's
JPEG copy (``../shared/data/cifar10-jpeg``, its own train/test split) re-rendered as large
camera-like JPEGs — each 32 px picture upscaled (bicubic) to fill the short side of a
canvas of 300-500 px on the long side, in a random landscape or portrait aspect
(4:3, 3:2, 1:1), placed off-centre along the long side, the rest mirrored from its edges,
saved at quality 90. The same subset is also kept as it is (the native 32 px folder), so
the two fits see the same pictures:

* ``native``  — ``fit`` on the 32 px folder (its size; the padded crop)
* ``photos``  — ``fit`` on the large JPEGs with the defaults (64 px on a CPU, aspect kept,
                centre crop, the resized training crop)
* ``photos-pad`` — the same with ``--crop pad`` (how the default crop was chosen)
* ``stream``  — ``fit`` on the large JPEGs at ``--image-size 128`` with a memory budget below
                their decoded size (``DEEPSTRATA_MEMORY_BUDGET``): decoded once into the run's
                shards and streamed; and ``memory`` the same in memory, for its peak RSS
* ``native-size`` — one epoch on ``--throughput`` of the photos at their own most common size
                (what the default was before this issue), for the images/s before and after

Each fit runs in a fresh process (``deepstrata fit``) and reports its own peak RSS (VmHWM),
wall time, decode rate (model.json's note), training images/s and test accuracy.

    nice -n 10 python benchmarks/photo_folder.py --per-class 600 --test-per-class 200 --epochs 8 --seeds 0 1

Raw output: ``benchmarks/results/photo_folder_<date>_<machine>_<seeds>.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from results_io import result_path, write_results

HERE = Path(__file__).resolve().parent
ARCHIVE = HERE.parent.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
ASPECTS = ((4, 3), (3, 2), (1, 1), (3, 4), (2, 3))


def render(picture, rng: np.random.Generator):
    """One 32 px picture as a large photo: upscaled to the canvas's short side, mirrored to fill the rest."""
    from PIL import Image, ImageOps

    long_side = int(rng.integers(300, 501))
    a, b = ASPECTS[int(rng.integers(len(ASPECTS)))]
    width, height = (long_side, long_side * b // a) if a >= b else (long_side * a // b, long_side)
    side = min(width, height)
    square = picture.convert("RGB").resize((side, side), Image.BICUBIC)
    slack_x, slack_y = width - side, height - side
    left = int(round(slack_x * rng.uniform(0.3, 0.7)))
    top = int(round(slack_y * rng.uniform(0.3, 0.7)))
    pad = (left, top, slack_x - left, slack_y - top)
    array = np.asarray(square)
    array = np.pad(array, ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), mode="symmetric")
    return ImageOps.exif_transpose(Image.fromarray(array))


def make(out: Path, per_class: int, test_per_class: int, seed: int) -> dict:
    """``out/native/{train,test}/<class>/*.jpg`` (copied bytes) and ``out/photos/...`` (rendered)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    wanted = {"train": per_class, "test": test_per_class}
    taken: dict[tuple[str, str], int] = {}
    sizes = []
    started = time.perf_counter()
    with tarfile.open(ARCHIVE, "r|xz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 4 or not parts[-1].endswith(".jpg"):
                continue
            split, label = parts[-3], parts[-2]
            if taken.get((split, label), 0) >= wanted.get(split, 0):
                continue
            taken[(split, label)] = taken.get((split, label), 0) + 1
            data = tar.extractfile(member).read()
            for kind in ("native", "photos"):
                (out / kind / split / label).mkdir(parents=True, exist_ok=True)
            (out / "native" / split / label / parts[-1]).write_bytes(data)
            photo = render(Image.open(io.BytesIO(data)), rng)
            photo.save(out / "photos" / split / label / parts[-1], quality=90)
            sizes.append(photo.size)
    counts = {split: sum(n for (s, _), n in taken.items() if s == split) for split in wanted}
    common = max(set(sizes), key=sizes.count)
    return {"images": counts, "seconds": round(time.perf_counter() - started, 1),
            "photo_bytes": sum(p.stat().st_size for p in (out / "photos").rglob("*.jpg")),
            "long_side_px": [min(max(s) for s in sizes), max(max(s) for s in sizes)],
            "portrait": sum(h > w for w, h in sizes), "most_common_size": list(common)}


def fit(name: str, data: Path, out: Path, args: list[str], env: dict | None = None) -> dict:
    """One ``deepstrata fit`` in a fresh process: its figures, peak RSS and wall time."""
    child = ("import resource, sys, runpy\n"
             "sys.argv = ['deepstrata'] + sys.argv[1:]\n"
             "from deepstrata.cli import main\n"
             "code = main(sys.argv[1:])\n"
             "status = open('/proc/self/status').read()\n"
             "print('PEAK_RSS_KB', [l.split()[1] for l in status.splitlines() if l.startswith('VmHWM')][0],"
             " file=sys.stderr)\n"
             "sys.exit(code)\n")
    command = [sys.executable, "-c", child, "fit", "--data", str(data), "--out", str(out), "--overwrite", *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: fit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak = int(re.search(r"PEAK_RSS_KB (\d+)", done.stderr).group(1)) / 1024
    comparison = json.loads((out / "comparison.json").read_text())
    info = json.loads((out / "model.json").read_text())
    rows = {row["name"]: row for row in comparison["rows"]}
    learned = next(row for row in comparison["rows"] if row.get("kind") == "learned")
    decode = [note for note in info["data"]["notes"] if "images/s" in note] or [
        line for line in done.stderr.splitlines() if line.startswith("data: decoded") and "images/s" in line]
    epochs = learned["settings"]["epochs_run"]
    train_seconds = learned["train_seconds"]
    return {
        "name": name, "args": args, "env": env or {}, "wall_s": round(wall, 1), "peak_rss_mb": round(peak, 1),
        "input_shape": info["spec"]["in_shape"], "augmentation": info["data"]["augmentation"],
        "test_accuracy": learned["metrics"]["accuracy"],
        "baselines": {model: row["metrics"]["accuracy"] for model, row in rows.items() if row.get("kind") != "learned"},
        "train_examples": comparison["split"]["train"], "epochs": epochs, "train_seconds": train_seconds,
        "train_images_per_s": (round(comparison["split"]["train"] * epochs / train_seconds, 1)
                               if train_seconds else None),
        "decode_note": decode[0] if decode else None,
        "streamed": info["data"].get("shards") is not None,
        "stderr_data_lines": [line for line in done.stderr.splitlines() if line.startswith(("data:", "note:"))],
    }


def summary(values: list[float]) -> dict:
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0  # sample std, as BENCHMARKS.md
    return {"mean": round(float(np.mean(values)), 4), "std": round(spread, 4), "seeds": len(values),
            "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=600, help="training photos per class")
    parser.add_argument("--test-per-class", type=int, default=200, help="test photos per class")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--throughput", type=int, default=300, help="photos for the native-size epoch")
    parser.add_argument("--stream-budget", default="64MiB", help="memory budget of the streaming fit")
    parser.add_argument("--work", help="folder for the photos and runs (default: a temporary one)")
    parser.add_argument("--results", help="raw output file (default benchmarks/results/...)")
    parser.add_argument("--skip", nargs="*", default=[], help="phases to leave out")
    args = parser.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="photo-folder-"))
    made = (json.loads((work / "made.json").read_text()) if (work / "made.json").is_file()
            else make(work, args.per_class, args.test_per_class, seed=0))
    (work / "made.json").write_text(json.dumps(made))  # a rerun with the same --work reuses the photos
    print(f"made {made}", file=sys.stderr)
    common = ["--epochs", str(args.epochs), "--device", "cpu"]
    results: dict = {"data": made, "settings": vars(args), "runs": [], "complete": False}

    out = Path(args.results) if args.results else result_path("photo_folder", args.seeds)

    def record(run: dict) -> None:
        results["runs"].append(run)
        summarise(results)
        write_results(out, results, args.seeds)  # after every run: a long benchmark stopped keeps what it measured
        print(json.dumps({k: run[k] for k in ("name", "test_accuracy", "wall_s", "peak_rss_mb",
                                               "train_images_per_s")}), file=sys.stderr)

    for seed in args.seeds:
        for name, data, extra in (("native", "native", []), ("photos", "photos", []),
                                  ("photos-pad", "photos", ["--crop", "pad"])):
            if name not in args.skip:
                record({**fit(name, work / data, work / f"run-{name}-{seed}", [*common, "--seed", str(seed), *extra]),
                        "seed": seed})
    stream_args = ["--image-size", "128", "--epochs", "1", "--no-baselines", "--device", "cpu"]
    if "stream" not in args.skip:
        record(fit("stream", work / "photos", work / "run-stream", stream_args,
                   env={"DEEPSTRATA_MEMORY_BUDGET": args.stream_budget}))
        record(fit("memory", work / "photos", work / "run-memory", stream_args))
    if "native-size" not in args.skip:
        subset = work / "throughput"
        for path in sorted((work / "photos" / "train").rglob("*.jpg"))[:: max(1, len(list(
                (work / "photos" / "train").rglob("*.jpg"))) // args.throughput)][: args.throughput]:
            target = subset / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
        size = min(made["most_common_size"])
        one = ["--epochs", "1", "--no-baselines", "--device", "cpu", "--val-fraction", "0"]
        record(fit("default-size", subset, work / "run-default-size", one))
        record(fit("native-size", subset, work / "run-native-size", [*one, "--image-size", str(size)]))

    results["complete"] = True
    write_results(out, results, args.seeds)


def summarise(results: dict) -> None:
    by_name: dict[str, list[float]] = {}
    for run in results["runs"]:
        by_name.setdefault(run["name"], []).append(run["test_accuracy"])
    results["accuracy"] = {name: summary(values) for name, values in by_name.items()}


if __name__ == "__main__":
    main()
