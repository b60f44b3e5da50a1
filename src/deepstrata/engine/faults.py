"""Fault injection: stop this process with SIGKILL at a named point, for the crash tests.

``DEEPSTRATA_FAULT=POINT:N`` kills the process the N-th time it reaches ``POINT``
(``checkpoint:weights``, ``checkpoint:train``, ``checkpoint:state``,
``checkpoint:renamed``, ``checkpoint:pointer``, ``checkpoint:best``, ``epoch:metrics``,
``step``). ``DEEPSTRATA_FAULT_RANK=R`` limits it to rank R of a distributed run. A
process restarted by torchrun (``TORCHELASTIC_RESTART_COUNT`` > 0) is never killed
again, so an elastic restart can be tested with the same variables.

SIGKILL cannot be caught: nothing is flushed or cleaned up, exactly as when the kernel's
OOM killer or a power cut stops a run. When the variable is unset, ``reached`` costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "DEEPSTRATA_FAULT"
_counts: dict[str, int] = {}


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        return None
    rank = os.environ.get("DEEPSTRATA_FAULT_RANK")
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return None
    point, _, count = spec.rpartition(":")
    return (point, int(count)) if point and count.isdigit() else None


def reached(point: str) -> None:
    """Count one arrival at ``point``; SIGKILL this process on the armed arrival."""
    if ENV not in os.environ:
        return
    armed = _armed()
    if armed is None or armed[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
