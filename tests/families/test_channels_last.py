"""``train.channels_last: auto``: on for convolutional image models, off elsewhere, and the same outputs either way.

The speed-up is a benchmark's business (benchmarks/cpu_train_options.py); here: which runs
get the format, that an explicit choice is kept, that the config and the CLI spell it, and
that a convolutional model computes the same logits from an NHWC batch as from NCHW.
"""

from __future__ import annotations

import pytest
import torch

from deepstrata.cli import build_parser
from deepstrata.config import ModelConfig, RunConfig, TrainConfig
from deepstrata.errors import ConfigError
from deepstrata.families.image.family import ImageFamily
from deepstrata.families.recommend.family import RecommendFamily
from deepstrata.families.text.family import TextFamily
from deepstrata.models.registry import build_image_model

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
