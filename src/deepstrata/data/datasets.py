"""Named public data sets: where they live, their checksums, and a local cache.

``fetch("mnist")`` returns a folder holding the set's files in their usual format,
downloading only what is missing. Every file is verified against published checksums
before it is used, on each call: a cache that was truncated or tampered with is caught
the same way a bad download is. Downloads go to a temporary file that is renamed into
place only once verified, so an interrupted download never looks like a cached file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deepstrata.errors import DataError


@dataclass(frozen=True)
class RemoteFile:
    """One file of a named set and the checksums that a good copy may match (any one)."""

    name: str
    md5: str = ""
    sha256: tuple[str, ...] = ()
    gunzip_md5: str = ""


@dataclass(frozen=True)
class NamedSet:
    """A public data set: the reader ``format`` that reads it, its mirror and its files."""

    name: str
    format: str
    base_url: str
    files: tuple[RemoteFile, ...]
    classes: tuple[str, ...]
    citation: str


# MNIST: md5 of the mirror's .gz files (as torchvision lists them), sha256 of the copies in
# ../shared/data/mnist (re-gzipped, so the bytes differ), and md5 of the uncompressed IDX data,
# which any faithful copy matches.
_MNIST = (
    RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
               ("0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",),
               "6bbc9ace898e44ae57da46a324031adb"),
    RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
               ("fcb926fa5ff984538180eace535719f90b4ac475ee857571c580b931884a5ec5",),
               "a25bea736e30d166cdddb491f175f624"),
    RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
               ("1488b2253c7678056ecec4d0a5964be6cf8cf6dc6411b21a48d77a497fefe2be",),
               "2646ac647ad5339dbf082846283269ea"),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
               ("daa0ca80179b076764a51a527b4850de26f321125e4d2d55cf279fff0a4b4c4d",),
               "27ae3e4e09519cfbb04c329615203637"),
)

NAMED: dict[str, NamedSet] = {
    "mnist": NamedSet(
        "mnist", "idx", "https://ossci-datasets.s3.amazonaws.com/mnist/", _MNIST,
        tuple(str(i) for i in range(10)),
        "LeCun, Cortes, Burges: The MNIST database of handwritten digits"),
    "fashion-mnist": NamedSet(
        "fashion-mnist", "idx", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
         RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
         RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
         RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        "Xiao, Rasul, Vollgraf 2017: Fashion-MNIST (arXiv:1708.07747)"),
    "cifar10": NamedSet(
        "cifar10", "cifar", "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "Krizhevsky 2009: Learning Multiple Layers of Features from Tiny Images"),
}

_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar_10": "cifar10"}


def canonical_name(name: str) -> str | None:
    """The key in ``NAMED`` that ``name`` means (case and ``_``/``-`` forgiven), else None."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    return key if key in NAMED else None


def cache_dir(data_dir: str | Path | None = None) -> Path:
    """Where named sets are kept: ``data_dir``, else ``$DEEPSTRATA_DATA``, else ~/.cache/deepstrata."""
    chosen = data_dir if data_dir is not None else os.environ.get("DEEPSTRATA_DATA") or "~/.cache/deepstrata"
    return Path(chosen).expanduser()


def fetch(name: str, data_dir: str | Path | None = None, *, base_url: str | None = None,
          download: bool = True) -> Path:
    """Return ``cache_dir(data_dir)/<name>`` with every file of the set present and verified.

    ``base_url`` replaces the mirror: an ``http(s)://`` or ``file://`` URL, or a local folder.
    A cached file that fails its checksum is downloaded again (DataError if ``download`` is off).
    """
    key = canonical_name(name)
    if key is None:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(NAMED))}")
    spec = NAMED[key]
    folder = cache_dir(data_dir) / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create the data cache ({exc.strerror})") from None
    mirror = _as_url(base_url or spec.base_url)
    for remote in spec.files:
        target = folder / remote.name
        if target.exists():
            problem = check_file(target, remote)
            if problem is None:
                continue
            if not download:
                raise DataError(f"{target}: cached file fails its checksum ({problem}); "
                                "delete it or allow downloading")
            target.unlink()
        elif not download:
            raise DataError(f"{target}: missing and downloading is off; "
                            "put the file there or allow downloading")
        _download(mirror + remote.name, target, remote)
    return folder


def check_file(path: Path, remote: RemoteFile) -> str | None:
    """None if ``path`` matches any checksum of ``remote``, else what was found instead."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            md5.update(block)
            sha256.update(block)
    if md5.hexdigest() == remote.md5 or sha256.hexdigest() in remote.sha256:
        return None
    if remote.gunzip_md5:
        inner = _gunzip_md5(path)
        if inner == remote.gunzip_md5:
            return None
        if inner is not None:
            return f"md5 of uncompressed data {inner}, expected {remote.gunzip_md5}"
    return f"md5 {md5.hexdigest()}, expected {remote.md5 or remote.gunzip_md5}"


def _gunzip_md5(path: Path) -> str | None:
    digest = hashlib.md5()
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def _as_url(base: str) -> str:
    url = base if "://" in base else Path(base).expanduser().resolve().as_uri()
    return url if url.endswith("/") else url + "/"


def _open_url(url: str) -> IO[bytes]:
    """The one place that touches the network; tests replace it."""
    return urllib.request.urlopen(url, timeout=60)


def _download(url: str, target: Path, remote: RemoteFile) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, _open_url(url) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        problem = check_file(tmp, remote)
        if problem is not None:
            raise DataError(f"{url}: checksum mismatch ({problem}); the download was deleted")
        os.replace(tmp, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise DataError(f"{url}: download failed ({reason}); put {target.name} in {target.parent} "
                        "by hand, or pass base_url for another mirror") from None
    finally:
        tmp.unlink(missing_ok=True)
