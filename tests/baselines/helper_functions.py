"""Functions the helper-process tests send to the helper: a module that imports no torch, as ``helper.run`` asks."""

import sys
import time

from deepstrata.errors import DataError


def say_then_fail(lines: int, progress=None):
    """``lines`` progress lines, then an error."""
    for index in range(lines):
        progress(f"line {index}")
    raise DataError(f"failed after {lines} lines")


def sleep_there(seconds: float, progress=None) -> float:
    time.sleep(seconds)
    return seconds


def torch_loaded(progress=None) -> bool:
    return "torch" in sys.modules
