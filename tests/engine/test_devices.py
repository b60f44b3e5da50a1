"""``--precision auto``: what it resolves to on which hardware, and that a run saves the choice and why.

The capability probe is faked both ways, so the rule is checked whatever CPU runs the suite.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from deepstrata.cli import main
from deepstrata.engine import devices
from deepstrata.families.recommend.family import RecommendFamily
from deepstrata.config import RunConfig, TrainConfig
from deepstrata.run import Run

CPU = torch.device("cpu")


def test_auto_is_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: None)
    precision, reason = devices.resolve_precision("auto", CPU)
    assert precision == "32"
    assert "neither AVX512-BF16 nor AMX" in reason
    assert isinstance(devices.autocast(CPU, "auto"), type(devices.autocast(CPU, "32")))  # no autocast at all


@pytest.mark.parametrize("feature", ["AVX512-BF16", "AMX"])
def test_auto_is_bf16_on_a_cpu_that_runs_it_natively(monkeypatch, feature):
    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: feature)
    assert devices.resolve_precision("auto", CPU) == ("bf16", f"auto: this CPU has {feature} (native bf16)")
    with devices.autocast(CPU, "auto"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16


def test_an_explicit_precision_is_kept_whatever_the_hardware(monkeypatch):
    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: "AMX")
    for precision in ("32", "bf16"):
        assert devices.resolve_precision(precision, CPU) == (precision, "as asked")


def test_the_default_is_auto():
    assert TrainConfig().precision == "auto"


def test_the_probe_agrees_with_torch_and_the_cpu_flags():
    """The real probe: native bf16 exactly when torch's own checks or the kernel's CPU flags say so."""
    try:
        flags = next(line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []  # no /proc/cpuinfo (not Linux): torch's checks alone decide
    by_torch = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    expected = by_torch or bool({"amx_bf16", "avx512_bf16"} & set(flags))
    assert (devices.probe_cpu_bf16() is not None) == expected


@pytest.mark.parametrize("value, feature", [("0", None), ("", None), ("AVX512-BF16", "AVX512-BF16")])
def test_the_environment_overrides_the_probe(monkeypatch, value, feature):
    monkeypatch.setenv(devices.CPU_BF16_ENV, value)
    assert devices.cpu_bf16_feature() == feature
    assert devices.resolve_precision("auto", CPU)[0] == ("32" if feature is None else "bf16")


def test_the_suite_runs_in_fp32_on_any_cpu():
    """tests/conftest.py sets the override, which subprocess fits inherit."""
    import os

    assert os.environ[devices.CPU_BF16_ENV] == "0" and devices.resolve_precision("auto", CPU)[0] == "32"


def test_a_family_that_keeps_fp32_says_why(monkeypatch):
    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: "AVX512-BF16")

    class Unmeasured(RecommendFamily):
        auto_keeps_fp32 = "bf16 lost accuracy here"

    family = Unmeasured()
    cfg, reason = family.resolve_precision(RunConfig(), CPU)
    assert cfg.train.precision == "32"
    assert reason == "auto: fp32 for recommend runs (bf16 lost accuracy here)"
    asked = RunConfig(train=TrainConfig(precision="bf16"))
    assert family.resolve_precision(asked, CPU) == (asked, "as asked")


def test_every_family_trains_in_bf16_under_auto_where_it_is_native(monkeypatch):
    """bf16 matched fp32 on images, texts and recommendation (BENCHMARKS.md "bf16 against fp32")."""
    from deepstrata.families.image.family import ImageFamily
    from deepstrata.families.text.family import TextFamily

    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: "AVX512-BF16")
    for family in (ImageFamily(), TextFamily(), RecommendFamily()):
        assert family.resolve_precision(RunConfig(), CPU)[0].train.precision == "bf16", family.name


@pytest.mark.parametrize("feature, saved", [(None, "32"), ("AVX512-BF16", "bf16")])
def test_a_fit_saves_the_resolved_precision_and_its_reason(monkeypatch, capsys, tmp_path, feature, saved):
    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: feature)
    out = tmp_path / "run"
    args = ["fit", "--data", "digits", "--epochs", "1", "--width", "8", "--no-baselines", "--device", "cpu",
            "--seed", "0", "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert str(config["train"]["precision"]) == saved  # resume and evaluate read this, not the hardware
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["precision"] == saved
    assert provenance["precision_reason"] == devices.resolve_precision("auto", CPU)[1]
    shown = "fp32" if saved == "32" else saved
    assert f"precision: {shown} ({provenance['precision_reason']})" in err
    assert config["train"]["channels_last"] is False  # auto, saved resolved: NCHW for 8x8 digits
    assert "memory format" not in err
    # evaluate scores in the run's precision, whatever this machine has now: the fit's test figures again
    monkeypatch.setattr(devices, "cpu_bf16_feature", lambda: None)
    scored = next(row for row in json.loads((out / "comparison.json").read_text())["rows"] if row["kind"] == "learned")
    run = Run(out)
    assert run.evaluate()["metrics"] == pytest.approx(scored["metrics"])
    from deepstrata.data.images import read_digits
    from deepstrata.families.image.verbs import logits

    images = read_digits().x[:64]
    as_scored, as_predicted = logits(run, images, as_scored=True), logits(run, images)
    assert torch.equal(as_scored, as_predicted) == (saved == "32")  # bf16 logits differ in their low bits
