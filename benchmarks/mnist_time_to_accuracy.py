"""MNIST time to accuracy: ``deepstrata fit`` against a hand-written PyTorch reference loop, in one run.

The measure is training seconds until the official 10,000-image test split first reaches
``--target`` (default 0.995). Each contender is evaluated on the test split after every
epoch (evaluation time left out of its clock):

* ``reference`` — a plain PyTorch loop as a practitioner writes it, on the same data split
  and the same CNN (deepstrata's ``CNN``, width 32, seeded the same), with only ``torch``
  APIs: ``torch.optim.AdamW`` (lr 3e-3, weight decay 5e-4), ``OneCycleLR`` (25% warm-up,
  linear) over ``--reference-epochs`` (default 4) epochs of batch 256, cross-entropy with
  label smoothing 0.1, gradient clipping at 2, a random 2-pixel crop, fp32. It is the
  engine's default recipe without the engine, so the comparison is of what the engine and
  its defaults add or save, not of two recipes.
* ``deepstrata …`` — the CLI itself in a subprocess (``deepstrata fit --data MNIST
  --no-baselines`` plus each ``--variant``'s flags), per epoch: metrics.jsonl's cumulative
  ``seconds`` and, from the run's checkpointed best weights, the test accuracy of the run.
  As the CLI scores only its best weights, the per-epoch test accuracy of a variant is
  read by running it once per epoch budget (``--epochs E``, a full one-cycle each): the
  time to accuracy is that of the smallest budget that reaches the target.

The CPU's flags matter (bf16 speed-ups need AVX512-BF16 or AMX): ``cpu_bf16_feature`` is
recorded. Seeds: ``--seeds`` (the split, the initialisation and the batches).

    PYTHONPATH=/tmp/snap/src nice -n 5 .venv/bin/python benchmarks/mnist_time_to_accuracy.py \\
        --variant "" --budgets 2 4

Raw output: ``benchmarks/results/mnist_time_to_accuracy_<date>_<machine>_<seeds>.json``,
rewritten after every fit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from results_io import result_path, write_results

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def test_accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x[i:i + 1000].float() / 255).argmax(1) == y[i:i + 1000]).sum())
                   for i in range(0, len(y), 1000))
    return hits / len(y)


def crop(padded: torch.Tensor, generator: torch.Generator, size: int = 28) -> torch.Tensor:
    """A random ``size`` window of each padded image (its own offset per image)."""
    n = len(padded)
    dy, dx = torch.randint(0, padded.shape[-1] - size + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(size))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(size))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(padded.shape[1])[None, :, None, None], rows, cols]


def reference(seed: int, epochs: int, target: float) -> dict:
    """The hand-written loop; per epoch its cumulative training seconds and test accuracy."""
    from deepstrata.data.images import load_images
    from deepstrata.data.split import split_dataset
    from deepstrata.families.image.task import channel_stats
    from deepstrata.models.cnn import CNN

    if epochs == 0:  # --reference-epochs 0: the engine's budgets alone (more seeds of them, cheaply)
        return {"epochs": [], "seconds_to_target": None}
    data = split_dataset(load_images(str(MNIST)), seed=seed)
    x, y = data.train_x, data.train_y
    mean, std = channel_stats(x)
    torch.manual_seed(seed)
    model = CNN(tuple(x.shape[1:]), 10, width=32, mean=mean, std=std)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0}],
                                  lr=3e-3)
    steps = len(y) // 256
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps * epochs,
                                                   pct_start=0.25, anneal_strategy="linear")
    generator = torch.Generator().manual_seed(seed)
    seconds, rows = 0.0, []
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(y), generator=generator)
        for i in range(steps):
            idx = order[i * 256:(i + 1) * 256]
            images = crop(F.pad(x[idx].float() / 255, (2, 2, 2, 2)), generator)
            loss = F.cross_entropy(model(images), y[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            optimizer.step()
            schedule.step()
        seconds += time.perf_counter() - start
        rows.append({"epoch": epoch + 1, "train_seconds": round(seconds, 2),
                     "test_accuracy": test_accuracy(model, data.test_x, data.test_y)})
        print(f"reference epoch {epoch + 1}: {rows[-1]}", file=sys.stderr, flush=True)
    reached = next((row for row in rows if row["test_accuracy"] >= target), None)
    return {"epochs": rows, "seconds_to_target": reached["train_seconds"] if reached else None}


def engine(flags: list[str], epochs: int, seed: int, work: Path) -> dict:
    out = work / f"engine-{'_'.join(flags) or 'default'}-{epochs}-{seed}"
    command = [sys.executable, "-m", "deepstrata", "fit", "--data", str(MNIST), "--no-baselines", "--quiet",
               "--seed", str(seed), "--epochs", str(epochs), "--out", str(out), "--overwrite", *flags]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    row = next(r for r in json.loads((out / "comparison.json").read_text())["rows"] if r["kind"] == "learned")
    provenance = json.loads((out / "provenance.json").read_text())
    return {"command": command[2:], "epochs": epochs, "wall_s": round(time.perf_counter() - start, 2),
            "train_seconds": row["train_seconds"], "test_accuracy": row["metrics"]["accuracy"],
            "precision": provenance.get("precision"), "precision_reason": provenance.get("precision_reason")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=float, default=0.995)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--reference-epochs", type=int, default=4, help="0 leaves the reference loop out")
    parser.add_argument("--variant", action="append", default=None,
                        help='extra fit flags of one engine variant, e.g. "" or "--channels-last"; repeatable')
    parser.add_argument("--budgets", nargs="+", type=int, default=[2, 4], help="epoch budgets of each variant")
    parser.add_argument("--results", type=Path, default=None)
    options = parser.parse_args()
    from deepstrata.engine.devices import cpu_bf16_feature

    variants = [v.split() for v in (options.variant or [""])]
    path = options.results or result_path(__file__, options.seeds)
    work = Path(tempfile.mkdtemp(prefix="mnist-tta-"))
    results: dict = {"target": options.target, "cpu_bf16_feature": cpu_bf16_feature(),
                     "torch_threads": torch.get_num_threads(), "runs": []}
    for seed in options.seeds:
        for flags in variants:  # engine and reference alternate, so the machine's load falls on both
            for epochs in options.budgets:
                results["runs"].append({"who": "deepstrata", "flags": flags, "seed": seed,
                                        **engine(flags, epochs, seed, work)})
                print(results["runs"][-1], file=sys.stderr, flush=True)
                write_results(path, results, options.seeds)
        results["runs"].append({"who": "reference", "seed": seed,
                                **reference(seed, options.reference_epochs, options.target)})
        write_results(path, results, options.seeds)


if __name__ == "__main__":
    main()
