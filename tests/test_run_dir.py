"""The run directory is deepstrata's own: recognised by its marker, locked while a fit uses it, and only ever
cleaned of what deepstrata wrote (``deepstrata.rundir``). Real fits through the CLI, on digits, AG News rows
and a MovieLens slice."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import deepstrata as ds
from deepstrata import rundir
from deepstrata.cli import main
from deepstrata.errors import RunError

QUICK = ["--epochs", "1", "--width", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]
TEXT = ["--epochs", "1", "--dim", "16", "--layers", "1", "--heads", "2", "--vocab-size", "300",
        "--max-length", "32", "--device", "cpu", "--quiet"]
LOUD = QUICK[:-1]  # the notes a test reads are not --quiet
REC = ["--model", "mf", "--epochs", "1", "--width", "8", "--device", "cpu", "--quiet"]


def marker(run: Path) -> dict:
    return json.loads((run / rundir.MARKER).read_text())


def digest(run: Path, *names: str) -> dict[str, str]:
    return {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in names}


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_error_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepstrata: error: "), err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A finished digits run with its baselines (copy it before changing it)."""
    out = tmp_path_factory.mktemp("digits") / "run"
    assert main(["fit", "--data", "digits", "--out", str(out), *QUICK]) == 0
    return out


@pytest.fixture
def run_copy(digits_run, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(digits_run, target)
    return target


@pytest.fixture(scope="module")
def news_csv(shared_data, tmp_path_factory) -> Path:
    """160 AG News rows (40 per topic) as a CSV with a header."""
    from deepstrata.data.text import load_text

    ag = load_text(shared_data / "ag-news" / "test.csv")
    path = tmp_path_factory.mktemp("news") / "news.csv"
    counts: dict[int, int] = {}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "topic"])
        for text, label in zip(ag.texts, ag.labels.tolist()):
            if counts.get(label, 0) < 40:
                counts[label] = counts.get(label, 0) + 1
                writer.writerow([text, ag.classes[label]])
    return path


