"""bf16 autocast against fp32, same command and seed: is the accuracy the same? (Before ``--precision auto``.)

``--precision auto`` trains in bf16 where the hardware runs it natively. Before that is a
default, each family's accuracy in bf16 must match fp32's. This runs, per data set and
seed, the same ``deepstrata fit`` twice, ``--precision 32`` and ``--precision bf16``, and
keeps the learned model's test metric and train seconds of both.

On a CPU without AVX512-BF16 or AMX (see ``deepstrata.engine.devices.cpu_bf16_feature``,
recorded in the output) bf16 is emulated: its *accuracy* is what native bf16 gives (the
same rounding of the same operations), its *speed* is not, so the seconds are kept only
as a record, never as a speed-up figure.

Sets (``--sets``, all by default; each reads ``../shared/data``):

* ``digits`` — scikit-learn's digits, the defaults (CNN, 40 epochs of 10 steps);
* ``mnist`` — MNIST, ``--per-class`` (default 1,200) labelled training images per class (the
  official 10,000 test images whole), CNN width 16, 2 epochs;
* ``cifar`` — the CIFAR-10 JPEG copy unpacked into ``--work``, ``--per-class`` per class (test whole), 3 epochs;
* ``agnews`` — AG News's 7,600-row file, the Transformer at dim 64, 3 epochs, 4,000-word vocabulary;
* ``movielens`` — MovieLens 100K's ``u.data``, ``--task recommend`` with its defaults (the learned row's metrics);
* ``movielens-mf`` — the same with ``--model mf`` (matrix factorisation with BPR: a recommendation
  model whose fp32 fit takes seconds, where the sequence model's takes many minutes);
* ``movielens-sasrec`` — the sequence model (the default) for 5 of its 30 epochs, whose attention
  and projections are what bf16 autocast changes (MF's operations are not among them).

    PYTHONPATH=/tmp/snap/src nice -n 5 .venv/bin/python benchmarks/precision_parity.py --seeds 0 1 2

Raw output: ``benchmarks/results/precision_parity_<date>_<machine>_<seeds>.json``, rewritten
after every fit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from results_io import result_path, write_results

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _sets(work: Path, per_class: int) -> dict[str, tuple[list[str], str | None]]:
    """name -> (fit arguments, the comparison row whose test metric is compared; None: the learned one)."""
    return {
        "digits": (["--data", "digits"], "cnn"),
        "mnist": (["--data", str(SHARED / "mnist"), "--labels-per-class", str(per_class), "--width", "16",
                   "--epochs", "2"], "cnn"),
        "cifar": (["--data", str(work / "cifar10-jpeg"), "--labels-per-class", str(per_class), "--epochs", "3"],
                  "cnn"),
        "agnews": (["--data", str(SHARED / "ag-news" / "test.csv"), "--dim", "64", "--epochs", "3",
                    "--vocab-size", "4000", "--max-length", "64"], "transformer"),
        "movielens": (["--data", str(SHARED / "movielens-100k" / "u.data"), "--task", "recommend"], None),
        "movielens-mf": (["--data", str(SHARED / "movielens-100k" / "u.data"), "--task", "recommend", "--model",
                          "mf"], None),
        "movielens-sasrec": (["--data", str(SHARED / "movielens-100k" / "u.data"), "--task", "recommend",
                              "--model", "sasrec", "--epochs", "5"], None),
    }


def _unpack_cifar(work: Path) -> None:
    if not (work / "cifar10-jpeg").is_dir():
        with tarfile.open(SHARED / "cifar10-jpeg" / "cifar10-jpeg.tar.xz") as tar:
            tar.extractall(work, filter="data")


def _learned_row(comparison: dict, name: str | None) -> dict:
    rows = [row for row in comparison["rows"] if row.get("kind") == "learned"]
    return next(row for row in rows if name is None or row.get("name") == name)


def fit(args: list[str], out: Path, precision: str, seed: int) -> dict:
    command = [sys.executable, "-m", "deepstrata", "fit", *args, "--precision", precision, "--seed", str(seed),
               "--device", "cpu", "--no-baselines", "--quiet", "--out", str(out), "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return {"command": command[2:], "wall_s": round(time.perf_counter() - started, 2),
            "comparison": json.loads((out / "comparison.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["digits", "mnist", "cifar", "agnews", "movielens"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--per-class", type=int, default=1_200)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--results", type=Path, default=None)
    options = parser.parse_args()
    from deepstrata.engine.devices import cpu_bf16_feature

    work = options.work or Path(tempfile.mkdtemp(prefix="parity-"))
    if "cifar" in options.sets:
        _unpack_cifar(work)
    sets = _sets(work, options.per_class)
    path = options.results or result_path(__file__, options.seeds)
    results: list[dict] = []
    for seed in options.seeds:
        for name in options.sets:
            args, row_name = sets[name]
            entry: dict = {"set": name, "seed": seed}
            for precision in ("32", "bf16"):
                done = fit(args, work / f"{name}-{seed}-{precision}", precision, seed)
                row = _learned_row(done["comparison"], row_name)
                entry[precision] = {"metrics": row["metrics"], "train_seconds": row.get("train_seconds"),
                                    "wall_s": done["wall_s"], "command": done["command"]}
                print(f"{name} seed {seed} {precision}: {row['metrics']}", file=sys.stderr, flush=True)
            results.append(entry)
            write_results(path, results, options.seeds, cpu_bf16_feature=cpu_bf16_feature())


if __name__ == "__main__":
    main()
