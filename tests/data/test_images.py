import gzip
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepstrata.data.image_files import GRAY_MODES, peek_header
from deepstrata.data.images import (
    FORMATS, ImageDataset, detect_format, list_image_files, load_image_files, load_images,
    read_cifar, read_digits, read_idx, read_idx_dir, read_image_folder,
)
from deepstrata.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _image(path: Path, size=(10, 8), mode="L", value=100) -> Path:
    """Write a flat image of ``size`` (width, height); the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bands = {"LA": 2, "RGB": 3, "RGBA": 4}.get(mode, 1)
    color = value if bands == 1 else (value, 255 - value, 7, 255)[:bands]
    Image.new(mode, size, color).save(path)
    return path


def _bad_message(err, path) -> str:
    message = str(err.value)
    assert path.name in message, message
    assert "\n" not in message
    return message


# --- digits -------------------------------------------------------------------------------

def test_read_digits():
    ds = read_digits()
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == torch.uint8
    assert ds.y.shape == (1797,) and ds.y.dtype == torch.int64
    assert int(ds.x.min()) == 0 and int(ds.x.max()) == 255
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.y.bincount().tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert ds.test_x is None and ds.test_y is None
    assert ds.format == "digits" and "1797" in ds.source
    assert set(FORMATS) == {"digits", "folder", "idx", "cifar"}


def test_load_images_digits_resized():
    ds = load_images("digits", image_size=16)
    assert ds.x.shape == (1797, 1, 16, 16) and ds.x.dtype == torch.uint8
    assert any("16x16" in note for note in ds.notes)


# --- image folders ------------------------------------------------------------------------

def test_gray_png_folder(tmp_path):
    for label, value in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _image(tmp_path / label / f"{i}.png", value=value)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = read_image_folder(tmp_path)
    assert isinstance(ds, ImageDataset)
    assert ds.x.shape == (6, 1, 8, 10) and ds.x.dtype == torch.uint8
    assert ds.classes == ["cat", "dog"] and ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.x[0].unique().tolist() == [10] and ds.x[5].unique().tolist() == [200]
    assert ds.test_x is None and ds.format == "folder" and ds.source == str(tmp_path)
    assert any("most common size" in note for note in ds.notes)


def test_mixed_gray_and_color_become_rgb(tmp_path):
    _image(tmp_path / "a" / "1.png", mode="L", value=50)
    _image(tmp_path / "a" / "2.bmp", mode="L", value=60)
    _image(tmp_path / "b" / "1.jpg", mode="RGB", value=250)
    _image(tmp_path / "b" / "2.png", mode="P", value=3)
    ds = read_image_folder(tmp_path)
    assert ds.x.shape == (4, 3, 8, 10)
    assert ds.x[0, :, 0, 0].tolist() == [50, 50, 50]
    assert abs(int(ds.x[2, 0, 4, 4]) - 250) <= 3
    assert any("RGB" in note for note in ds.notes)


def test_most_common_size_and_explicit_size(tmp_path):
    for i in range(3):
        _image(tmp_path / "a" / f"{i}.png", size=(8, 8))
    _image(tmp_path / "b" / "big.png", size=(16, 12))
    ds = read_image_folder(tmp_path)
    assert ds.x.shape == (4, 1, 8, 8)
    assert any("resized 1 images" in note for note in ds.notes)
    ds = read_image_folder(tmp_path, image_size=5)
    assert ds.x.shape == (4, 1, 5, 5)
    assert any("5x5" in note for note in ds.notes)


def _split_tree(root: Path) -> Path:
    for split, n in (("train", 3), ("test", 2)):
        for label, value in (("ant", 30), ("bee", 90), ("cow", 150)):
            for i in range(n):
                _image(root / split / label / f"{i:04d}.jpg", mode="RGB", value=value)
    return root


def test_train_test_layout_inside_a_wrapper_folder(tmp_path):
    root = _split_tree(tmp_path / "wrap")
    ds = read_image_folder(tmp_path)
    assert ds.classes == ["ant", "bee", "cow"]
    assert ds.x.shape == (9, 3, 8, 10) and ds.test_x.shape == (6, 3, 8, 10)
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert read_image_folder(root).y.tolist() == ds.y.tolist()


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.xz", "w:xz")])
def test_archive_reads_like_the_folder(tmp_path, suffix, mode):
    root = _split_tree(tmp_path / "set")
    archive = tmp_path / f"set{suffix}"
    with tarfile.open(archive, mode) as tar:
        tar.add(root, arcname="set")
    assert detect_format(archive) == "folder"
    from_dir, from_tar = read_image_folder(root), load_images(str(archive))
    assert torch.equal(from_dir.x, from_tar.x) and torch.equal(from_dir.test_y, from_tar.test_y)
    assert from_tar.source == str(archive)


def test_folder_holding_only_an_archive(tmp_path):
    root = _split_tree(tmp_path / "set")
    holder = tmp_path / "download"
    holder.mkdir()
    with tarfile.open(holder / "set.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="set")
    (holder / "README.txt").write_text("where it came from")
    assert detect_format(holder) == "folder"
    ds = load_images(str(holder))
    assert ds.source == str(holder / "set.tar.gz") and ds.test_x.shape == (6, 3, 8, 10)


def test_real_cifar10_jpeg_sample(shared_data, tmp_path):
    archive = shared_data / "cifar10-jpeg" / "cifar10-jpeg.tar.xz"
    assert detect_format(archive) == "folder" and detect_format(archive.parent) == "folder"
    wanted = {"airplane": 0, "automobile": 0}
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[2] in wanted and wanted[parts[2]] < 5:
                wanted[parts[2]] += 1
                _image_bytes = tar.extractfile(member).read()
                (tmp_path / parts[2]).mkdir(exist_ok=True)
                (tmp_path / parts[2] / parts[3]).write_bytes(_image_bytes)
            if min(wanted.values()) == 5:
                break
    ds = read_image_folder(tmp_path)
    assert ds.x.shape == (10, 3, 32, 32) and ds.classes == ["airplane", "automobile"]


def test_header_peek_agrees_with_pillow(tmp_path):
    for mode in ("L", "RGB", "RGBA", "P", "LA", "I;16", "1"):
        for suffix in (".png", ".jpg"):
            if suffix == ".jpg" and mode not in ("L", "RGB"):
                continue
            path = _image(tmp_path / f"{mode.replace(';', '')}{suffix}", size=(13, 7), mode=mode)
            peek = peek_header(path.read_bytes())
            with Image.open(path) as im:
                assert peek[1] == im.size
                assert (peek[0] in GRAY_MODES) == (im.mode in GRAY_MODES), mode


@pytest.mark.parametrize("layout", ["missing", "empty", "one_class", "no_class_dirs", "test_only_class"])
def test_folder_layout_errors(tmp_path, layout):
    root = tmp_path / "pics"
    if layout == "empty":
        root.mkdir()
    elif layout == "one_class":
        _image(root / "only" / "a.png")
    elif layout == "no_class_dirs":
        _image(root / "a.png")
    elif layout == "test_only_class":
        _image(root / "train" / "a" / "1.png")
        _image(root / "train" / "b" / "1.png")
        _image(root / "test" / "zebra" / "1.png")
    with pytest.raises(DataError) as err:
        read_image_folder(root)
    _bad_message(err, root)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_names_the_file_unless_skipped(tmp_path, damage):
    for label in ("a", "b"):
        for i in range(2):
            _image(tmp_path / label / f"{i}.jpg", mode="RGB")
    bad = tmp_path / "b" / "broken.jpg"
    good = (tmp_path / "a" / "0.jpg").read_bytes()
    bad.write_bytes(b"this is not a jpeg" if damage == "garbage" else good[: len(good) // 2])
    with pytest.raises(DataError) as err:
        read_image_folder(tmp_path)
    assert "skip" in _bad_message(err, bad)
    ds = read_image_folder(tmp_path, skip_bad=True)
    assert len(ds.y) == 4
    assert "skipped 1 unreadable images (--skip-bad)" in ds.notes


def test_list_and_load_image_files(tmp_path):
    _image(tmp_path / "z.png", size=(4, 4), value=9)
    _image(tmp_path / "sub" / "a.jpg", size=(6, 6), mode="RGB")
    (tmp_path / "readme.txt").write_text("x")
    files = list_image_files(tmp_path)
    assert files == [tmp_path / "sub" / "a.jpg", tmp_path / "z.png"]
    assert list_image_files(tmp_path / "z.png") == [tmp_path / "z.png"]
    x = load_image_files(files, channels=1, size=(5, 7))
    assert x.shape == (2, 1, 5, 7) and x.dtype == torch.uint8
    assert load_image_files(files, channels=3, size=(4, 4)).shape == (2, 3, 4, 4)
    for bad in (tmp_path / "readme.txt", tmp_path / "nope", tmp_path / "empty"):
        if bad.name == "empty":
            bad.mkdir()
        with pytest.raises(DataError) as err:
            list_image_files(bad)
        _bad_message(err, bad)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError) as err:
        load_image_files([files[0], broken], channels=3, size=(4, 4))
    _bad_message(err, broken)


# --- IDX ----------------------------------------------------------------------------------

_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
          np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, _CODES[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def _write_idx(path: Path, arr: np.ndarray) -> Path:
    data = _idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, dtype, suffix):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    out = read_idx(_write_idx(tmp_path / f"a-idx3{suffix}", arr))
    np.testing.assert_array_equal(out, arr)
    assert out.dtype.isnative and out.flags.writeable


def _idx_dir(root: Path, n_train=12, n_test=5, gz=True) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 6, 5), dtype=np.uint8))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", (np.arange(n) % 4).astype(np.uint8))
    return root


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_dir_synthetic(tmp_path, gz):
    root = _idx_dir(tmp_path / "idx", gz=gz)
    assert detect_format(root) == "idx"
    ds = read_idx_dir(root)
    assert ds.x.shape == (12, 1, 6, 5) and ds.test_x.shape == (5, 1, 6, 5)
    assert ds.classes == ["0", "1", "2", "3"] and ds.y.dtype == torch.int64
    assert ds.format == "idx"
    resized = load_images(str(root), image_size=8)
    assert resized.x.shape == (12, 1, 8, 8) and resized.test_x.shape == (5, 1, 8, 8)


def test_real_mnist(shared_data):
    ds = load_images(str(shared_data / "mnist"))
    assert ds.format == "idx"
    assert ds.x.shape == (60000, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.y.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert ds.test_y.bincount().tolist() == MNIST_TEST_COUNTS
    assert ds.classes == [str(i) for i in range(10)]


def test_wrong_magic_names_the_file(tmp_path):
    root = _idx_dir(tmp_path / "idx", gz=False)
    images_file = root / "train-images-idx3-ubyte"
    images_file.write_bytes((root / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataError) as err:
        read_idx_dir(root)
    assert _bad_message(err, images_file) == (
        f"{images_file}: not an IDX image file (magic number 0x00000801, expected 0x00000803)")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(DataError) as err:
        read_idx(junk)
    assert "magic number 0x12345678" in _bad_message(err, junk)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_names_the_file(tmp_path, gz):
    root = _idx_dir(tmp_path / "idx", gz=gz)
    victim = root / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(DataError) as err:
        read_idx_dir(root)
    assert "truncated" in _bad_message(err, victim)


def test_mismatched_counts_and_missing_files(tmp_path):
    root = _idx_dir(tmp_path / "idx")
    labels = root / "train-labels-idx1-ubyte.gz"
    _write_idx(labels, np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError) as err:
        read_idx_dir(root)
    assert "11 labels" in _bad_message(err, labels)
    labels.unlink()
    with pytest.raises(DataError) as err:
        read_idx_dir(root)
    assert "train-labels-idx1-ubyte" in str(err.value)


# --- CIFAR --------------------------------------------------------------------------------

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * n}


def _cifar_dir(root: Path, meta: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in (1, 2):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(_batch(6, i), protocol=2))
    (root / "test_batch").write_bytes(pickle.dumps(_batch(4, 9), protocol=2))
    if meta:
        names = {b"label_names": [c.encode() for c in CIFAR_CLASSES], b"num_vis": 3072}
        (root / "batches.meta").write_bytes(pickle.dumps(names, protocol=2))
    return root


def test_cifar_folder(tmp_path):
    root = _cifar_dir(tmp_path / "cifar-10-batches-py")
    assert detect_format(root) == "cifar" and detect_format(tmp_path) == "cifar"
    ds = read_cifar(root)
    assert ds.x.shape == (12, 3, 32, 32) and ds.x.dtype == torch.uint8
    assert ds.test_x.shape == (4, 3, 32, 32) and ds.classes == CIFAR_CLASSES
    first = _batch(6, 1)
    assert ds.y[:6].tolist() == first[b"labels"]
    assert torch.equal(ds.x[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
    assert torch.equal(read_cifar(tmp_path).x, ds.x)


def test_cifar_tar_gz_read_without_unpacking(tmp_path):
    root = _cifar_dir(tmp_path / "src" / "cifar-10-batches-py")
    cache = tmp_path / "cache"
    cache.mkdir()
    archive = cache / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    assert detect_format(archive) == "cifar" and detect_format(cache) == "cifar"
    for source in (archive, cache):
        ds = load_images(str(source))
        assert ds.format == "cifar" and ds.x.shape == (12, 3, 32, 32)
        assert torch.equal(ds.x, read_cifar(root).x) and ds.classes == CIFAR_CLASSES


def test_cifar_without_meta_names_classes_by_index(tmp_path):
    ds = read_cifar(_cifar_dir(tmp_path, meta=False))
    assert ds.classes == [str(i) for i in range(int(max(ds.y.max(), ds.test_y.max())) + 1)]
    assert any("batches.meta" in note for note in ds.notes)


@pytest.mark.parametrize("payload", [
    {b"labels": [1]},
    [1, 2, 3],
    {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
    {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
])
def test_not_a_cifar_batch(tmp_path, payload):
    root = _cifar_dir(tmp_path)
    victim = root / "data_batch_2"
    victim.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError) as err:
        read_cifar(root)
    _bad_message(err, victim)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_batch_is_refused(tmp_path):
    root = _cifar_dir(tmp_path / "cifar")
    marker = tmp_path / "pwned"
    victim = root / "data_batch_1"
    victim.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=2))
    with pytest.raises(DataError) as err:
        load_images(str(root))
    assert "refused to unpickle" in _bad_message(err, victim)
    assert not marker.exists()


# --- detection and dispatch ---------------------------------------------------------------

def test_detect_format_errors(tmp_path):
    with pytest.raises(DataError) as err:
        detect_format(tmp_path / "missing")
    _bad_message(err, tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        detect_format(empty)
    _bad_message(err, empty)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError) as err:
        load_images(str(text))
    _bad_message(err, text)
    fake = tmp_path / "fake.tar.gz"
    fake.write_bytes(b"not an archive")
    with pytest.raises(DataError) as err:
        detect_format(fake)
    _bad_message(err, fake)


def test_format_override_and_unknown_format(tmp_path):
    root = _idx_dir(tmp_path / "idx")
    with pytest.raises(DataError) as err:
        load_images(str(root), format="cifar")
    _bad_message(err, root)
    with pytest.raises(DataError, match="unknown format"):
        load_images(str(root), format="parquet")
    assert load_images(str(root), format="idx").format == "idx"
