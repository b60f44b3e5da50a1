"""Stop requests for the training loop: SIGTERM and SIGINT finish the current step, then stop.

Preemption (SLURM, Kubernetes) sends SIGTERM and waits a grace period before SIGKILL;
Ctrl-C sends SIGINT. Either sets a flag that the loop reads once per step, so the step
in flight completes, a checkpoint is written and the run ends with ``Interrupted``
(status 143 or 130) and the command that continues it. A second signal of the same kind
acts at once, as the user expects of a second Ctrl-C.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
    """A context manager that catches SIGTERM/SIGINT while training; ``signum`` is the first one seen."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: do what the signal would have done
            previous = self._previous.get(signum, signal.SIG_DFL)
            signal.signal(signum, previous)
            if callable(previous):
                previous(signum, frame)
            else:
                signal.raise_signal(signum)
            return
        self.signum = signum

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""
