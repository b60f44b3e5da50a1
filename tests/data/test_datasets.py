import gzip
import os
import shutil
from pathlib import Path

import pytest

from deepstrata.data import datasets
from deepstrata.data.datasets import NAMED, cache_dir, canonical_name, check_file, fetch
from deepstrata.data.images import load_images
from deepstrata.errors import DataError

MNIST_FILES = sorted(f.name for f in NAMED["mnist"].files)


def _no_network(url):
    raise AssertionError(f"unexpected download of {url}")


def test_named_sets_are_described():
    assert set(NAMED) == {"mnist", "fashion-mnist", "cifar10"}
    assert NAMED["mnist"].base_url == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert NAMED["cifar10"].files[0].md5 == "c58f30108f718f92721af3b95e74349a"
    assert all(spec.format in ("idx", "cifar") and len(spec.classes) == 10 for spec in NAMED.values())
    assert canonical_name("MNIST") == "mnist" and canonical_name("fashion_mnist") == "fashion-mnist"
    assert canonical_name("cifar-10") == "cifar10" and canonical_name("imagenet") is None


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSTRATA_DATA", str(tmp_path / "env"))
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir() == tmp_path / "env"
    monkeypatch.delenv("DEEPSTRATA_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "deepstrata"


def test_unknown_name_lists_known_ones(tmp_path):
    with pytest.raises(DataError) as err:
        fetch("imagenet", tmp_path)
    assert "imagenet" in str(err.value)
    assert all(name in str(err.value) for name in NAMED)


@pytest.fixture()
def fetched_mnist(shared_data, tmp_path) -> Path:
    folder = fetch("mnist", tmp_path / "cache", base_url=(shared_data / "mnist").as_uri())
    assert folder == tmp_path / "cache" / "mnist"
    return folder


def test_fetch_from_file_url_then_from_cache(fetched_mnist, tmp_path, monkeypatch):
    assert sorted(p.name for p in fetched_mnist.iterdir()) == MNIST_FILES
    for remote in NAMED["mnist"].files:
        assert check_file(fetched_mnist / remote.name, remote) is None
    stamps = {p.name: p.stat().st_mtime_ns for p in fetched_mnist.iterdir()}
    monkeypatch.setattr(datasets, "_open_url", _no_network)
    assert fetch("mnist", tmp_path / "cache") == fetched_mnist
    assert {p.name: p.stat().st_mtime_ns for p in fetched_mnist.iterdir()} == stamps
    ds = load_images("mnist", data_dir=tmp_path / "cache")
    assert ds.x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.source.startswith("mnist") and ds.format == "idx"


def test_plain_folder_as_base_url(shared_data, tmp_path):
    folder = fetch("mnist", tmp_path, base_url=str(shared_data / "mnist"))
    assert sorted(p.name for p in folder.iterdir()) == MNIST_FILES


def test_recompressed_copy_passes_by_uncompressed_md5(shared_data, tmp_path):
    remote = next(f for f in NAMED["mnist"].files if f.name.startswith("t10k-labels"))
    copy = tmp_path / remote.name
    with gzip.open(shared_data / "mnist" / remote.name, "rb") as src:
        copy.write_bytes(gzip.compress(src.read(), compresslevel=1, mtime=12345))
    assert check_file(copy, remote) is None


def test_corrupted_cache_is_detected_and_replaced(fetched_mnist, shared_data, tmp_path, monkeypatch):
    victim = fetched_mnist / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        fetch("mnist", tmp_path / "cache", download=False)
    assert victim.name in str(err.value) and "checksum" in str(err.value)
    monkeypatch.setattr(datasets, "_open_url", _no_network)
    with pytest.raises(AssertionError, match="unexpected download"):
        fetch("mnist", tmp_path / "cache")
    monkeypatch.undo()
    fetch("mnist", tmp_path / "cache", base_url=(shared_data / "mnist").as_uri())
    assert victim.read_bytes() == (shared_data / "mnist" / victim.name).read_bytes()


def test_bad_download_is_deleted(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for remote in NAMED["fashion-mnist"].files:
        (mirror / remote.name).write_bytes(b"not the real file")
    with pytest.raises(DataError) as err:
        fetch("fashion-mnist", tmp_path / "cache", base_url=mirror.as_uri())
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and "checksum mismatch" in message
    assert "\n" not in message
    assert os.listdir(tmp_path / "cache" / "fashion-mnist") == []


def test_missing_remote_file_and_download_off(tmp_path):
    with pytest.raises(DataError) as err:
        fetch("cifar10", tmp_path / "cache", base_url=(tmp_path / "nowhere").as_uri())
    assert "cifar-10-python.tar.gz" in str(err.value) and "download failed" in str(err.value)
    assert os.listdir(tmp_path / "cache" / "cifar10") == []
    with pytest.raises(DataError) as err:
        fetch("cifar10", tmp_path / "cache", download=False)
    assert "cifar-10-python.tar.gz" in str(err.value)


def test_partial_cache_downloads_only_missing(fetched_mnist, shared_data, tmp_path, monkeypatch):
    (fetched_mnist / "train-labels-idx1-ubyte.gz").unlink()
    opened = []
    real_open = datasets._open_url
    monkeypatch.setattr(datasets, "_open_url", lambda url: opened.append(url) or real_open(url))
    fetch("mnist", tmp_path / "cache", base_url=(shared_data / "mnist").as_uri())
    assert [url.rsplit("/", 1)[-1] for url in opened] == ["train-labels-idx1-ubyte.gz"]
    shutil.rmtree(fetched_mnist)
