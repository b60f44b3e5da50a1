"""How the train section is sized for a run: epochs and batch from the data, batch and rate for the world size.

A config may leave ``epochs`` and ``batch_size`` unset, and may give a per-device batch;
the one training loop needs concrete, global values. These functions turn the first into
the second, deterministically, so the run saves exactly what it trained with. They are
kept apart from the section dataclasses because they are arithmetic on a finished
``TrainConfig``, not validation; ``deepstrata.config`` re-exports them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepstrata.config import TrainConfig


def auto_batch_size(n_train: int) -> int:
    """128 for small sets (more steps per epoch), 256 from 10,000 examples (fewer, cheaper steps on a CPU)."""
    return 128 if n_train < 10_000 else 256


def auto_epochs(n_train: int, batch_size: int, target_steps: int = 900) -> int:
    """Enough epochs for about ``target_steps`` optimiser steps, between 4 and 40."""
    steps_per_epoch = max(1, n_train // batch_size)
    return max(4, min(40, round(target_steps / steps_per_epoch)))


def resolved_train(train: "TrainConfig", n_train: int) -> "TrainConfig":
    """``train`` with ``epochs`` and ``batch_size`` filled in from the training-set size; ``plateau: auto``
    becomes on when the epochs are sized here (a budget). With given epochs it stays auto, which the loop
    reads as off, so a config that needs no sizing comes back unchanged."""
    batch_size = train.batch_size or auto_batch_size(n_train)
    epochs = train.epochs or auto_epochs(n_train, batch_size)
    plateau = "on" if train.plateau == "auto" and train.epochs is None else train.plateau
    return dataclasses.replace(train, batch_size=batch_size, epochs=epochs, plateau=plateau)


def per_world(train: "TrainConfig", world_size: int) -> "TrainConfig":
    """The global batch and learning rate that ``world_size`` processes train with.

    By default ``batch_size`` is the global batch and ``lr`` is used as given, whatever the
    number of processes. With ``batch_per_device`` it is each process's batch (global =
    N x it), and ``lr_scaling`` adapts ``lr`` to that N-fold batch: ``linear`` multiplies it
    by N (Goyal et al. 2017), ``sqrt`` by sqrt(N). The result has both switches off, so
    applying it twice changes nothing.
    """
    if train.batch_size is None or not train.batch_per_device:
        return train
    growth = float(world_size)
    factor = {"none": 1.0, "linear": growth, "sqrt": growth**0.5}[train.lr_scaling]
    return dataclasses.replace(train, batch_size=train.batch_size * world_size, lr=train.lr * factor,
                               batch_per_device=False, lr_scaling="none")
