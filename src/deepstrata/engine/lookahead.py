"""Lookahead: every few steps, pull the weights towards a slow moving average of themselves.

The fast weights take ordinary optimiser steps; every ``every`` steps the average moves
toward them (``avg = decay * avg + (1 - decay) * weights``) and the weights restart from
the average. The decay follows airbench's schedule, ``base**every * (step / total)**3``:
near zero early on (the average simply follows the weights), rising to ``0.95**5`` at the
end, so late in training the noise of single steps is averaged away. The last step
leaves the model holding the average itself. Buffers (BatchNorm's running statistics)
are averaged with the weights, so the two stay consistent.
"""

from __future__ import annotations

import torch
from torch import nn


class Lookahead:
    def __init__(self, model: nn.Module, every: int = 5, base: float = 0.95) -> None:
        self.every = every
        self.base = base
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay(self, step: int, total_steps: int) -> float:
        if step >= total_steps:
            return 1.0
        return self.base**self.every * (step / total_steps) ** 3

    @torch.no_grad()
    def step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Call after optimiser step number ``step`` (counted from 1)."""
        if step % self.every and step < total_steps:
            return
        decay = self.decay(step, total_steps)
        for name, value in model.state_dict().items():
            average = self.average.get(name)
            if average is not None:
                average.lerp_(value, 1.0 - decay)
                value.copy_(average)
