"""2-D maps of each layer's pooled features: PCA, t-SNE (scikit-learn), UMAP if installed.

A map coloured by class shows at a glance what the probes measure: classes mixed in
early layers, separated in late ones. Features are standardised first so that a few
large channels do not decide the picture. t-SNE is quadratic-ish in the number of points,
so it runs on a stated sample and for a stated number of iterations (500: the first 250
are early exaggeration; small samples settle well within the rest).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

METHODS = ("pca", "tsne", "umap")


@dataclass(frozen=True)
class ProjectionSettings:
    """Which maps, on how many points, with which seed; stated in the report."""

    methods: tuple[str, ...] = ("pca", "tsne")
    sample: int = 600
    perplexity: float = 30.0
    tsne_iterations: int = 500
    seed: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "methods": list(self.methods)}


def available_methods(requested: Sequence[str]) -> list[str]:
    """``requested`` minus UMAP when the ``umap-learn`` package is not installed."""
    unknown = [m for m in requested if m not in METHODS]
    if unknown:
        from deepstrata.errors import ConfigError

        raise ConfigError(f"projection method {', '.join(map(repr, unknown))}: expected one of {', '.join(METHODS)}")
    return [m for m in requested if m != "umap" or importlib.util.find_spec("umap") is not None]


def sample_index(n: int, size: int, seed: int) -> np.ndarray:
    """A fixed random subset of ``range(n)`` of at most ``size`` (sorted), the same for every layer."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def project(features: np.ndarray, method: str, *, seed: int = 0, perplexity: float = 30.0,
            tsne_iterations: int = 500) -> np.ndarray:
    """2-D coordinates ``[n, 2]`` of ``features`` ``[n, d]`` by ``method`` (after standardising)."""
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    x = np.nan_to_num(np.asarray(features, dtype=np.float64).reshape(len(features), -1))
    x = StandardScaler().fit_transform(x)
    if x.shape[1] == 1:
        x = np.hstack([x, np.zeros_like(x)])
    with threadpool_limits(1):
        if method == "pca":
            from sklearn.decomposition import PCA

            return PCA(n_components=2, random_state=seed).fit_transform(x)
        if method == "tsne":
            from sklearn.manifold import TSNE

            perplexity = float(min(perplexity, max(2.0, (len(x) - 1) / 3.0)))
            return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1,
                        max_iter=tsne_iterations).fit_transform(x)
        if method == "umap":
            import umap

            return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    raise ValueError(f"unknown projection method {method!r}")


def projections(
    features: Mapping[str, np.ndarray], settings: ProjectionSettings = ProjectionSettings()
) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Maps of every layer by every available method, on one shared sample.

    Returns the sample's indices into the feature rows and ``{layer: {method: [n, 2]}}``.
    """
    methods = available_methods(settings.methods)
    n = len(next(iter(features.values()))) if features else 0
    index = sample_index(n, settings.sample, settings.seed)
    maps = {
        name: {m: project(x[index], m, seed=settings.seed, perplexity=settings.perplexity,
                          tsne_iterations=settings.tsne_iterations) for m in methods}
        for name, x in features.items()
    }
    return index, maps
