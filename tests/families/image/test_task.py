"""Image task options of the speed-run recipe: alternating flips, test-time augmentation, no validation split."""

import pytest
import torch
from torch import nn

import deepstrata as ds
from deepstrata.config import DataConfig, TrainConfig
from deepstrata.engine.loop import batch_generator
from deepstrata.errors import ConfigError
from deepstrata.families.image.task import ImageClassificationTask, predict_logits, tta_views


def asymmetric_images(n=40):
    x = torch.zeros(n, 1, 6, 6, dtype=torch.uint8)
    x[:, :, :, :3] = 200  # bright left half: mirroring is visible
    return x, torch.arange(n) % 2


def test_alternating_flip_mirrors_each_image_on_exactly_one_of_two_epochs():
    x, y = asymmetric_images()
    task = ImageClassificationTask(x, y, x[:0], y[:0], num_classes=2, flip="alternate", translate=0)
    seen = {}
    for epoch in (0, 1, 2):
        order = torch.randperm(len(x), generator=batch_generator(0, epoch))
        batches = torch.cat([b[0] for b in task.train_batches(epoch, 10, seed=0)])
        mirrored = batches[:, 0, 0, 0] == 0  # the bright half moved to the right
        seen[epoch] = dict(zip(order[: len(batches)].tolist(), mirrored.tolist()))
    for i in seen[0]:
        assert seen[0][i] != seen[1][i] and seen[0][i] == seen[2][i]
    flipped = torch.tensor(list(seen[0].values()))
    assert 0 < flipped.sum() < len(flipped)  # a random half, not all or none


def test_tta_averages_mirror_and_shifted_views():
    views = tta_views(torch.rand(2, 3, 8, 8), mirror=True)
    assert len(views) == 6 and sum(w for w, _ in views) == pytest.approx(1.0)
    x = torch.rand(4, 1, 5, 5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 3))
    expected = (0.5 * model(x) + 0.25 * model(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")[..., :5, :5])
                + 0.25 * model(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")[..., 2:, 2:]))
    got = predict_logits(model, x, torch.device("cpu"), tta=True, mirror=False)
    assert torch.allclose(got, expected, atol=1e-6)
    plain = predict_logits(model, x, torch.device("cpu"))
    assert torch.allclose(plain, model(x), atol=1e-6)


def test_val_fraction_zero_trains_on_all_training_data_and_keeps_the_last_epoch(tmp_path):
    run = ds.fit("digits", model="whitened-cnn", out=tmp_path / "run", quiet=True, baselines=False, epochs=3,
                 batch_size=128, val_fraction=0, optimizer="sgd", lr=0.2, momentum=0.85, norm_lr_scale=16.0,
                 grad_clip=0.0, lookahead=True, tta=True, device="cpu")
    comparison = run.comparison()
    assert comparison["split"]["val"] == 0 and comparison["split"]["train"] == 1438
    assert comparison["rows"][0]["settings"]["best_epoch"] == 3
    assert [row["epoch"] for row in run.history()] == [1, 2, 3]
    # evaluate() scores the test split the way fit did (with TTA), so the numbers agree.
    assert run.evaluate()["metrics"]["accuracy"] == pytest.approx(comparison["rows"][0]["metrics"]["accuracy"])


def test_recipe_settings_are_validated_by_name():
    assert DataConfig(val_fraction=0).val_fraction == 0
    with pytest.raises(ConfigError, match="data.val_fraction"):
        DataConfig(val_fraction=-0.1)
    with pytest.raises(ConfigError, match="train.optimizer"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ConfigError, match="train.flip"):
        TrainConfig(flip="sometimes")
    with pytest.raises(ConfigError, match="train.lr_end"):
        TrainConfig(lr_end=1.5)
    with pytest.raises(ConfigError, match="train.translate_fill"):
        TrainConfig(translate_fill="wrap")
    with pytest.raises(ConfigError, match="train.momentum"):
        TrainConfig(momentum=1.0)


def test_text_runs_refuse_an_empty_validation_split(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"good movie {i},pos\nbad movie {i},neg\n" for i in range(20)))
    with pytest.raises(ConfigError, match="val_fraction"):
        ds.fit(str(table), out=tmp_path / "run", quiet=True, val_fraction=0)


def test_mirrored_borders_wider_than_the_image_are_refused_by_name():
    x, y = asymmetric_images(4)
    with pytest.raises(ConfigError, match="train.translate: 6 px"):
        ImageClassificationTask(x, y, x, y, num_classes=2, translate=6, translate_fill="reflect")
    task = ImageClassificationTask(x, y, x, y, num_classes=2, translate=2, translate_fill="reflect")
    assert task.describe_augmentation() == "random crop (pad 2, mirrored border)"


def test_split_notes_are_printed_and_recorded(tmp_path, capsys):
    """A class too small to give the test split an example is said once and kept in model.json's notes."""
    import json

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, count in (("big", 20), ("tiny", 2)):
        for i in range(count):
            (tmp_path / "imgs" / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8)).save(tmp_path / "imgs" / label / f"{i}.png")
    from deepstrata.cli import main

    assert main(["fit", "--data", str(tmp_path / "imgs"), "--epochs", "1", "--width", "8", "--no-baselines",
                 "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: split rule")]
    recorded = [n for n in json.loads((tmp_path / "run" / "model.json").read_text())["data"]["notes"]
                if n.startswith("split rule")]
    assert printed and [f"note: {n}" for n in recorded] == printed
