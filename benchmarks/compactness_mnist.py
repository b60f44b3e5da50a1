"""Compactness and search on MNIST (issue 14): 784 pixels vs a CNN's embedding, and exact search latency.

Fits a CNN on MNIST (``../shared/data/mnist``; ``--width 16 --epochs 1`` by default: a few
CPU minutes on a 2-core machine), embeds all 70,000 images with ``Run.embed`` (the default layer,
``features``: the vector the head classifies), then measures:

* compactness on the 10,000 official test images, with ``deepstrata.inspect.compactness``
  (as ``deepstrata inspect`` does): dimension, bytes per example (float32), linear-probe
  and cosine 1-NN accuracy of the raw pixels and of the embedding, fitted on one half of
  the test set (stratified, seed 0) and scored on the other half; and, beside it, the
  1-NN accuracy of each test image against all 60,000 training images;
* search over the 60,000 training embeddings: median latency of ``Run.search`` for
  ``--queries`` test images given as PNG files (decode + embed + cosine top-10), and of the
  cosine top-10 alone (one [1, D] x [D, 60000] product);
* that each training image's nearest neighbour in its own index is itself (exact search,
  all 60,000 as queries; identical duplicate images tie, so both "top-1 is itself" and
  "itself scores the maximum" are counted).

    PYTHONPATH=/tmp/snap-embed/src nice -n 5 .venv/bin/python benchmarks/compactness_mnist.py

Raw output: ``benchmarks/results/compactness_mnist_<date>_<machine>_seed<S>.json``
(``--results``). The run directory goes under ``--out`` (not kept in git).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import deepstrata
from deepstrata.embeddings import Embeddings
from deepstrata.inspect.compactness import compactness, nearest_neighbour_accuracy
from deepstrata.inspect.probes import ProbeSettings, probe_split
from deepstrata.vector_search import cosine_top_k
from results_io import result_path, write_results

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"


def subset(emb: Embeddings, prefix: str) -> Embeddings:
    rows = [i for i, name in enumerate(emb.ids) if name.startswith(prefix)]
    return Embeddings(emb.vectors[rows], [emb.ids[i] for i in rows], [emb.labels[i] for i in rows], emb.meta,
                      source=f"{emb.source} ({prefix}*)")


def self_neighbours(index: Embeddings, batch: int = 2048) -> dict:
    """Each row as a query against its own index: is the top-1 itself, and does itself score the maximum?"""
    unit = index.unit()
    top_is_self = ties_with_self = 0
    started = time.perf_counter()
    for start in range(0, len(index), batch):
        queries = unit[start:start + batch]
        scores, rows = cosine_top_k(unit, queries, 1, index_is_unit=True)
        own = np.arange(start, start + len(queries))
        top_is_self += int((rows[:, 0] == own).sum())
        self_scores = (queries * queries).sum(1).numpy()
        ties_with_self += int((self_scores >= scores[:, 0] - 1e-6).sum())
    return {"queries": len(index), "top1_is_self": top_is_self / len(index),
            "self_scores_the_maximum": ties_with_self / len(index), "seconds": time.perf_counter() - started}


def latency(run, train: Embeddings, test_images: np.ndarray, queries: int) -> dict:
    """Median wall time of ``Run.search`` (files) and of the cosine top-10 alone, over ``queries`` test images."""
    unit = train.unit()
    vectors = run.embed(torch.from_numpy(test_images[:queries]))  # in-memory images: the matrix
    product = []
    for row in vectors:
        started = time.perf_counter()
        cosine_top_k(unit, row[None], 10, index_is_unit=True)
        product.append(time.perf_counter() - started)
    end_to_end = []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(queries):
            path = Path(folder) / f"test-{i}.png"
            Image.fromarray(test_images[i, 0]).save(path)
            started = time.perf_counter()
            run.search(train, str(path), k=10)
            end_to_end.append(time.perf_counter() - started)
    return {"index_rows": len(train), "dim": train.dim, "queries": queries, "k": 10,
            "search_median_ms": 1000 * statistics.median(end_to_end),
            "search_max_ms": 1000 * max(end_to_end),
            "top_k_only_median_ms": 1000 * statistics.median(product),
            "top_k_only_max_ms": 1000 * max(product),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "compactness")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--width", type=int, default=16, help="CNN width (default 16: a few CPU minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=25)
    parser.add_argument("--reuse", action="store_true", help="reuse the run in --out if it finished")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    run_dir = args.out / "mnist-cnn"
    fit_seconds = None
    if not (args.reuse and (run_dir / "comparison.json").is_file()):
        started = time.perf_counter()
        deepstrata.fit(data=str(MNIST), model="cnn", epochs=args.epochs, width=args.width, seed=args.seed, out=run_dir, overwrite=True,
                       quiet=True, baselines=False, device="cpu")
        fit_seconds = time.perf_counter() - started
    run = deepstrata.load(run_dir)
    test_accuracy = run.comparison()["rows"][0]["metrics"]["accuracy"]

    started = time.perf_counter()
    emb = run.embed(str(MNIST))
    embed_seconds = time.perf_counter() - started
    train, test = subset(emb, "train/"), subset(emb, "test/")

    from deepstrata.data.images import load_images

    dataset = load_images(str(MNIST))
    test_images = dataset.test_x.numpy()
    pixels = test_images.reshape(len(test_images), -1).astype(np.float32) / 255.0
    train_pixels = dataset.x.numpy().reshape(len(dataset.x), -1).astype(np.float32) / 255.0
    labels = dataset.test_y.numpy()
    assert [int(v) for v in test.labels] == labels.tolist()

    settings = ProbeSettings(seed=args.seed)
    fit_idx, score_idx = probe_split(labels, settings.fit_fraction, settings.seed)
    started = time.perf_counter()
    record = compactness(pixels, pixels.shape[1], test.vectors, labels, layer=emb.layer, fit_idx=fit_idx,
                         score_idx=score_idx, settings=settings)
    compact_seconds = time.perf_counter() - started

    all_labels = np.concatenate([dataset.y.numpy(), labels])
    train_idx, test_idx = np.arange(len(train_pixels)), np.arange(len(train_pixels), len(all_labels))
    started = time.perf_counter()
    nn_full = {"raw input": nearest_neighbour_accuracy(np.concatenate([train_pixels, pixels]), all_labels, train_idx,
                                                       test_idx),
               f"embedding ({emb.layer})": nearest_neighbour_accuracy(np.concatenate([train.vectors, test.vectors]),
                                                                      all_labels, train_idx, test_idx)}
    nn_full_seconds = time.perf_counter() - started

    results = {
        "run": str(run_dir), "epochs": args.epochs, "width": args.width, "fit_seconds": fit_seconds, "test_accuracy": test_accuracy,
        "embed": {"rows": len(emb), "dim": emb.dim, "layer": emb.layer, "seconds": embed_seconds},
        "compactness_test_halves": record, "compactness_seconds": compact_seconds,
        "nn_accuracy_test_vs_60k_train": nn_full, "nn_full_seconds": nn_full_seconds,
        "search": latency(run, train, test_images, args.queries),
        "self_neighbour": self_neighbours(train),
    }
    path = args.results or result_path("compactness_mnist", args.seed)
    write_results(path, results, args.seed, script="benchmarks/compactness_mnist.py")
    print(results)


if __name__ == "__main__":
    main()
