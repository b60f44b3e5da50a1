"""The CLI end to end on digits: fit, compare, evaluate, predict, resume, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepstrata.cli import build_parser, main

QUICK = ["--epochs", "4", "--batch-size", "64", "--width", "8", "--device", "cpu", "--quiet"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "deepstrata", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["fit", "--data", "digits", "--out", str(out), *QUICK]) == 0
    return out


def test_help_is_complete(capsys):
    parser = build_parser()
    text = parser.format_help()
    for verb in ("fit", "evaluate", "predict", "compare"):
        assert verb in text
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    fit_help = capsys.readouterr().out
    for flag in ("--data", "--model", "--epochs", "--batch-size", "--lr", "--seed", "--device", "--config", "--out",
                 "--resume", "--no-baselines", "--format", "--data-dir", "--skip-bad"):
        assert flag in fit_help


def test_fit_writes_a_complete_run_directory(digits_run):
    for name in ("config.yaml", "model.json", "provenance.json", "metrics.jsonl", "comparison.json",
                 "confusion.json", "report.html", "checkpoints/best.safetensors", "checkpoints/latest"):
        assert (digits_run / name).is_file(), name
    comparison = json.loads((digits_run / "comparison.json").read_text())
    assert comparison["task"] == "image-classification" and comparison["primary_metric"] == "accuracy"
    assert comparison["split"]["train"] + comparison["split"]["val"] + comparison["split"]["test"] == 1797
    names = [row["name"] for row in comparison["rows"]]
    assert names[0] == "cnn" and {"hog_lr", "pixels_lr"} <= set(names)
    for row in comparison["rows"]:
        assert row["kind"] in ("learned", "baseline")
        assert set(row["metrics"]) == {"accuracy", "macro_f1"}
        assert 0.0 <= row["metrics"]["accuracy"] <= 1.0
        for key in ("train_seconds", "feature_dim", "params"):
            assert isinstance(row[key], (int, float))
    assert comparison["rows"][0]["metrics"]["accuracy"] > 0.5


def test_compare_evaluate_predict(digits_run, tmp_path, capsys):
    assert main(["compare", str(digits_run)]) == 0
    table = capsys.readouterr().out
    assert "hog_lr" in table and "pixels_lr" in table and "cnn" in table

    assert main(["evaluate", str(digits_run), "--data", "digits", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    comparison = json.loads((digits_run / "comparison.json").read_text())
    assert result["split"] == "test split of the run"
    assert result["metrics"]["accuracy"] == pytest.approx(comparison["rows"][0]["metrics"]["accuracy"])

    from sklearn.datasets import load_digits
    digits = load_digits()
    paths = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(path)
        paths.append(str(path))
    assert main(["predict", str(digits_run), *paths, "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)
    assert [Path(p["path"]).name for p in predictions] == ["digit0.png", "digit1.png", "digit2.png"]
    assert all(p["label"] in [str(c) for c in range(10)] and 0 < p["probability"] <= 1 for p in predictions)
    assert main(["predict", str(digits_run), str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_python_api_round_trip(digits_run):
    import deepstrata as ds

    run = ds.load(digits_run)
    assert run.classes == [str(i) for i in range(10)]
    assert "cnn" in run.compare()
    assert len(run.history()) == 4


def test_existing_run_directory_is_not_overwritten(digits_run):
    before = (digits_run / "comparison.json").read_bytes()
    proc = cli("fit", "--data", "digits", "--out", str(digits_run), *QUICK)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (digits_run / "comparison.json").read_bytes() == before


@pytest.mark.parametrize(
    "args,expected",
    [
        (["fit", "--data", "/no/such/path"], "/no/such/path"),
        (["fit", "--data", "digits", "--resume", "--out", "{tmp}/nothing"], "checkpoint"),
        (["evaluate", "{tmp}"], "not a deepstrata run directory"),
        (["compare", "/no/such/run"], "run directory not found"),
        (["fit", "--config", "{tmp}/bad.yaml"], "unknown key train.epoch"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, expected):
    (tmp_path / "bad.yaml").write_text("train:\n  epoch: 3\n")
    proc = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deepstrata: error:") and expected in lines[0]


def test_bad_cli_value_exits_2():
    proc = cli("fit", "--model", "transformer9")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


@pytest.mark.parametrize("flag,value,expected", [
    ("--lr", "inf", "--lr: got inf, expected a finite positive number"),  # trained to NaN with exit 0 before
    ("--weight-decay", "nan", "--weight-decay: got nan, expected a finite number >= 0"),  # likewise
    ("--seed", "-5", "--seed: got -5, expected an integer from 0 to 4294967295"),  # a numpy traceback before
])
def test_non_finite_and_out_of_range_values_never_train(tmp_path, flag, value, expected):
    out = tmp_path / "run"
    proc = cli("fit", "--data", "digits", "--out", str(out), *QUICK, flag, value)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 3, proc.stderr
    assert lines == ["usage: deepstrata fit [options]", f"deepstrata fit: error: {expected}",
                     "see 'deepstrata fit --help'"]
    assert not out.exists()


def test_out_under_a_file_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "data.csv").write_text("keep me")
    proc = cli("fit", "--data", "digits", "--out", str(tmp_path / "data.csv" / "run"), *QUICK)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert line.startswith("deepstrata: error: ") and str(tmp_path / "data.csv" / "run") in line
    assert (tmp_path / "data.csv").read_text() == "keep me"
