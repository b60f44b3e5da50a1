"""The plateau rule: when it fires, the cool-down it runs, what the run records, and an exact resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from deepstrata.config import TrainConfig, load_config, resolved_train
from deepstrata.engine import plateau
from deepstrata.engine.loop import train
from tests.engine.test_loop import Crash, CrashingTask, make


def test_the_smoothed_metric_and_when_the_rule_fires():
    assert plateau.smooth([], 0.5) == [0.5]
    assert plateau.smooth([0.5], 0.7) == [0.5, 0.6]  # half the newest epoch, half the past
    flat = [0.9, 0.95, 0.97, 0.9705, 0.971, 0.9712]
    assert plateau.fires(flat, 6, 20, warmed_up=False) is None  # never during the warm-up
    assert plateau.fires(flat[:3], 3, 20, warmed_up=True) is None  # not enough epochs to judge
    assert plateau.fires(flat, 6, 20, warmed_up=True) is None  # 0.9712 - 0.97 > 0.001: still improving
    still = [0.9, 0.95, 0.97, 0.9702, 0.9704, 0.9705]
    record = plateau.fires(still, 6, 20, warmed_up=True)
    assert record == {"epoch": 6, "smoothed": 0.9705, "gain": pytest.approx(0.9705 - 0.97), "over_epochs": 3,
                      "margin": 0.001, "cooldown_epochs": 2, "ends_at_epoch": 8}
    assert plateau.fires(still, 6, 8, warmed_up=True) is None  # the plan ends as soon: nothing to save


def test_the_cool_down_falls_linearly_to_the_end_rate():
    rates = [plateau.cooldown_lr(1.0, 0.0, step, 4) for step in range(4)]
    assert rates == [0.75, 0.5, 0.25, 0.0]


def test_auto_is_on_only_when_the_epochs_are_sized_from_the_data():
    assert resolved_train(TrainConfig(plateau="auto"), 5_000).plateau == "on"
    assert resolved_train(TrainConfig(plateau="auto", epochs=7), 5_000).plateau == "auto"  # the loop: off
    assert resolved_train(TrainConfig(plateau="on", epochs=7), 5_000).plateau == "on"
    assert TrainConfig().plateau == "auto"


def test_a_yaml_on_or_off_is_read_as_the_mode(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  plateau: on\n")  # YAML 1.1: a bare on is the boolean true
    assert load_config(path).train.plateau == "on"


class Saturating:
    """A task whose validation accuracy does not move: the rule fires as soon as the warm-up is over."""

    primary_metric = "accuracy"

    def __init__(self, task):
        self.task, self.epochs = task, 0
        self.num_batches, self.train_batches, self.loss = task.num_batches, task.train_batches, task.loss

    def validate(self, model, device):
        self.epochs += 1
        return {**self.task.validate(model, device), "val_accuracy": 0.9}


CFG = TrainConfig(epochs=12, batch_size=64, lr=3e-3, device="cpu", seed=0, plateau="on", checkpoint_seconds=0)


def test_a_saturated_run_cools_down_and_ends_early_and_says_so(tmp_path, capsys):
    model, task = make()
    result = train(model, Saturating(task), CFG, tmp_path, quiet=False)
    # The warm-up is 3 of 12 epochs; after epoch 4 the smoothed value has gained 0 over 3 epochs: a
    # cool-down of round(0.25 x 4) = 1 epoch, so the run ends after epoch 5.
    fired = result.plateau
    assert {k: fired[k] for k in ("epoch", "gain", "cooldown_epochs", "ends_at_epoch", "metric")} == {
        "epoch": 4, "gain": 0.0, "cooldown_epochs": 1, "ends_at_epoch": 5, "metric": "val_accuracy"}
    assert result.epochs_run == fired["ends_at_epoch"] < CFG.epochs
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, fired["ends_at_epoch"] + 1))
    assert rows[fired["epoch"] - 1]["plateau"]["ends_at_epoch"] == fired["ends_at_epoch"]
    assert sum("plateau" in row for row in rows) == 1
    cooldown = [row["lr"] for row in rows[fired["epoch"]:]]
    assert cooldown == sorted(cooldown, reverse=True) and cooldown[-1] == pytest.approx(0.0)
    assert "plateau: smoothed val_accuracy gained" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["off", "auto"])  # auto with the epochs given: they all run
def test_off_runs_every_epoch(tmp_path, mode):
    model, task = make()
    result = train(model, Saturating(task), dataclasses.replace(CFG, plateau=mode), tmp_path, quiet=True)
    assert result.plateau is None and result.epochs_run == CFG.epochs


def test_a_run_killed_in_its_cool_down_resumes_exactly(tmp_path):
    reference, task = make()
    ref = train(reference, Saturating(task), CFG, tmp_path / "ref", quiet=True)
    fired = ref.plateau
    model, task = make()
    steps_per_epoch = task.num_batches(CFG.batch_size)
    with pytest.raises(Crash):  # killed one step into the cool-down's last epoch
        train(model, CrashingTask(Saturating(task), steps_per_epoch * (fired["ends_at_epoch"] - 1) + 1), CFG,
              tmp_path / "run", quiet=True)
    fresh, task = make(seed=9)
    task = Saturating(task)
    task.epochs = fired["ends_at_epoch"] - 1  # the validations the killed run had done
    result = train(fresh, task, CFG, tmp_path / "run", resume=True, quiet=True)
    assert result.plateau == fired and result.epochs_run == ref.epochs_run
    for key, value in reference.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


def test_auto_is_off_for_a_family_the_rule_was_not_measured_on():
    from deepstrata.config import RunConfig
    from deepstrata.families.image.family import ImageFamily
    from deepstrata.families.recommend.family import RecommendFamily
    from deepstrata.families.text.family import TextFamily

    assert ImageFamily().resolve_plateau(RunConfig()).train.plateau == "auto"  # measured: sized epochs get it
    for family in (TextFamily(), RecommendFamily()):
        assert family.resolve_plateau(RunConfig()).train.plateau == "off", family.name
    asked = RunConfig(train=TrainConfig(plateau="on"))
    assert TextFamily().resolve_plateau(asked) is asked  # asked for: kept
