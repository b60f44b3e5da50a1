"""A second process that imports scikit-learn while the fit imports torch, then fits the baselines in it.

Why: the hand-engineered baselines need scikit-learn, whose import (most of it SciPy's) took
1.4 s on the 2-core development machine — single-threaded, after training, in every fit; and
a thread cannot overlap it with torch's own 2.1 s import, as both hold Python's GIL. In two
processes the two imports were done in 2.8 s, against 4.7 s one after the other
(``benchmarks/fit_fixed_costs.py``). ``startup.before_fit``, the first thing the CLI's fit does,
starts this helper before torch is imported: the two imports run side by side on two cores,
and the helper then waits, idle, on its pipe. When the fit reaches its baselines, ``run``
sends the function and its arguments (tensors as NumPy arrays); the helper calls it exactly
as this process would — same function, same thread limits — and sends back each
progress line and the result. Training and the baselines still run one after the other, so
no figure is measured while the other process computes.

The helper is only a shortcut: when none was started (only the program's entry point,
``cli.run``, starts one: not ``cli.main`` as tests call it, not the Python API, not
``--no-baselines`` or ranks other than 0), when the arguments are large (over ``MAX_BYTES``,
which a pipe would copy and the helper hold a second time), or when it fails in any way (an
error raised there, the process gone), the function runs here, and an error is then raised
here with this process's own message; the progress lines the helper already sent are not
said twice. An error raised by the function leaves the helper running for the next call.
It ends when its stdin closes (this process exiting) or, in the middle of a call, when this
process is gone (killed): it then stops at once rather than finish a baseline nobody waits for.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_BYTES = 1 << 30
"""Arguments larger than this (NumPy buffers summed) stay in this process rather than cross a pipe."""

PRELOAD = ("numpy", "sklearn.linear_model", "sklearn.preprocessing", "sklearn.exceptions")

_helper: subprocess.Popen | None = None
_stops_at_exit = False


class HelperFailed(Exception):
    """The helper could not return a result; the caller runs the function itself."""


class RaisedThere(HelperFailed):
    """The function raised in the helper, which is fine and stays in use; the caller reruns it for its own error."""


def start() -> None:
    """Start the helper (once per process); any failure to start leaves the baselines to this process."""
    global _helper, _stops_at_exit
    if _helper is not None:
        return
    try:
        _helper = subprocess.Popen([sys.executable, "-m", "deepstrata.baselines.helper", *PRELOAD],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    except OSError:
        _helper = None
        return
    if not _stops_at_exit:
        atexit.register(stop)
        _stops_at_exit = True


def stop() -> None:
    """Close the helper's pipe; one still importing (a fit that failed early) is killed rather than waited for."""
    global _helper
    helper, _helper = _helper, None
    if helper is None:
        return
    try:
        helper.stdin.close()
    except OSError:
        pass
    try:
        helper.wait(timeout=0.5)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()
    helper.stdout.close()


def running() -> bool:
    return _helper is not None and _helper.poll() is None


def _plain(value: Any) -> Any:
    """A torch tensor as its NumPy array (the helper imports no torch); anything else as it is."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def _nbytes(value: Any) -> int:
    """What ``value`` takes on the pipe, at least: array buffers, and strings (texts) by their characters."""
    if isinstance(value, np.ndarray):
        return sum(_nbytes(item) for item in value.ravel()) if value.dtype == object else value.nbytes
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(item) for item in value)
    return 0


def run(function: Callable[..., Any], *args: Any, progress: Callable[[str], None] | None = None,
        **kwargs: Any) -> tuple[Any, str]:
    """``function(*args, progress=progress, **kwargs)`` and where it ran: ``"helper"`` or ``"main"``.

    ``function`` must be a module-level function whose module imports no torch; it gets its
    arguments with torch tensors as NumPy arrays, here as in the helper.
    """
    args = tuple(_plain(value) for value in args)
    kwargs = {key: _plain(value) for key, value in kwargs.items()}
    if running() and _nbytes(args) + _nbytes(list(kwargs.values())) <= MAX_BYTES:
        said: list[str] = []
        try:
            return _call(function, args, kwargs, progress, said), "helper"
        except RaisedThere:
            pass
        except HelperFailed:
            stop()
        progress = _without_first(progress, len(said))
    return function(*args, progress=progress, **kwargs), "main"


def _without_first(progress: Callable[[str], None] | None, count: int) -> Callable[[str], None] | None:
    """``progress`` minus its first ``count`` lines: the rerun here says them again, and they were said."""
    if progress is None or count == 0:
        return progress
    left = [count]

    def say(line: str) -> None:
        if left[0] > 0:
            left[0] -= 1
        else:
            progress(line)

    return say


def _call(function: Callable[..., Any], args: tuple, kwargs: dict, progress: Callable[[str], None] | None,
          said: list[str]) -> Any:
    helper = _helper
    try:
        pickle.dump((function.__module__, function.__qualname__, args, kwargs, progress is not None), helper.stdin,
                    protocol=pickle.HIGHEST_PROTOCOL)
        helper.stdin.flush()
        while True:
            kind, payload = pickle.load(helper.stdout)
            if kind == "say":
                said.append(payload)
                progress(payload)
            elif kind == "result":
                return payload
            else:
                raise RaisedThere(payload)
    except (OSError, EOFError, pickle.PickleError, AttributeError, TypeError) as err:
        raise HelperFailed(str(err)) from None


def _end_with(parent: int) -> None:
    """Exit as soon as ``parent`` is gone (this process is then re-parented): mid-call, stdin cannot say so."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _serve(preload: list[str], parent: int) -> None:
    """The helper's side: import ``preload``, then answer calls until stdin closes or ``parent`` is gone."""
    threading.Thread(target=_end_with, args=(parent,), daemon=True).start()
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a library's print must not corrupt the channel
    for name in preload:
        importlib.import_module(name)
    requests = sys.stdin.buffer

    def send(kind: str, payload: Any) -> None:
        try:
            pickle.dump((kind, payload), channel, protocol=pickle.HIGHEST_PROTOCOL)
            channel.flush()
        except OSError:  # the pipe is closed: the fit is gone, nobody to answer
            os._exit(0)

    while True:
        try:
            module, name, args, kwargs, wants_progress = pickle.load(requests)
        except EOFError:  # the fit is done: nothing here to flush or clean up, so skip the interpreter's teardown
            channel.close()
            os._exit(0)
        try:
            function = getattr(importlib.import_module(module), name)
            result = function(*args, progress=(lambda line: send("say", line)) if wants_progress else None, **kwargs)
            answer = pickle.dumps(("result", result), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # reported, and rerun by the caller in its own process
            send("error", f"{type(err).__name__}: {err}")
            continue
        try:
            channel.write(answer)
            channel.flush()
        except OSError:
            os._exit(0)


if __name__ == "__main__":
    try:
        _serve(sys.argv[1:], os.getppid())
    except BaseException:  # noqa: BLE001 — no traceback on the user's terminal: the fit runs the baselines itself
        os._exit(1)
