"""The examples an inspection looks at: held out from training, sampled, labelled.

Probes must be scored on examples the network never fitted, so on the run's own source
the sample is drawn from its validation and test splits (rebuilt from the run's seed);
on another source from its official test split, else from all of it. The sample is a
fixed random subset (seeded), and what it is gets stated in the report.

Each family reads its data (``Family.inspect_sample``) into one shape (``InspectData``),
so the rest of the inspection does not care whether the inputs are images, token ids or
item ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from deepstrata.errors import ConfigError

@dataclass
class InspectData:
    """Model inputs (a tensor or a tuple passed as ``model(*inputs)``), labels, and what they are.

    ``labels`` index ``classes``; they colour the projections and, when ``probe`` is true
    (labels that are the task's classes), are what the probes predict. ``mask`` ``[N, T]``
    marks real tokens of token-sequence inputs; ``trim`` says padding is on the right and
    may be cut per batch. ``images`` (float ``[N, C, H, W]`` in [0, 1]) is set for image
    tasks and enables the pictures; ``extra`` holds what a task's own views need.
    """

    inputs: torch.Tensor | tuple[torch.Tensor, ...]
    labels: np.ndarray
    classes: list[str]
    description: str
    pool_size: int
    mask: torch.Tensor | None = None
    images: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    probe: bool = True
    label_name: str = "class"
    trim: bool = False
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def held_out_description(test_is_official: bool) -> str:
    """What a sample drawn from a run's own source is drawn from, as the inspect report states it."""
    return ("validation split + official test split" if test_is_official
            else "validation + test splits") + " of the run (not used to fit the weights)"


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """A seeded random subset of ``range(n)`` of at most ``size`` rows, in the original order."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def check_samples(samples: int) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 20:
        raise ConfigError(f"--samples: got {samples!r}, expected an integer of at least 20")
    return samples


def load_sample(run, data: str | None, *, samples: int, seed: int, data_dir: str | None) -> InspectData:
    """The held-out sample for ``run``'s family (images, texts, or a recommender's users)."""
    if data is not None:
        run.family.check_source(run, data, "inspect")
    return run.family.inspect_sample(run, data, samples=samples, seed=seed, data_dir=data_dir)
