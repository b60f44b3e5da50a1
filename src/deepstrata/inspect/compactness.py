"""Compactness: how much smaller a run's embedding is than its raw input, and how much of the labels it keeps.

A learned representation is worth storing when it is much smaller than the input and
separates the classes at least as well. For the raw input and for the embedding (the
default ``embed`` layer, ``features``: the vector the head classifies) this gives the
dimension, the bytes per example as float32, and two accuracies on the inspection
sample's own halves (the linear probes' fit/score split):

* the linear probe (``probes.probe_accuracy``: standardised features, logistic regression);
* the nearest neighbour: the label of the fit-half example nearest by cosine
  (``vector_search.cosine_top_k``, exact; ties go to the lower index).

Raw inputs that are not a vector space (a text's token ids) get their size only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from deepstrata.inspect.probes import ProbeSettings, probe_accuracy
from deepstrata.vector_search import cosine_top_k

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Representation:
    """One representation of the examples: its size and what a probe and 1-NN read from it."""

    name: str
    dim: int
    bytes_per_example: int
    probe_accuracy: float | None
    nn_accuracy: float | None

    def to_dict(self) -> dict:
        record = asdict(self)
        for key in ("probe_accuracy", "nn_accuracy"):
            if record[key] is not None:
                record[key] = round(record[key], 6)
        return record


def nearest_neighbour_accuracy(features: np.ndarray, labels: np.ndarray, fit_idx: np.ndarray,
                               score_idx: np.ndarray) -> float:
    """Share of ``score_idx`` examples whose cosine-nearest ``fit_idx`` example has their label."""
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    labels = np.asarray(labels)
    _, nearest = cosine_top_k(x[fit_idx], x[score_idx], 1)
    return float(np.mean(labels[fit_idx][nearest[:, 0]] == labels[score_idx]))


def describe(features: np.ndarray | None, name: str, dim: int, labels, fit_idx, score_idx,
             settings: ProbeSettings, probe: float | None = None) -> Representation:
    """``name``'s size and, when ``features`` is a vector per example, its probe (or ``probe``) and 1-NN accuracy."""
    if features is None:
        return Representation(name, dim, dim * FLOAT32_BYTES, None, None)
    if probe is None:
        probe, _ = probe_accuracy(features, labels, fit_idx, score_idx, settings)
    return Representation(name, dim, dim * FLOAT32_BYTES, float(probe),
                          nearest_neighbour_accuracy(features, labels, fit_idx, score_idx))


def compactness(raw: np.ndarray | None, raw_dim: int, embedding: np.ndarray, labels: np.ndarray, *, layer: str,
                fit_idx: np.ndarray, score_idx: np.ndarray, settings: ProbeSettings = ProbeSettings(),
                raw_probe: float | None = None, raw_name: str = "raw input") -> dict:
    """The compactness record of ``inspect``'s summary: raw input and embedding side by side.

    ``raw``: the inputs as one float vector per example, or None when they are not a vector
    space (only ``raw_dim`` is reported); ``raw_probe``: its probe accuracy if already known.
    """
    embedding = np.asarray(embedding, dtype=np.float32).reshape(len(embedding), -1)
    rows = [describe(raw, raw_name, raw_dim, labels, fit_idx, score_idx, settings, raw_probe),
            describe(embedding, f"embedding ({layer})", int(embedding.shape[1]), labels, fit_idx, score_idx, settings)]
    return {
        "layer": layer,
        "compression": round(raw_dim / max(1, embedding.shape[1]), 3),
        "representations": [r.to_dict() for r in rows],
        "split": {"fit": int(len(fit_idx)), "score": int(len(score_idx))},
        "text": ("bytes per example as float32; accuracies on the inspection sample, fitted on one half and "
                 "scored on the other: linear probe (" + settings.describe() + "), and the label of the "
                 "nearest fit-half example by cosine (exact 1-NN)"),
    }
