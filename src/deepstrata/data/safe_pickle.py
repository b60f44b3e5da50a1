"""Unpickle data files without letting them run code.

CIFAR's python batches are pickles, and a pickle may name any importable callable
(``os.system`` via ``__reduce__``). A data set downloaded from a mirror, or a file a
user points us at, must never execute anything, so this unpickler resolves only the
few globals that rebuild numpy arrays and scalars (pickle protocols 2 to 5) and refuses
every other one before it is imported. Plain dicts, lists, bytes, str and ints need no
global and load as usual.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from typing import IO, Any, Callable

import numpy as np

from deepstrata.errors import DataError

_NUMPY_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"


def _core(module: str, name: str) -> Callable[[], Any]:
    """Resolve from numpy's own core module, whichever name this numpy uses."""
    return lambda: getattr(importlib.import_module(f"{_NUMPY_CORE}.{module}"), name)


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to latin-1: Python 3 writes bytes this way at protocol 2."""
    if encoding.replace("_", "-").lower() not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin-1", errors)


_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    **{(f"{core}.{module}", name): _core(module, name)
       for core in ("numpy.core", "numpy._core")
       for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                            ("numeric", "_frombuffer"))},
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class _Refused(Exception):
    """Raised inside find_class; carries the refused global's full name."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the array-building globals in ``_ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise _Refused(f"{module}.{name}")
        return resolve()


def restricted_load(fileobj: IO[bytes], *, name: str | None = None) -> object:
    """Load one pickle from ``fileobj`` with Python 2 strings kept as bytes.

    ``encoding="bytes"`` is what CIFAR's batches (written by Python 2 cPickle) need: their
    dict keys come back as ``b"data"``, ``b"labels"``. ``name`` is used in error
    messages; it defaults to ``fileobj.name``. Raises DataError for a refused global,
    an object-dtype array, or a file that is not a pickle at all.
    """
    label = name or str(getattr(fileobj, "name", "<pickle>"))
    try:
        obj = _RestrictedUnpickler(fileobj, encoding="bytes").load()
    except _Refused as refused:
        raise DataError(f"{label}: refused to unpickle {refused}: a data file may not run code") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, UnicodeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{label}: not a readable pickle ({detail})") from None
    _refuse_object_arrays(obj, label)
    return obj


def _refuse_object_arrays(obj: object, label: str, depth: int = 0) -> None:
    """Object arrays hold arbitrary pickled objects; a data file has no use for them."""
    if depth > 4:
        return
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise DataError(f"{label}: holds an object array; expected numeric arrays only")
    if isinstance(obj, dict):
        for value in obj.values():
            _refuse_object_arrays(value, label, depth + 1)
