"""Shards: sizes, fit's split written faithfully, streaming from folders, atomic writes, broken files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepstrata.cli import main
from deepstrata.data import shard_writer
from deepstrata.data import shards as shards_module
from deepstrata.data.images import ImageDataset, load_images, read_digits
from deepstrata.data.shards import (
    MANIFEST, FolderSource, is_shard_dir, open_shards, parse_size, verify_shards, write_shards,
)
from deepstrata.data.split import split_dataset
from deepstrata.errors import ConfigError, DataError
from deepstrata.families.image.task import channel_stats


@pytest.fixture(scope="module")
def digits():
    return read_digits()


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory, digits):
    return write_shards(digits, tmp_path_factory.mktemp("shards") / "digits", "20kB", seed=3)


def split_images(shards, name):
    """All images and labels of a split, in shard order."""
    parts = list(shards.splits[name].chunks(100))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def as_rows(x, y):
    """Order-free view of a set of examples: sorted (label, bytes) pairs."""
    return sorted((int(label), bytes(image.tobytes())) for image, label in zip(np.asarray(x), np.asarray(y)))


@pytest.mark.parametrize("text,expected", [
    ("256MB", 256 * 10**6), ("1GB", 10**9), ("500kB", 500_000), ("500KB", 500_000), ("64MiB", 64 * 2**20),
    ("1.5GB", 1_500_000_000), ("2 gib", 2 * 2**30), ("4096", 4096), (4096, 4096), ("100B", 100),
])
def test_parse_size_accepts_usual_spellings(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "abc", "12XB", "-5MB", "0", "0kB", "1e3MB", "5 M B", True])
def test_parse_size_rejects_bad_input_naming_the_key(text):
    with pytest.raises(ConfigError, match=r"^shard_size: got .*expected"):
        parse_size(text)


def test_shards_hold_exactly_fits_split(digit_shards, digits):
    splits = split_dataset(digits, seed=3)
    assert digit_shards.splits["train"].count == len(splits.train_y)
    assert digit_shards.splits["val"].count == len(splits.val_y)
    assert digit_shards.splits["test"].count == len(splits.test_y)
    train_x, train_y = split_images(digit_shards, "train")
    # Train is shuffled before writing (stream mixing is local), so compare as sets; val and test keep order.
    assert as_rows(train_x, train_y) == as_rows(splits.train_x.numpy(), splits.train_y.numpy())
    assert not np.array_equal(train_y, splits.train_y.numpy())
    for name, (x, y) in (("val", (splits.val_x, splits.val_y)), ("test", (splits.test_x, splits.test_y))):
        got_x, got_y = split_images(digit_shards, name)
        assert np.array_equal(got_x, x.numpy()) and np.array_equal(got_y, y.numpy())
    mean, std = channel_stats(splits.train_x)
    assert np.allclose(digit_shards.mean, mean, atol=1e-5) and np.allclose(digit_shards.std, std, atol=1e-5)
    counts = np.bincount(splits.train_y.numpy(), minlength=10).tolist()
    assert digit_shards.splits["train"].class_counts == counts


def test_shard_sizes_and_manifest(digit_shards):
    manifest = json.loads((digit_shards.root / MANIFEST).read_text())
    assert manifest["format"] == "deepstrata-shards" and manifest["image_shape"] == [1, 8, 8]
    rows = 20_000 // (64 + 8)
    assert manifest["examples_per_shard"] == rows
    for name in ("train", "val", "test"):
        counts = [s["count"] for s in manifest["splits"][name]["shards"]]
        assert all(c == rows for c in counts[:-1]) and 0 < counts[-1] <= rows
        images = np.load(digit_shards.root / manifest["splits"][name]["shards"][0]["images"], mmap_mode="r")
        assert images.dtype == np.uint8 and images.shape == (counts[0], 1, 8, 8)
    assert verify_shards(digit_shards.root) == 2 * sum(len(s.shards) for s in digit_shards.splits.values())
    assert not [p for p in digit_shards.root.iterdir() if p.name.endswith(".tmp")]


def test_official_test_split_is_kept_whole(tmp_path):
    g = torch.Generator().manual_seed(0)
    ds = ImageDataset(x=torch.randint(0, 256, (90, 3, 4, 4), generator=g, dtype=torch.uint8),
                      y=torch.arange(90) % 3, classes=["a", "b", "c"],
                      test_x=torch.randint(0, 256, (30, 3, 4, 4), generator=g, dtype=torch.uint8),
                      test_y=torch.arange(30) % 3, source="synthetic")
    shards = write_shards(ds, tmp_path / "s", "1kB")
    assert shards.test_is_official and shards.splits["test"].count == 30
    x, y = split_images(shards, "test")
    assert np.array_equal(x, ds.test_x.numpy()) and np.array_equal(y, ds.test_y.numpy())
    assert shards.splits["train"].count + shards.splits["val"].count == 90


def make_folder(root, per_class=14):
    """Three class folders of small PNGs (gray and RGB mixed, one odd size)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog", "eel")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (12, 10) if (c, i) == (1, 3) else (10, 10)
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert("L" if i % 4 == 0 else "RGB")
            image.save(root / name / f"{i:03d}.png")
    return root


