"""Layer-wise linear probes (Alain and Bengio, 2016): how linearly separable is each layer?

For every named layer a logistic regression is fitted on its pooled features of one part
of a held-out sample and scored on the other part. The same is done for the same
architecture at random initialisation, the control: what a layer gives for free, through
its shape alone, versus what training put there. On a trained model the accuracy should
rise with depth and stay above the control; a layer where it does not is a finding.

The probe is deliberately plain and fixed (standardised features, L2-regularised
multinomial logistic regression, ``C=1``) so that differences come from the features,
not from probe tuning. scikit-learn runs in one BLAS thread (``threadpool_limits(1)``):
on a small machine more threads only fight each other and torch.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from deepstrata.models.registry import build_model


@dataclass(frozen=True)
class ProbeSettings:
    """The probe, stated in the report: regularisation, iterations, how the sample is split."""

    C: float = 1.0
    max_iter: int = 2000
    fit_fraction: float = 0.5
    seed: int = 0

    def describe(self) -> str:
        return (f"standardised features → multinomial logistic regression (L2, C={self.C:g}, lbfgs, "
                f"≤{self.max_iter} iterations); fitted on {self.fit_fraction:.0%} of the sample, "
                f"scored on the rest (stratified, seed {self.seed})")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ProbeResult:
    """Held-out probe accuracy of one layer, for the trained model and the random-init control."""

    layer: str
    dim: int
    trained: float
    random: float
    converged: bool = True

    def to_dict(self) -> dict:
        return {"layer": self.layer, "dim": self.dim, "trained": round(self.trained, 6),
                "random": round(self.random, 6), "converged": self.converged}


def probe_split(labels: np.ndarray, fit_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the part the probes are fitted on and of the part they are scored on.

    Stratified by class when every class has at least two examples, so both parts see
    every class; otherwise a plain shuffle.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    index = np.arange(len(labels))
    counts = np.unique(labels, return_counts=True)[1]
    n_fit = int(round(fit_fraction * len(labels)))
    stratify = labels if len(counts) and counts.min() >= 2 and len(counts) <= min(n_fit, len(labels) - n_fit) else None
    fit_idx, score_idx = train_test_split(index, train_size=n_fit, random_state=seed, stratify=stratify)
    return np.sort(fit_idx), np.sort(score_idx)


def probe_accuracy(
    features: np.ndarray, labels: np.ndarray, fit_idx: np.ndarray, score_idx: np.ndarray,
    settings: ProbeSettings = ProbeSettings(),
) -> tuple[float, bool]:
    """Accuracy on ``score_idx`` of a probe fitted on ``fit_idx``; and whether lbfgs converged."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    y = np.asarray(labels)
    if len(np.unique(y[fit_idx])) < 2:
        return float(np.mean(y[score_idx] == y[fit_idx][0])), True
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=settings.C, max_iter=settings.max_iter))
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(x[fit_idx], y[fit_idx])
        accuracy = float(np.mean(probe.predict(x[score_idx]) == y[score_idx]))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return accuracy, converged


def layer_probes(
    trained: dict[str, np.ndarray], random: dict[str, np.ndarray], labels: np.ndarray,
    settings: ProbeSettings = ProbeSettings(),
) -> list[ProbeResult]:
    """One ``ProbeResult`` per layer of ``trained`` (in its order), on one shared split."""
    fit_idx, score_idx = probe_split(labels, settings.fit_fraction, settings.seed)
    results = []
    for name, features in trained.items():
        acc_trained, ok_trained = probe_accuracy(features, labels, fit_idx, score_idx, settings)
        acc_random, ok_random = probe_accuracy(random[name], labels, fit_idx, score_idx, settings)
        results.append(ProbeResult(name, int(np.prod(features.shape[1:])), acc_trained, acc_random,
                                   ok_trained and ok_random))
    return results


def chance_accuracy(labels: np.ndarray, settings: ProbeSettings = ProbeSettings()) -> float:
    """Accuracy of always answering the most frequent class of the fit part, on the score part."""
    labels = np.asarray(labels)
    fit_idx, score_idx = probe_split(labels, settings.fit_fraction, settings.seed)
    values, counts = np.unique(labels[fit_idx], return_counts=True)
    return float(np.mean(labels[score_idx] == values[np.argmax(counts)]))


def random_control(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture at random initialisation (``build_model(spec)`` under ``seed``).

    The global RNG is forked, so building the control changes no one else's random stream.

    Buffers held by the model itself (not its layers) are data statistics such as the
    input normalisation, not something learned, so the control shares them; every
    parameter and every layer's buffer (BatchNorm statistics) stays as initialised.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        control = build_model(model.spec)
    own = dict(model.named_buffers(recurse=False))
    for name, buffer in control.named_buffers(recurse=False):
        if name in own and own[name].shape == buffer.shape:
            buffer.copy_(own[name])
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return control.to(device).eval()
