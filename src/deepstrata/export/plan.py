"""What a family hands the exporter: the wrapper to export, the batches to verify it on, its contract part.

Each family knows what its ``predict`` does before and after the model (pixels scaled to
[0, 1], token ids with a mask, user indices) and bakes what can be baked into a small
wrapper module, so that a consumer in another runtime feeds tensors and gets what
``run.predict`` reports. The exporter itself is family-blind: it reads the input and output
specs, the dynamic dimensions and the batches from this plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

PROBABILITY_TOLERANCE = 1e-4
"""Largest absolute difference allowed between PyTorch and the exported model on probabilities.

float32 carries about 7 significant digits; another runtime reorders the same sums (its own
convolution and matrix kernels, fused operators), which moves a probability by 1e-7 to 1e-6
on these models. 1e-4 leaves that a hundredfold margin, yet stays below the fourth decimal
``deepstrata predict`` prints: an export within it gives the same answers to that precision.
"""

SCORE_TOLERANCE = 1e-4
"""For unbounded scores (a recommender's dot products): 1e-4 times the largest score's magnitude (at least 1)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name in the exported graph, dtype, shape (a ``str`` names a dynamic dimension)."""

    name: str
    dtype: str
    shape: tuple
    description: str

    def record(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "description": self.description}


@dataclass(frozen=True)
class Dim:
    """A dynamic dimension: its name in the shapes above, and its bounds (``high`` None: unbounded)."""

    name: str
    low: int = 1
    high: int | None = None

    def record(self) -> dict:
        return {"min": self.low, "max": self.high}


@dataclass
class ExportPlan:
    """Everything the exporter needs from a family.

    ``module`` is in eval mode on the CPU and is called as ``module(*batch)``; ``batches``
    are at least two real batches of different sizes (the first, of two or more rows, is the
    example the exporters trace; the others prove the dynamic dimensions). ``contract`` is the
    family's part of the contract JSON (preprocessing, classes, ids ...); ``files`` maps a
    role to ``(suffix, bytes)`` of a file that travels beside the model (the tokenizer).
    """

    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dims: list[Dim]
    batches: list[tuple[torch.Tensor, ...]]
    batch_source: str
    contract: dict
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    tolerance: float = PROBABILITY_TOLERANCE
    relative: bool = False

    def dynamic_shapes(self, make_dim) -> tuple[dict, ...]:
        """``dynamic_shapes`` for ``torch.export`` / ``torch.onnx.export``: one ``{axis: Dim}`` per input,
        the same ``Dim`` object wherever a name recurs (inputs sharing a batch dimension)."""
        made = {d.name: make_dim(d.name, min=d.low, max=d.high) if d.high is not None else make_dim(d.name, min=d.low)
                for d in self.dims}
        return tuple({axis: made[size] for axis, size in enumerate(spec.shape) if isinstance(size, str)}
                     for spec in self.inputs)

    def limit(self, reference: float) -> float:
        """The tolerance for outputs whose largest magnitude is ``reference``."""
        return self.tolerance * max(1.0, reference) if self.relative else self.tolerance