def test_folder_streams_in_chunks_and_matches_fits_in_memory_read(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "pets")
    monkeypatch.setattr(shard_writer, "CHUNK_BYTES", 5 * 3 * 10 * 10)  # five images per read
    reads = []
    original = FolderSource.read

    def spy(self, part, positions):
        reads.append(len(positions))
        return original(self, part, positions)

    monkeypatch.setattr(FolderSource, "read", spy)
    shards = write_shards(str(folder), tmp_path / "s", "2kB", seed=1)
    assert max(reads) == 5 and sum(reads) == 42  # never the whole set at once
    reference = split_dataset(load_images(str(folder), model="cnn", device="cpu"), seed=1)  # as fit reads it
    assert shards.classes == reference.classes and shards.image_shape == (3, 10, 10)
    for name in ("train", "val", "test"):
        x, y = split_images(shards, name)
        ref_x, ref_y = getattr(reference, f"{name}_x").numpy(), getattr(reference, f"{name}_y").numpy()
        assert as_rows(x, y) == as_rows(ref_x, ref_y), name
    assert any("most common size" in note for note in shards.notes)


def test_corrupt_body_in_folder_is_named_or_skipped(tmp_path):
    folder = make_folder(tmp_path / "pets", per_class=6)
    bad = folder / "dog" / "002.png"
    bad.write_bytes(bad.read_bytes()[:60])  # header intact, pixels cut off
    with pytest.raises(DataError, match="002.png: unreadable image"):
        write_shards(str(folder), tmp_path / "s", "2kB")
    assert not (tmp_path / "s" / MANIFEST).exists()
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.endswith(".tmp")]
    shards = write_shards(str(folder), tmp_path / "t", "2kB", skip_bad=True)
    assert sum(s.count for s in shards.splits.values()) == 17
    assert any("failed to decode" in note for note in shards.notes)


def test_interrupted_write_leaves_no_manifest(tmp_path, digits):
    class Boom(Exception):
        pass

    class Failing(shards_module.TensorSource):
        calls = 0

        def read(self, part, positions):
            Failing.calls += 1
            if Failing.calls == 3:
                raise Boom()
            return super().read(part, positions)

    out = tmp_path / "s"
    write_shards(digits, out, "20kB")
    with pytest.raises(ConfigError, match="already holds a shard set"):
        write_shards(digits, out, "20kB")
    with pytest.raises(Boom):
        write_shards(Failing(digits), out, "1kB", overwrite=True)
    assert not (out / MANIFEST).exists() and is_shard_dir(out)  # so fit reports the missing manifest
    with pytest.raises(DataError, match=f"{MANIFEST}: missing"):
        open_shards(out)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    shards = write_shards(digits, out, "40kB", overwrite=True)  # fewer, larger shards: stale ones go
    listed = {s.images.name for split in shards.splits.values() for s in split.shards}
    assert {p.name for p in out.glob("*.images.npy")} == listed


def test_refuses_to_overwrite_other_files_and_tiny_shards(tmp_path, digits):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        write_shards(digits, tmp_path, "20kB", overwrite=True)
    with pytest.raises(ConfigError, match="smaller than one 1x8x8 image"):
        write_shards(digits, tmp_path / "s", "50B")
    with pytest.raises(DataError, match="already a shard directory"):
        write_shards(str(write_shards(digits, tmp_path / "t", "20kB").root), tmp_path / "u", "20kB")


@pytest.fixture
def copy(tmp_path, digit_shards):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(digit_shards.root, target)
    return target


def test_corrupt_manifest_is_named(copy):
    (copy / MANIFEST).write_text('{"format": "deepstrata-shards", "version": 1,\n  "classes": [')
    assert is_shard_dir(copy)
    with pytest.raises(DataError, match=rf"{MANIFEST}:2:\d+: not valid JSON"):
        open_shards(copy)
    (copy / MANIFEST).write_text(json.dumps({"format": "deepstrata-shards", "version": 1}))
    with pytest.raises(DataError, match=rf"{MANIFEST}: missing key 'classes'"):
        open_shards(copy)
    (copy / MANIFEST).write_text(json.dumps({"something": "else"}))
    assert not is_shard_dir(copy)
    with pytest.raises(DataError, match="not a deepstrata shard manifest"):
        open_shards(copy)


def test_missing_truncated_and_altered_shards_are_named(copy):
    victim = copy / "train-00001.images.npy"
    data = victim.read_bytes()
    victim.write_bytes(data[:-10])
    with pytest.raises(DataError, match="train-00001.images.npy: .* bytes, expected"):
        open_shards(copy)
    victim.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    open_shards(copy)  # size and header are right: only the checksum can tell
    with pytest.raises(DataError, match="train-00001.images.npy: sha256 differs"):
        verify_shards(copy)
    victim.unlink()
    with pytest.raises(DataError, match="train-00001.images.npy: shard file missing"):
        open_shards(copy)


def test_cli_shard_and_verify(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["shard", "--data", "digits", "--out", str(out), "--shard-size", "30kB", "--seed", "2", "--quiet"]) == 0
    shards = open_shards(out)
    assert shards.seed == 2 and shards.splits["train"].count == len(split_dataset(read_digits(), seed=2).train_y)
    assert main(["shard", "--verify", str(out)]) == 0
    assert "every sha256 matches" in capsys.readouterr().out
    assert main(["shard", "--data", "digits", "--out", str(tmp_path / "t"), "--shard-size", "lots"]) == 2
    assert "deepstrata: error: --shard-size: got 'lots'" in capsys.readouterr().err
    assert main(["shard", "--data", "digits"]) == 2
    assert "--out DIR are required" in capsys.readouterr().err
