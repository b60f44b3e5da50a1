"""Frozen configs: validation names the key, YAML round-trips, overrides merge."""

import dataclasses

import pytest

from deepstrata.config import RunConfig, TrainConfig, dump_config, load_config
from deepstrata.errors import ConfigError


def test_frozen_and_validated():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3
    with pytest.raises(ConfigError, match="train.epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="train.device.*auto, cpu, cuda, mps"):
        TrainConfig(device="tpu")
    with pytest.raises(ConfigError, match="train.lr"):
        TrainConfig(lr="fast")


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig().override(train={"epochs": 4, "lr": 0.01}, data={"source": "mnist"})
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_unknown_keys_are_named_with_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 3\n  epoch: 4\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key train.epoch; expected one of .*epochs"):
        load_config(path)
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(path)
    path.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match="run.yaml: train.epochs"):
        load_config(path)
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"run.yaml:\d+:\d+: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_freeze_after_is_a_mapping_of_layer_names_to_positive_epochs(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  freeze_after: {stem: 3}\n")
    cfg = load_config(path)
    assert cfg.train.freeze_after == {"stem": 3}
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    with pytest.raises(ConfigError, match="train.freeze_after: got 3, expected a mapping"):
        TrainConfig(freeze_after=3)
    with pytest.raises(ConfigError, match="train.freeze_after.stem: got 0"):
        TrainConfig(freeze_after={"stem": 0})


def test_override_ignores_none_and_checks_model_name():
    cfg = RunConfig().override(train={"epochs": None, "seed": 5})
    assert cfg.train.epochs == TrainConfig().epochs and cfg.train.seed == 5
    with pytest.raises(ConfigError, match="model.name"):
        RunConfig().override(model={"name": "resnet9000"})


def test_per_world_turns_a_per_device_batch_into_the_global_one():
    from deepstrata.config import TrainConfig, per_world

    base = TrainConfig(batch_size=32, lr=0.01)
    assert per_world(base, 4) == base  # default: batch_size is already the global batch
    for scaling, lr in (("none", 0.01), ("linear", 0.04), ("sqrt", 0.02)):
        per = per_world(TrainConfig(batch_size=32, lr=0.01, batch_per_device=True, lr_scaling=scaling), 4)
        assert per.batch_size == 128 and per.lr == pytest.approx(lr)
        assert per_world(per, 4) == per  # applying it twice changes nothing
    assert per_world(TrainConfig(batch_size=32, batch_per_device=True, lr_scaling="linear"), 1).batch_size == 32
    with pytest.raises(ConfigError, match="train.lr_scaling"):
        TrainConfig(lr_scaling="cubic")


def test_a_key_in_the_wrong_section_names_its_section(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  text_column: body\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key train.text_column; text_column belongs in "
                                          r"section text \(text.text_column\)"):
        load_config(path)


def test_non_finite_values_are_refused_by_key_in_a_file(tmp_path):
    path = tmp_path / "run.yaml"
    for text, key in (("train:\n  lr: .inf\n", "train.lr"), ("train:\n  weight_decay: .nan\n", "train.weight_decay"),
                      ("recommend:\n  min_rating: .nan\n", "recommend.min_rating"),
                      ("text:\n  dropout: .nan\n", "text.dropout"), ("train:\n  seed: -5\n", "train.seed")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=rf"run.yaml: {key}: got (nan|inf|-5), expected"):
            load_config(path)
