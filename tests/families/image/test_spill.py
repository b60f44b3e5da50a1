"""Issue 17: an image folder over the memory budget is decoded once into the run's shards and streamed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepstrata.data.images import load_images
from deepstrata.data.shards import open_shards
from deepstrata.data.split import split_dataset
from deepstrata.errors import DataError
from deepstrata.families.image import spill
from deepstrata.families.image.streaming import default_buffer_size


@pytest.fixture()
def photos(tmp_path):
    """30 JPEGs of two classes, landscape and portrait, larger than the 64 px the policy picks on a CPU."""
    rng = np.random.default_rng(0)
    for c, label in enumerate(("cat", "dog")):
        folder = tmp_path / "photos" / label
        folder.mkdir(parents=True)
        for i in range(15):
            w, h = (120, 90) if i % 3 else (90, 120)
            pixels = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
            pixels[..., c] += 150
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return str(tmp_path / "photos")


def test_folder_over_the_budget_streams_through_the_runs_shards(photos, tmp_path, monkeypatch, capsys):
    from deepstrata.api import fit

    monkeypatch.setenv("DEEPSTRATA_MEMORY_BUDGET", "200KB")  # 30 x 3x64x64 = 368,640 bytes decoded
    with pytest.raises(DataError, match="over the memory budget"):
        load_images(photos, model="cnn", device="cpu")
    run = fit(photos, epochs=1, width=8, baselines=False, device="cpu", crop="resized", out=tmp_path / "run")
    err = capsys.readouterr().err
    assert "over the memory budget of 195.3 KiB: decoding them once into shards" in err and "images/s" in err

    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["data"]["shards"] == spill.SHARD_DIR and info["data"]["format"] == "folder"
    assert info["data"]["preprocess"] == {"resize": "short-side", "size": 64, "crop": "centre"}
    assert info["data"]["augmentation"].startswith("random resized crop")  # --crop resized streams too
    shards = open_shards(tmp_path / "run" / spill.SHARD_DIR)
    # what stays resident while streaming is bounded by the budget: the shuffle buffer within a quarter of it
    example = 3 * 64 * 64
    assert default_buffer_size((3, 64, 64)) * example <= 200_000 // 4
    assert json.loads((tmp_path / "run" / "comparison.json").read_text())["split"]["train"] == shards.splits[
        "train"].count

    # the same split and pixels the in-memory read makes (the fit's seed and fractions, the same crop)
    monkeypatch.setenv("DEEPSTRATA_MEMORY_BUDGET", "4GB")
    memory = load_images(photos, model="cnn", device="cpu")
    splits = split_dataset(memory, seed=0, val_fraction=0.1, test_fraction=0.2)
    test = shards.splits["test"]
    images, labels = np.empty((test.count, 3, 64, 64), np.uint8), np.empty(test.count, np.int64)
    test.gather(np.arange(test.count), images, labels)
    assert torch.equal(torch.from_numpy(images), splits.test_x) and torch.equal(torch.from_numpy(labels), splits.test_y)
    assert shards.splits["train"].count == len(splits.train_y) and shards.splits["val"].count == len(splits.val_y)

    # evaluate and inspect read the run's shards, never the whole folder (the budget is small again)
    monkeypatch.setenv("DEEPSTRATA_MEMORY_BUDGET", "200KB")
    result = run.evaluate()
    assert result["split"] == "test split of the run" and result["examples"] == len(splits.test_y)
    assert result["data"] == photos
    sample = run.family.inspect_sample(run, None, samples=100, seed=0, data_dir=None)
    assert sample.pool_size == len(splits.val_y) + len(splits.test_y)
    assert len(run.predict(f"{photos}/dog/0.jpg")) == 1  # a portrait file, cropped as in training


def test_a_resume_reuses_the_shards_only_while_they_describe_the_folder(photos, tmp_path, monkeypatch):
    from deepstrata.api import fit
    from deepstrata.config import load_config

    monkeypatch.setenv("DEEPSTRATA_MEMORY_BUDGET", "200KB")
    fit(photos, epochs=1, width=8, baselines=False, quiet=True, device="cpu", out=tmp_path / "run")
    cfg = load_config(tmp_path / "run" / "config.yaml")
    shards = open_shards(tmp_path / "run" / spill.SHARD_DIR)
    from deepstrata.families.image.fit import read

    planned = read(cfg).own.spill
    assert spill._reusable(shards, planned, cfg)
    assert not spill._reusable(shards, planned, cfg.override(train={"seed": 1}))
    assert not spill._reusable(shards, planned, cfg.override(data={"val_fraction": 0.2}))


def test_an_archive_over_the_budget_is_refused_saying_to_unpack_it(photos, tmp_path, monkeypatch):
    import tarfile

    from deepstrata.api import fit

    archive = tmp_path / "photos.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(photos, arcname="photos")
    monkeypatch.setenv("DEEPSTRATA_MEMORY_BUDGET", "200KB")
    with pytest.raises(DataError, match=r"; unpack it \(tar -xf .*photos.tar\) and give the folder"):
        fit(str(archive), epochs=1, baselines=False, quiet=True, device="cpu", out=tmp_path / "run")


def test_shard_size_gives_every_process_its_share_of_shards():
    class Source:
        image_shape = (3, 64, 64)

    planned = spill.Spill(Source(), 0, 0, {"train": 100_000, "val": 0, "test": 0})
    one, four = spill.shard_size(planned, 1), spill.shard_size(planned, 4)
    example = 3 * 64 * 64 + 8
    assert 100_000 // (one // example) >= spill.SHARDS_PER_PROCESS
    assert 100_000 // (four // example) >= 4 * spill.SHARDS_PER_PROCESS
    assert spill.shard_size(spill.Spill(Source(), 0, 0, {"train": 10, "val": 0, "test": 0}), 1) == spill.SMALLEST_SHARD


def test_options_that_need_the_images_in_memory_are_refused_for_a_streamed_folder(photos, tmp_path, monkeypatch):
    from deepstrata.api import fit
    from deepstrata.errors import ConfigError

    monkeypatch.setenv("DEEPSTRATA_MEMORY_BUDGET", "200KB")
    with pytest.raises(ConfigError, match=r"data.labels_per_class: 2 is for in-memory image runs"):
        fit(photos, labels_per_class=2, epochs=1, quiet=True, device="cpu", out=tmp_path / "run")
