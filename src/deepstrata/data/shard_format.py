"""The on-disk contract of a shard directory: names, markers, versions and sizes.

Shared by the writer, the reader and the source adapters, so the constants that decide
what a shard directory looks like (the manifest's name and format marker, shard file
names, the split names) are defined once, away from the code that reads or writes them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from deepstrata.errors import ConfigError

SHARD_FORMAT = "deepstrata-shards"
FORMAT_VERSION = 1
MANIFEST = "index.json"
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_SHARD_SIZE = "256MB"
SHARD_NAME = re.compile(r"(train|val|test)-\d{5}\.(images|labels)\.npy")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "k": 10**3, "mb": 10**6, "m": 10**6, "gb": 10**9, "g": 10**9,
          "tb": 10**12, "t": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_size(value: str | int, key: str = "shard_size") -> int:
    """Bytes in ``"256MB"``, ``"1GB"``, ``"500kB"``, ``"64MiB"`` or a plain count of bytes.

    Units are decimal (kB = 1000 bytes, MB = 10^6) unless binary (KiB, MiB, GiB); case is
    ignored. Anything else, zero or negative, is a ``ConfigError`` naming ``key``.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{key}: got {value!r}, expected a size such as 256MB, 1GB, 500kB or a number of bytes")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ConfigError(f"{key}: got {value!r}, expected a size such as 256MB, 1GB, 500kB, 64MiB "
                              "or a number of bytes")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"{key}: got {value!r}, expected a positive size")
    return size


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 8 MiB blocks: what the manifest records per shard file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()
