"""Reading the files of a run directory: every failure is one ``RunError`` that names the file.

A run's files can be cut short (a copy interrupted, a full disk), overwritten with other
bytes, or edited by hand into the wrong shape. Every verb after ``fit`` reads them
through these readers, so each such file is reported the same way, on one line::

    RUN/comparison.json: damaged run file (not valid JSON: line 3 column 1); rerun fit or restore the file

never as a traceback or a library's advice (numpy's "load it unsafely" among them:
arrays are always read with ``allow_pickle=False``). Readers check the type of what they
read as well as its syntax, so a valid file of the wrong shape is damaged too.
"""

from __future__ import annotations

import json
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from deepstrata.errors import DeepstrataError, RunError

ADVICE = "rerun fit or restore the file"
MARK = "damaged run file"


def damaged(path: str | Path, detail: str) -> RunError:
    """The one error for a run file that exists but cannot be used as it is."""
    return RunError(f"{path}: {MARK} ({detail}); {ADVICE}")


def rewrap(err: DeepstrataError, path: str | Path) -> RunError:
    """``err`` about ``path`` (``"PATH: detail"``) restated as a damaged run file; others unchanged."""
    text = str(err)
    prefix = f"{path}: "
    if MARK in text or not text.startswith(prefix) or "not found" in text:
        return err if isinstance(err, RunError) else RunError(text)
    return damaged(path, text[len(prefix):])


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: not found")
    try:
        return path.read_bytes()
    except OSError as err:
        raise RunError(f"{path}: cannot read ({err.strerror or err})") from None


def read_text(path: str | Path) -> str:
    """The file as UTF-8 text (every text file a run writes is UTF-8)."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise damaged(path, f"not UTF-8 text: byte {err.start}") from None


def parse_json(path: str | Path, text: str, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {line if line is not None else err.lineno} column {err.colno}"
        raise damaged(path, f"not valid JSON: {where}") from None
    except RecursionError:
        raise damaged(path, "not valid JSON: nested too deeply") from None


def read_json(path: str | Path, kind: type = dict) -> Any:
    """A JSON file whose top level is ``kind`` (an object unless said otherwise)."""
    text = read_text(path)
    if not text.strip():
        raise damaged(path, "empty file")
    value = parse_json(path, text)
    if not isinstance(value, kind):
        raise damaged(path, f"expected {_type_name(kind())} at the top level, found {_type_name(value)}")
    return value


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per non-blank line."""
    records = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        record = parse_json(path, line, lineno)
        if not isinstance(record, dict):
            raise damaged(path, f"line {lineno} is {_type_name(record)}, not a JSON object")
        records.append(record)
    return records


def read_config(path: str | Path):
    """A run's ``config.yaml`` as a ``RunConfig``; a missing file is a ``RunError`` that says what is lost."""
    from deepstrata.config import load_config

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: not found; without it the run's data source and settings (split, preprocessing, "
                       "text columns) are unknown — restore config.yaml from a copy of the run, or rerun fit")
    text = read_text(path)
    if not text.strip():
        raise damaged(path, "empty file")
    try:
        return load_config(path)
    except DeepstrataError as err:
        message = str(err)
        for prefix in (f"{path}: ", f"{path}:"):
            if message.startswith(prefix):
                message = message[len(prefix):]
                break
        where = re.match(r"(\d+):(\d+): (.*)", message)
        if where:  # load_config's "PATH:LINE:COL: not valid YAML (...)"
            message = f"{where.group(3)} at line {where.group(1)} column {where.group(2)}"
        raise damaged(path, message) from None


def read_npz(path: str | Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` archive, read without pickles; each must be a 1-D numeric array."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: not found")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise damaged(path, "a single array, not an .npz archive")
            missing = [name for name in names if name not in archive.files]
            if missing:
                raise damaged(path, f"no array {missing[0]!r}; it holds {', '.join(archive.files) or 'none'}")
            for name in names:
                arrays[name] = archive[name]
    except RunError:
        raise
    except ValueError as err:
        if "pickle" in str(err).lower() or "object arrays" in str(err).lower():
            raise damaged(path, "not an .npz archive of plain arrays (pickled data is never loaded)") from None
        raise damaged(path, f"not a readable .npz archive: {str(err).splitlines()[0]}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise damaged(path, f"not a readable .npz archive: {detail}") from None
    for name, array in arrays.items():
        if array.ndim != 1 or array.dtype.kind not in "iuf":
            raise damaged(path, f"array {name!r} is {array.dtype} of shape {list(array.shape)}, "
                                "expected a 1-D numeric array")
    return arrays


def field(record: dict, key: str, kind: type | tuple[type, ...], path: str | Path, *, where: str = "") -> Any:
    """``record[key]`` checked to be of ``kind``; a missing or wrong-typed field means the file is damaged."""
    if not isinstance(record, dict) or key not in record:
        raise damaged(path, f"no {where}{key!r} field")
    value = record[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        value_ok = False
    else:
        value_ok = isinstance(value, kinds)
    if not value_ok:
        expected = " or ".join(_type_name(k()) for k in kinds)
        raise damaged(path, f"{where}{key!r} is {_type_name(value)}, expected {expected}")
    return value


def string_list(record: dict, key: str, path: str | Path, *, where: str = "") -> list[str]:
    values = field(record, key, list, path, where=where)
    if not all(isinstance(v, str) for v in values):
        raise damaged(path, f"{where}{key!r} must be a list of strings")
    return values
