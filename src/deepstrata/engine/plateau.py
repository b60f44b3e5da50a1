"""The plateau rule: end a run whose validation metric has stopped improving, after a short cool-down.

Epochs sized from the data are a budget chosen before anything is known about how fast
this data is learned; on easy data most of them are spent at a validation score that no
longer moves. With ``train.plateau: on`` the loop smooths the primary validation metric
per epoch (an exponential moving average, weight ``SMOOTHING`` on the newest epoch, so a
single lucky or unlucky epoch on a small validation split neither fires nor blocks the
rule) and, once the warm-up is over, fires when the smoothed value has gained less than
``MARGIN`` (absolute, in the metric's own units: accuracy, NDCG) over the last
``PATIENCE`` epochs.

Stopping there would keep weights trained at a high learning rate: under a one-cycle
schedule the low-rate end is where most of the final accuracy comes from. So the rule
does not stop at once; it cools down: the learning rate falls linearly from where the
schedule is to the schedule's end value over ``COOLDOWN`` x the epochs run so far (at
least one), and the run ends there — the shape of a warm-up/stable/decay schedule
whose decay starts when the data says so. The best-validation weights are kept as
always. The record of the firing (the epoch, the smoothed value, the gain, the cool-down)
is in that epoch's ``metrics.jsonl`` row (``plateau``) and in the checkpoints' loop state,
so a resumed run continues the same cool-down.
"""

from __future__ import annotations

import math

SMOOTHING = 0.5
PATIENCE = 3
MARGIN = 0.001
COOLDOWN = 0.25
MODES = ("off", "on", "auto")


def smooth(history: list[float], value: float) -> list[float]:
    """``history`` of smoothed values with the newest epoch's ``value`` folded in."""
    if not history:
        return [value]
    return [*history, SMOOTHING * value + (1.0 - SMOOTHING) * history[-1]]


def fires(history: list[float], epoch: int, epochs: int, warmed_up: bool) -> dict | None:
    """The rule's record when it fires after ``epoch`` (from 1) of ``epochs`` planned, else None.

    ``history`` holds the smoothed metric of every epoch so far. It does not fire during the
    warm-up, nor when the planned schedule would end no later than the cool-down would.
    """
    if not warmed_up or len(history) <= PATIENCE or not all(math.isfinite(v) for v in history[-PATIENCE - 1:]):
        return None
    gain = history[-1] - history[-1 - PATIENCE]
    if gain >= MARGIN:
        return None
    cooldown = max(1, round(COOLDOWN * epoch))
    if epoch + cooldown >= epochs:
        return None
    return {"epoch": epoch, "smoothed": history[-1], "gain": gain, "over_epochs": PATIENCE, "margin": MARGIN,
            "cooldown_epochs": cooldown, "ends_at_epoch": epoch + cooldown}


def cooldown_lr(start: float, end: float, step: int, steps: int) -> float:
    """The rate ``step`` steps into a linear cool-down of ``steps`` from ``start`` to ``end``."""
    done = min(1.0, (step + 1) / max(1, steps))
    return start + (end - start) * done
