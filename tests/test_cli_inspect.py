"""``deepstrata inspect`` and ``deepstrata features`` on a trained digits CNN, and their bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepstrata.cli import build_parser, main
from deepstrata.errors import ConfigError, DataError
from deepstrata.run import Run
from inspection.helpers import trained_digits_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return trained_digits_run(tmp_path_factory)


def test_help_lists_both_verbs(capsys):
    text = build_parser().format_help()
    assert "inspect" in text and "features" in text
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    out = capsys.readouterr().out
    for flag in ("--data", "--layers", "--samples", "--json", "--maximize", "--no-tsne"):
        assert flag in out


def test_inspect_prints_summary_json(digits_run, capsys):
    assert main(["inspect", str(digits_run), "--samples", "120", "--no-tsne", "--layers", "stem,stage2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 120 and [p["layer"] for p in summary["probes"]] == ["stem", "stage2"]
    assert summary["cka"]["layers"] == ["stem", "stage2"]
    assert (digits_run / "inspect" / "report.html").is_file()
    compact = summary["compactness"]  # raw pixels vs the default embedding, on the probes' own halves
    raw, embedding = compact["representations"]
    assert compact["layer"] == "features" and compact["split"] == summary["probe_split"]
    assert (raw["name"], raw["dim"], raw["bytes_per_example"]) == ("raw input", 64, 256)
    assert embedding["dim"] == Run(digits_run).model.feature_dim and compact["compression"] == round(64 / embedding["dim"], 3)
    assert raw["probe_accuracy"] == summary["input_probe"]["accuracy"] and 0 < embedding["nn_accuracy"] <= 1
    assert "Compactness: raw input vs embedding" in (digits_run / "inspect" / "report.html").read_text()


def test_inspect_prints_the_table(digits_run, capsys):
    assert main(["inspect", str(digits_run), "--samples", "60", "--no-tsne", "--layers", "stage1"]) == 0
    out = capsys.readouterr().out
    assert "layer" in out and "stage1" in out and "random" in out
    assert "compactness: raw input 64-d (256 B, probe " in out
    assert f"report: {digits_run / 'inspect' / 'report.html'}" in out


def test_unknown_layer_is_one_line_exit_2(digits_run, capsys):
    assert main(["inspect", str(digits_run), "--layers", "stem,stage9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "deepstrata: error: unknown layer 'stage9'; this model has: stem, stage1, stage2, head"
    assert main(["features", str(digits_run), "--layer", "block3", "--out", "x.npy"]) == 2
    assert "this model has: stem, stage1, stage2, head" in capsys.readouterr().err


def test_unknown_layer_from_a_fresh_process(digits_run):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-m", "deepstrata", "inspect", str(digits_run), "--layers", "nope"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "deepstrata: error: unknown layer 'nope'; this model has: stem, stage1, stage2, head"]


def test_bad_run_and_bad_values(tmp_path, digits_run, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["inspect", str(digits_run), "--samples", "5"]) == 2
    assert "--samples" in capsys.readouterr().err
    assert main(["features", str(digits_run), "--layer", "stage2", "--out", str(tmp_path / "f.txt")]) == 2
    assert ".npy" in capsys.readouterr().err


def test_features_writes_every_example(digits_run, tmp_path, capsys):
    out = tmp_path / "f.npy"
    assert main(["features", str(digits_run), "--layer", "stage2", "--data", "digits", "--out", str(out)]) == 0
    values = np.load(out)
    dim = Run(digits_run).model.feature_dim
    assert values.shape == (1797, dim) and values.dtype == np.float32
    assert f"1797 x {dim} features of layer stage2" in capsys.readouterr().out


def test_run_features_from_tensors(digits_run):
    from sklearn.datasets import load_digits

    run = Run(digits_run)
    pixels = np.rint(load_digits().images[:10] * (255.0 / 16.0)).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    as_uint8 = run.features(images, layer="stage1")
    as_float = run.features(images.float() / 255.0, layer="stage1")
    channels = run.model.forward_intermediates(torch.zeros(1, 1, 8, 8), ["stage1"])["stage1"].shape[1]
    assert as_uint8.shape == (10, channels)
    np.testing.assert_allclose(as_uint8, as_float, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.features(images[0], layer="stage1"), as_uint8[:1], rtol=1e-5, atol=1e-6)
    all_digits = run.features("digits", layer="stage1")
    np.testing.assert_allclose(all_digits[:10], as_uint8, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match=r"expected images \[N, 1, 8, 8\]"):
        run.features(torch.zeros(2, 3, 8, 8), layer="stage1")
    with pytest.raises(ConfigError, match="this model has"):
        run.features(images, layer="stage4")


def test_features_of_a_recommender_name_each_rows_id(tmp_path_factory, tmp_path, capsys):
    """Rows of item_embedding are items: the ids file says which, in order, as Run.features(with_ids=True)."""
    import json

    import deepstrata as ds
    from tests.tiny_runs import tiny_run

    run = tiny_run("recommend", tmp_path_factory)
    out = tmp_path / "items.npy"
    assert main(["features", str(run), "--layer", "item_embedding", "--out", str(out)]) == 0
    assert "row ids in" in capsys.readouterr().out
    opened = ds.load(run)
    values, ids = opened.features(opened.config.data.source, "item_embedding", with_ids=True)
    saved = json.loads(out.with_suffix(".ids.json").read_text())
    assert saved == [str(i) for i in ids] and len(saved) == len(np.load(out)) == len(values)
