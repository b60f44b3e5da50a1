"""The scikit-learn helper process: the same baselines as in this process, and this process whenever it fails."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deepstrata.baselines import helper
from deepstrata.baselines.image_features import run_image_baselines
from deepstrata.baselines.text_features import run_text_baseline
from deepstrata.data.images import load_images
from deepstrata.errors import DataError
from tests.baselines.helper_functions import say_then_fail, sleep_there, torch_loaded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def started():
    helper.start()
    yield
    helper.stop()


@pytest.fixture(scope="module")
def digits():
    data = load_images("digits")
    x, y = data.x.numpy(), data.y.numpy()
    return x[:600], y[:600], x[600:750], y[600:750], x[750:1000], y[750:1000]


def _same(a, b):
    assert [r.name for r in a] == [r.name for r in b]
    for mine, theirs in zip(a, b):
        assert mine.metrics == theirs.metrics and np.array_equal(mine.predictions, theirs.predictions)
        assert {k: v for k, v in mine.extra.items() if k != "predict_seconds"} == \
            {k: v for k, v in theirs.extra.items() if k != "predict_seconds"}


def test_without_a_helper_the_function_runs_here(digits):
    helper.stop()
    results, where = helper.run(run_image_baselines, *digits, 10, seed=0)
    assert where == "main" and len(results) == 2


def test_the_helper_fits_the_same_baselines_and_forwards_progress(started, digits):
    here_lines, there_lines = [], []
    here = run_image_baselines(*digits, 10, seed=0, progress=here_lines.append)
    there, where = helper.run(run_image_baselines, *digits, 10, seed=0, progress=there_lines.append)
    assert where == "helper"
    _same(there, here)
    untimed = lambda lines: [re.sub(r", [\d.]+s$", "", line) for line in lines]  # noqa: E731
    assert there_lines and untimed(there_lines) == untimed(here_lines)
    # Texts too, and the helper serves one call after another.
    texts = [f"{word} {i}" for i in range(60) for word in ("good movie", "bad film")]
    labels = np.array([0, 1] * 60)
    text_here = run_text_baseline(texts[:80], labels[:80], texts[80:100], labels[80:100], texts[100:], labels[100:], 2)
    text_there, where = helper.run(run_text_baseline, texts[:80], labels[:80], texts[80:100], labels[80:100],
                                   texts[100:], labels[100:], 2)
    assert where == "helper" and text_there.metrics == text_here.metrics


def test_an_error_there_is_raised_here_with_this_process_message(started, digits):
    with pytest.raises(DataError, match="at least 2 classes"):
        helper.run(run_image_baselines, *digits, 1, seed=0)
    lines = []
    with pytest.raises(DataError, match="failed after 3 lines"):
        helper.run(say_then_fail, 3, progress=lines.append)
    assert lines == ["line 0", "line 1", "line 2"]  # said by the helper, not again by the rerun here
    assert helper.running()  # the function's error, not the helper's: it serves the next call
    assert helper.run(sleep_there, 0.0) == (0.0, "helper")


def test_a_dead_helper_or_large_arguments_leave_the_work_here(started, digits, monkeypatch):
    monkeypatch.setattr(helper, "MAX_BYTES", 0)
    assert helper.run(run_image_baselines, *digits, 10, seed=0)[1] == "main"
    assert helper.running()
    monkeypatch.undo()
    helper._helper.kill()
    helper._helper.wait()
    results, where = helper.run(run_image_baselines, *digits, 10, seed=0)
    assert where == "main" and len(results) == 2


def test_the_helper_ends_when_its_pipe_closes(started):
    process = helper._helper
    assert helper.run(sleep_there, 0.0) == (0.0, "helper")  # imported and idle, waiting on its pipe
    process.stdin.close()
    assert process.wait(timeout=10) == 0  # by itself: stop() would kill it after half a second


def test_the_baselines_without_a_validation_split_import_no_torch_there(started, digits):
    train_x, train_y, _, _, test_x, test_y = digits
    none_x, none_y = train_x[:0], train_y[:0]
    results, where = helper.run(run_image_baselines, train_x, train_y, none_x, none_y, test_x, test_y, 10, seed=0)
    assert where == "helper" and "cross-validation" in results[0].extra["C_selection"]
    assert helper.run(torch_loaded) == (False, "helper")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads a process's state from /proc")
def test_the_helper_stops_mid_call_when_the_fit_is_killed(tmp_path):
    script = ("import sys; sys.path.insert(0, sys.argv[1])\n"
              "from deepstrata.baselines import helper\n"
              "from tests.baselines.helper_functions import sleep_there\n"
              "helper.start(); print(helper._helper.pid, flush=True)\n"
              "helper.run(sleep_there, 60)\n")
    fit = subprocess.Popen([sys.executable, "-c", script, str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(fit.stdout.readline())
        time.sleep(1.0)  # the call is under way: sleep_there is running in the helper
        fit.kill()
        fit.wait()
        deadline = time.monotonic() + 10
        while not _ended(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ended(pid), "the helper went on with a call for a fit that was killed"
    finally:
        fit.kill()


def _ended(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (re-parented inside a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def test_a_fit_from_the_command_line_uses_the_helper(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "deepstrata", "fit", "--data", "digits", "--epochs", "1",
                           "--width", "8", "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert {row["name"]: row["settings"].get("process") for row in rows if row["kind"] == "baseline"} == \
        {"hog_lr": "helper", "pixels_lr": "helper"}
