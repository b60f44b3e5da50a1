"""The check every export passes before anything is written: the same batches through PyTorch and the export.

The reference is the plan's wrapper in eager PyTorch — the very module ``run.predict``'s
computation was folded into — and the candidate is the exported bytes as a consumer would
run them (onnxruntime, ``torch.export.load``). The batches are real examples of the run's
data in two batch sizes, so the dynamic batch dimension is exercised, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from deepstrata.errors import RunError
from deepstrata.export.plan import ExportPlan


@dataclass(frozen=True)
class Verified:
    difference: float        # the largest absolute difference over every batch
    limit: float             # the tolerance it was held to
    batch_sizes: tuple[int, ...]


def largest_difference(reference: np.ndarray, got: np.ndarray) -> float:
    """max |reference - got| (NaN anywhere counts as infinitely far)."""
    diff = np.abs(reference.astype(np.float64) - got.astype(np.float64))
    return float("inf") if np.isnan(diff).any() else float(diff.max(initial=0.0))


def verify(plan: ExportPlan, run: Callable, what: str) -> Verified:
    """Compare ``plan.module`` with the exported ``run`` on every batch; ``RunError`` beyond the tolerance."""
    worst, scale = 0.0, 0.0
    for batch in plan.batches:
        with torch.no_grad():
            reference = plan.module(*batch).numpy()
        got = run(batch)
        if got.shape != reference.shape:
            raise RunError(f"{what}: the exported model answered shape {list(got.shape)} for a batch of "
                           f"{len(batch[0])}, PyTorch {list(reference.shape)}; nothing written")
        worst = max(worst, largest_difference(reference, got))
        scale = max(scale, float(np.abs(reference).max(initial=0.0)))
    limit = plan.limit(scale)
    if not worst <= limit:
        raise RunError(f"{what}: the exported model differs from PyTorch by {worst:.3g} on {plan.batch_source} "
                       f"(tolerance {limit:.3g}); nothing written")
    return Verified(worst, limit, tuple(len(b[0]) for b in plan.batches))
