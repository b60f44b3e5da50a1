"""``train.channels_last: auto``: on for convolutional image models, off elsewhere, and the same outputs either way.

The speed-up is a benchmark's business (benchmarks/cpu_train_options.py); here: which runs
get the format, that an explicit choice is kept, that the config and the CLI spell it, and
that a convolutional model computes the same logits from an NHWC batch as from NCHW.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from deepstrata.cli import build_parser, main
from deepstrata.config import ModelConfig, RunConfig, TrainConfig
from deepstrata.errors import ConfigError
from deepstrata.families.base import Prepared
from deepstrata.families.image.family import ImageFamily
from deepstrata.families.image.fit import InMemory
from deepstrata.families.recommend.family import RecommendFamily
from deepstrata.families.text.family import TextFamily
from deepstrata.models.registry import build_image_model
from deepstrata.run import Run

CPU = torch.device("cpu")


def run_config(model: str, channels_last="auto") -> RunConfig:
    return RunConfig(model=ModelConfig(name=model), train=TrainConfig(channels_last=channels_last))


@pytest.mark.parametrize("model", ["cnn", "whitened-cnn", "efficientnet-lite0"])
def test_auto_turns_it_on_for_a_convolutional_image_model(model):
    cfg, reason = ImageFamily().resolve_channels_last(run_config(model), CPU)
    assert cfg.train.channels_last is True and cfg.train.uses_channels_last
    assert reason == f"auto: {model} is convolutional, and cpu convolutions run faster in NHWC"


@pytest.mark.parametrize("family, model, device", [(ImageFamily(), "mlp", "cpu"), (ImageFamily(), "cnn", "mps"),
                                                    (TextFamily(), "transformer", "cpu"),
                                                    (RecommendFamily(), "sasrec", "cpu")])
def test_auto_leaves_it_off_elsewhere(family, model, device):
    cfg, reason = family.resolve_channels_last(run_config(model), torch.device(device))
    assert cfg.train.channels_last is False and not cfg.train.uses_channels_last
    assert reason == "auto: only convolutional image models on a CPU or CUDA GPU use it"


def prepared(side: int) -> Prepared:
    splits = SimpleNamespace(train_x=torch.zeros(2, 1, side, side + 4, dtype=torch.uint8))
    return Prepared(source="x", train_size=2, guarded_paths=(), own=InMemory(None, splits))


@pytest.mark.parametrize("side, on", [(8, False), (15, False), (16, True), (28, True)])
def test_auto_keeps_nchw_for_small_inputs(side, on):
    """digits' 8x8 keeps the layout its demo accuracy was measured in (BENCHMARKS.md); MNIST's 28x28 converts."""
    cfg, reason = ImageFamily().resolve_channels_last(run_config("cnn"), CPU, prepared(side))
    assert cfg.train.channels_last is on
    if not on:
        assert reason == f"auto: NCHW for {side}-pixel inputs (channels-last only from 16 pixels)"
    assert ImageFamily().resolve_channels_last(run_config("cnn", True), CPU, prepared(side))[0].train.channels_last


@pytest.mark.parametrize("asked", [True, False])
def test_an_explicit_choice_is_kept(asked):
    cfg = run_config("mlp" if asked else "cnn", asked)
    assert ImageFamily().resolve_channels_last(cfg, CPU) == (cfg, "as asked")


def test_auto_unresolved_means_off_in_the_loop():
    """Code that trains outside a fit (bench, a benchmark script) gets NCHW, as before the default changed."""
    assert TrainConfig().channels_last == "auto" and not TrainConfig().uses_channels_last


@pytest.mark.parametrize("argv, expected", [([], None), (["--channels-last"], "on"), (["--channels-last", "off"], "off"),
                                            (["--channels-last", "auto"], "auto")])
def test_the_cli_spells_on_off_and_auto(argv, expected):
    args = build_parser().parse_args(["fit", "--data", "digits", *argv])
    assert args.channels_last == expected
    if expected is not None:
        assert TrainConfig(channels_last=expected).channels_last == {"on": True, "off": False}.get(expected, "auto")


def test_a_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"^train.channels_last: got 'maybe', expected auto, true or false$"):
        TrainConfig(channels_last="maybe")


@pytest.mark.parametrize("model, shape", [("cnn", (1, 28, 28)), ("whitened-cnn", (3, 32, 32)),
                                          ("efficientnet-lite0", (3, 64, 64))])
def test_a_convolutional_model_gives_the_same_logits_channels_last(model, shape):
    torch.manual_seed(0)
    kwargs = {"width": 8} if model != "efficientnet-lite0" else {}
    net = build_image_model(model, shape, 10, **kwargs).eval()
    x = torch.rand(4, *shape)
    with torch.no_grad():
        nchw = net(x)
        net.to(memory_format=torch.channels_last)
        nhwc = net(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(nchw, nhwc, atol=1e-5, rtol=1e-4)


def test_a_fit_trains_channels_last_saves_it_and_evaluate_repeats_its_scores(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "--data", "digits", "--image-size", "16", "--epochs", "1", "--width", "8", "--no-baselines",
                 "--device", "cpu", "--seed", "0", "--threads", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "memory format: channels-last (auto: cnn is convolutional, and cpu convolutions run faster in NHWC)" in err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["channels_last"] is True
    scored = next(row for row in json.loads((out / "comparison.json").read_text())["rows"] if row["kind"] == "learned")
    assert Run(out).evaluate()["metrics"] == scored["metrics"]
