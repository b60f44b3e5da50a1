"""``deepstrata runs`` / ``ds.runs``: a finished, a resumable, a failed, a damaged and a foreign directory."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

import deepstrata as ds
from deepstrata.cli import main
from deepstrata.errors import ConfigError
from deepstrata.runs_table import COLUMNS, format_runs
from tests.tracked_runs import failed_run, runs_folder


@pytest.fixture()
def folder(tmp_path_factory, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(runs_folder(tmp_path_factory), runs)
    failed_run(runs)
    damaged = runs / "damaged"
    shutil.copytree(runs / "finished", damaged)
    (damaged / "comparison.json").write_text('{"rows": [')
    group = runs / "sweep"
    group.mkdir()
    shutil.copytree(runs / "finished", group / "lr-small")
    return runs


def test_every_state_is_listed_with_its_reason(folder):
    rows = {row["name"]: row for row in ds.runs(folder)}
    assert set(rows) == {"damaged", "failed", "finished", "killed", "notes", "sweep/lr-small"}
    finished = rows["finished"]
    assert finished["status"] == "finished"
    assert (finished["family"], finished["data"], finished["model"]) == ("image-classification", "digits", "cnn")
    assert (finished["epochs"], finished["lr"], finished["batch_size"], finished["seed"]) == (1, 0.003, 128, 1)
    comparison = json.loads((folder / "finished" / "comparison.json").read_text())
    cnn = next(row for row in comparison["rows"] if row["name"] == "cnn")
    best = max((row for row in comparison["rows"] if row["kind"] == "baseline"),
               key=lambda row: row["metrics"]["accuracy"])
    assert finished["metric"] == "accuracy" and finished["test"] == cnn["metrics"]["accuracy"]
    assert finished["baseline"] == best["name"]
    assert finished["margin"] == pytest.approx(cnn["metrics"]["accuracy"] - best["metrics"]["accuracy"])
    assert finished["train_seconds"] == cnn["train_seconds"] and finished["report"] == "finished/report.html"
    assert rows["killed"]["status"] == "resumable" and "step 4" in rows["killed"]["note"]
    assert rows["failed"]["status"] == "failed" and "the data source vanished" in rows["failed"]["note"]
    assert rows["damaged"]["status"] == "damaged" and "comparison.json: damaged run file" in rows["damaged"]["note"]
    assert rows["notes"]["status"] == "foreign"
    assert rows["sweep/lr-small"]["status"] == "finished"
    assert all(set(COLUMNS) <= set(row) for row in rows.values())
    lines = format_runs(list(rows.values())).splitlines()
    assert len(lines) == 1 + len(rows) and lines[0].split()[:2] == ["name", "status"]


def test_sort_and_json_on_the_command_line(folder, capsys):
    assert main(["runs", str(folder), "--sort", "accuracy", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows][:2] in (["finished", "sweep/lr-small"], ["sweep/lr-small", "finished"])
    assert all(row["test"] is None for row in rows[2:])
    assert {"name", "status", "note", "report", "path"} <= set(rows[0])
    assert main(["runs", str(folder), "--sort", "name"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == sorted(names)
    assert main(["runs", str(folder), "--sort", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip() == f"deepstrata: error: {tmp_path / 'absent'}: not found"


def test_as_frame_without_pandas_says_so_in_one_line(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    assert isinstance(ds.runs(folder), list)
    with pytest.raises(ConfigError, match="as_frame=True needs pandas"):
        ds.runs(folder, as_frame=True)