@pytest.fixture(scope="module")
def ratings(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """MovieLens 100K users 1-40 as ``u.data``, and users 41-45 as a CSV of new events."""
    lines = (shared_data / "movielens-100k" / "u.data").read_text().splitlines()
    folder = tmp_path_factory.mktemp("ml")
    old = [line for line in lines if int(line.split("\t")[0]) <= 40]
    new = [line.split("\t") for line in lines if 40 < int(line.split("\t")[0]) <= 45]
    (folder / "u.data").write_text("\n".join(old) + "\n")
    (folder / "new.csv").write_text("user_id,item_id,rating,timestamp\n" + "".join(",".join(r) + "\n" for r in new))
    return folder / "u.data", folder / "new.csv"


# ---------------------------------------------------------------- 1. recognised beyond doubt, never a stranger's


def test_a_fit_marks_its_run_finished_and_writes_only_names_it_owns(digits_run):
    info = marker(digits_run)
    assert info["format"] == rundir.FORMAT and info["deepstrata"] == ds.__version__ and info["status"] == "finished"
    assert not (digits_run / rundir.LOCK).exists()  # released at the end
    assert all(rundir.is_owned(p.name) for p in digits_run.iterdir()), sorted(p.name for p in digits_run.iterdir())


def test_the_owned_names_are_the_ones_the_tasks_write():
    from deepstrata import report
    from deepstrata.inspect.api import INSPECT_DIR
    from deepstrata.families.recommend import config as recommend_config
    from deepstrata.families.text import fit as text_fit

    for name in (text_fit.TOKENIZER_FILE, recommend_config.LOG_FILE, recommend_config.VOCAB_FILE,
                 report.REPORT_NAME, report.SECTIONS_NAME, "model.json", "config.yaml", "comparison.json"):
        assert name in rundir.OWNED_FILES, name
    assert INSPECT_DIR in rundir.OWNED_DIRS and "checkpoints" in rundir.OWNED_DIRS


def test_out_dot_with_overwrite_keeps_the_users_csv(news_csv, tmp_path, monkeypatch, capsys):
    """The reported case: `--out . --overwrite` once deleted the input CSV and a sub-folder."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(news_csv, tmp_path / "news.csv")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    before = tree(tmp_path)
    assert main(["fit", "--data", "news.csv", "--out", ".", "--overwrite", *TEXT]) == 2
    one_error_line(capsys, "current directory")
    assert tree(tmp_path) == before


def test_a_project_folder_is_never_replaced(tmp_path, capsys):
    """The reported case: `--out proj` holding config.yaml and src/ was replaced by a run."""
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.yaml").write_text("data: {source: digits}\n")
    (proj / "src" / "main.py").write_text("print('mine')\n")
    before = tree(proj)
    for extra in (["--overwrite"], [], ["--resume"]):
        assert main(["fit", "--data", "digits", "--out", str(proj), *extra, *QUICK]) == 2
        one_error_line(capsys, "not a deepstrata run directory")
        assert tree(proj) == before and sorted(p.name for p in proj.iterdir()) == ["config.yaml", "src"]


def test_the_current_directory_is_refused_even_when_it_is_a_run(run_copy, monkeypatch, capsys):
    monkeypatch.chdir(run_copy)
    before = tree(run_copy)
    assert main(["fit", "--data", "digits", "--out", ".", "--overwrite", *QUICK]) == 2
    one_error_line(capsys, "is the current directory")
    assert tree(run_copy) == before


def test_overwrite_removes_only_what_deepstrata_wrote(run_copy, capsys):
    (run_copy / "my-notes.txt").write_text("what I tried")
    (run_copy / "figures").mkdir()
    (run_copy / "figures" / "plot.svg").write_text("<svg/>")
    (run_copy / "inspect").mkdir()  # written by `deepstrata inspect`: deepstrata's, and stale after the new fit
    (run_copy / "inspect" / "summary.json").write_text("{}")
    (run_copy / rundir.MARKER).write_text(json.dumps({**marker(run_copy), "left-by": "the old run"}))
    assert main(["fit", "--data", "digits", "--out", str(run_copy), "--overwrite", "--no-baselines", *QUICK]) == 0
    assert (run_copy / "my-notes.txt").read_text() == "what I tried"
    assert (run_copy / "figures" / "plot.svg").read_text() == "<svg/>"
    assert not (run_copy / "inspect").exists()
    info = marker(run_copy)
    assert info["status"] == "finished" and "left-by" not in info  # a new marker, not the old one amended
    assert [row["name"] for row in json.loads((run_copy / "comparison.json").read_text())["rows"]] == ["cnn"]


def test_a_run_that_holds_the_input_data_is_not_overwritten(run_copy, news_csv, capsys):
    shutil.copy(news_csv, run_copy / "news.csv")
    before = tree(run_copy)
    assert main(["fit", "--data", str(run_copy / "news.csv"), "--out", str(run_copy), "--overwrite", *TEXT]) == 2
    one_error_line(capsys, "holds the input data")
    assert tree(run_copy) == before


@pytest.mark.parametrize("where", ["root", "home", "parent of cwd", "data parent"])
def test_places_that_are_never_cleaned(where, run_copy, tmp_path, monkeypatch):
    data = None
    if where == "root":
        target = Path(Path.cwd().anchor)
    elif where == "home":
        monkeypatch.setenv("HOME", str(run_copy))
        target = run_copy
    elif where == "parent of cwd":
        (run_copy / "checkpoints" / "deeper").mkdir()
        monkeypatch.chdir(run_copy / "checkpoints" / "deeper")
        target = run_copy
    else:
        (run_copy / "checkpoints" / "images").mkdir()
        data = run_copy / "checkpoints" / "images"
        target = run_copy
    before = tree(run_copy)
    with pytest.raises(RunError, match="refusing to replace it"):
        rundir.prepare_run_dir(target, resume=False, overwrite=True, data=[data], quiet=True)
    assert tree(run_copy) == before


def test_legacy_runs_without_the_marker(run_copy, tmp_path, capsys):
    """A run from before the marker: model.json + config.yaml + checkpoints/ and only names deepstrata writes."""
    (run_copy / rundir.MARKER).unlink()
    assert rundir.run_state(run_copy) == "legacy"
    stranger = tmp_path / "stranger"
    shutil.copytree(run_copy, stranger)
    (stranger / "thesis.tex").write_text("\\begin{document}")
    assert rundir.run_state(stranger) == "legacy+"
    before = tree(stranger)
    assert main(["fit", "--data", "digits", "--out", str(stranger), "--overwrite", *QUICK]) == 2
    one_error_line(capsys, "not a deepstrata run directory")
    assert tree(stranger) == before
    assert main(["fit", "--data", "digits", "--out", str(run_copy), "--overwrite", "--no-baselines", *QUICK]) == 0
    assert marker(run_copy)["status"] == "finished"


def test_a_marker_from_a_newer_format_is_refused(run_copy, capsys):
    (run_copy / rundir.MARKER).write_text(json.dumps({"format": rundir.FORMAT + 1, "status": "finished"}))
    before = tree(run_copy)
    assert main(["fit", "--data", "digits", "--out", str(run_copy), "--overwrite", *QUICK]) == 2
    one_error_line(capsys, "newer deepstrata")
    assert tree(run_copy) == before


def test_a_finished_run_needs_overwrite(run_copy, capsys):
    before = tree(run_copy)
    assert main(["fit", "--data", "digits", "--out", str(run_copy), *QUICK]) == 2
    one_error_line(capsys, "holds a finished run", "--resume", "--overwrite")
    assert tree(run_copy) == before


# ---------------------------------------------------------------- 2. validate before writing


def _digit_png(path: Path) -> Path:
    from sklearn.datasets import load_digits

    image = load_digits().images[0]
    Image.fromarray((image * 255 / 16).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("change", [["--model", "mlp"], ["--width", "16"]])
def test_a_refused_resume_leaves_the_finished_run_usable(change, run_copy, tmp_path, capsys):
    records = ("model.json", "config.yaml", "provenance.json", "comparison.json", "metrics.jsonl")
    before, status = digest(run_copy, *records), marker(run_copy)
    assert main(["fit", "--out", str(run_copy), "--resume", *change, "--quiet"]) == 2
    one_error_line(capsys, "--resume", "the run has a model")
    assert digest(run_copy, *records) == before and marker(run_copy) == status
    assert not (run_copy / rundir.LOCK).exists()
    assert main(["evaluate", str(run_copy)]) == 0
    assert "accuracy=" in capsys.readouterr().out
    assert main(["predict", str(run_copy), str(_digit_png(tmp_path / "zero.png"))]) == 0
    assert "zero.png" in capsys.readouterr().out


# ---------------------------------------------------------------- 3. a failed or killed fit never blocks the rerun


def test_a_fit_that_fails_after_set_up_is_marked_and_can_be_rerun(tmp_path, monkeypatch, capsys):
    import deepstrata.pipeline

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated after set-up)")

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(deepstrata.pipeline, "train", out_of_memory)
        with pytest.raises(RuntimeError, match="out of memory"):
            ds.fit("digits", "cnn", out=out, epochs=1, width=8, baselines=False, quiet=True, device="cpu")
    info = marker(out)
    assert info["status"] == "failed" and "out of memory" in info["error"]
    assert not (out / rundir.LOCK).exists() and (out / "config.yaml").is_file()
    (out / "my-notes.txt").write_text("try a smaller batch")
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)

    assert main(["fit", "--data", "digits", "--out", str(out), "--no-baselines", *LOUD]) == 0
    assert "did not finish (status failed); starting again" in capsys.readouterr().err
    assert marker(out)["status"] == "finished" and "error" not in marker(out)
    assert (out / "my-notes.txt").read_text() == "try a smaller batch"

    # --resume on a run stopped before its first checkpoint starts from the beginning and says so
    assert main(["fit", "--out", str(resumed), "--resume", "--device", "cpu"]) == 0
    assert "no checkpoint yet" in capsys.readouterr().err
    assert marker(resumed)["status"] == "finished"
    assert len((resumed / "metrics.jsonl").read_text().splitlines()) == 1


# ---------------------------------------------------------------- 4. one fit at a time


def test_a_second_fit_is_refused_while_the_first_lives_and_takes_over_once_it_is_killed(tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen([sys.executable, "-m", "deepstrata", "fit", "--data", "digits", "--out", str(out),
                              "--epochs", "40", "--width", "8", "--no-baselines", "--device", "cpu", "--quiet"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            lock = out / rundir.LOCK
            if (out / rundir.MARKER).is_file() and lock.is_file() and str(first.pid) in lock.read_text():
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first fit ended before it could be caught holding the lock"
        first.send_signal(signal.SIGSTOP)  # hold it still, lock and all
        before = tree(out)
        assert main(["fit", "--data", "digits", "--out", str(out), "--overwrite", *QUICK]) == 2
        one_error_line(capsys, "another fit is using this run directory", f"pid {first.pid}")
        assert main(["fit", "--out", str(out), "--resume", "--quiet"]) == 2
        one_error_line(capsys, "another fit is using this run directory")
        assert tree(out) == before
    finally:
        first.kill()
        first.wait()
    # killed (SIGKILL: nothing cleaned up): status "running", a lock file naming a dead process
    assert marker(out)["status"] == "running" and str(first.pid) in (out / rundir.LOCK).read_text()
    assert main(["fit", "--data", "digits", "--out", str(out), "--no-baselines", *LOUD]) == 0
    err = capsys.readouterr().err
    assert f"pid {first.pid}" in err and "no longer running; taking it over" in err
    assert marker(out)["status"] == "finished" and not (out / rundir.LOCK).exists()


# ---------------------------------------------------------------- 5. baseline rows survive --resume --no-baselines


def test_resume_without_baselines_keeps_the_saved_baseline_rows(run_copy, capsys):
    saved = json.loads((run_copy / "comparison.json").read_text())["rows"]
    assert {row["name"] for row in saved if row["kind"] == "baseline"} == {"hog_lr", "pixels_lr"}
    assert main(["fit", "--out", str(run_copy), "--resume", "--no-baselines", "--device", "cpu"]) == 0
    assert "keeping the 2 baseline rows" in capsys.readouterr().err
    rows = json.loads((run_copy / "comparison.json").read_text())["rows"]
    assert [row for row in rows if row["kind"] == "baseline"] == [row for row in saved if row["kind"] == "baseline"]
    assert marker(run_copy)["status"] == "finished"


# ---------------------------------------------------------------- 6 + 7. a saved config's task; every family finishes


def test_a_text_runs_config_starts_a_text_fit(news_csv, tmp_path):
    first, second = tmp_path / "text", tmp_path / "again"
    assert main(["fit", "--data", str(news_csv), "--out", str(first), "--no-baselines", *TEXT]) == 0
    assert marker(first)["status"] == "finished"
    assert all(rundir.is_owned(p.name) for p in first.iterdir())
    assert main(["fit", "--config", str(first / "config.yaml"), "--out", str(second), "--quiet"]) == 0
    assert json.loads((second / "model.json").read_text())["task"] == "text-classification"
    assert marker(second)["status"] == "finished"


def test_a_recommendation_runs_config_and_update_in_place(ratings, tmp_path, capsys):
    log, new_events = ratings
    first, second = tmp_path / "rec", tmp_path / "again"
    assert main(["fit", "--data", str(log), "--out", str(first), *REC]) == 0
    assert marker(first)["status"] == "finished"
    assert all(rundir.is_owned(p.name) for p in first.iterdir())
    assert main(["fit", "--config", str(first / "config.yaml"), "--out", str(second), "--no-baselines",
                 "--quiet"]) == 0
    assert json.loads((second / "model.json").read_text())["task"] == "recommendation"

    baselines = [r for r in json.loads((first / "comparison.json").read_text())["rows"] if r["kind"] == "baseline"]
    assert main(["fit", "--out", str(first), "--resume", "--no-baselines"]) == 0
    assert "keeping the 2 baseline rows" in capsys.readouterr().err
    assert [r for r in json.loads((first / "comparison.json").read_text())["rows"]
            if r["kind"] == "baseline"] == baselines

    (first / "my-notes.txt").write_text("users 41-45 arrive next week")
    assert main(["update", str(first), "--data", str(new_events), "--epochs", "1", "--quiet"]) == 0
    assert (first / "my-notes.txt").read_text() == "users 41-45 arrive next week"
    assert marker(first)["status"] == "finished" and not (first / rundir.LOCK).exists()
    assert json.loads((first / "model.json").read_text())["updates"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "rec"]  # no staging copies left
