"""``--tensorboard``: the event files, read back with TensorBoard's own reader, and a resumed run's steps."""

from __future__ import annotations

import shutil
import sys

import pytest

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the [tracking] extra, in dev

from deepstrata.cli import main
from deepstrata.engine import tracking
from deepstrata.errors import ConfigError
from tests.tracked_runs import ARGS, STEPS, runs_folder


def _events(run):
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _steps(acc, tag):
    return [event.step for event in acc.Scalars(tag)]


def test_event_files_hold_steps_epochs_comparison_and_confusion(tmp_path_factory):
    acc = _events(runs_folder(tmp_path_factory) / "finished")
    tags = acc.Tags()
    assert _steps(acc, "train/loss") == list(range(1, STEPS + 1))
    assert _steps(acc, "train/lr") == list(range(1, STEPS + 1))
    for tag in ("val/accuracy", "val/loss", "epoch/train_loss", "train/samples_per_s"):
        assert _steps(acc, tag) == [STEPS], tag
    assert acc.Scalars("train/samples_per_s")[0].value > 0
    baselines = {tag.split("/")[1] for tag in tags["scalars"] if tag.startswith("test/")}
    assert {"cnn", "hog_lr", "pixels_lr"} <= baselines
    assert "comparison/text_summary" in tags["tensors"]
    text = acc.Tensors("comparison/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| cnn | learned |" in text and "hog_lr" in text
    assert tags["images"] == ["confusion"]
    assert acc.Images("confusion")[0].width > 0


def test_a_resumed_run_appends_each_step_once(tmp_path_factory, tmp_path):
    run = tmp_path / "killed"
    shutil.copytree(runs_folder(tmp_path_factory) / "killed", run)
    assert main(["fit", *ARGS, "--no-baselines", "--out", str(run), "--resume"]) == 0
    acc = _events(run)
    assert _steps(acc, "train/loss") == list(range(1, STEPS + 1))
    assert _steps(acc, "val/accuracy") == [STEPS]


def test_a_resume_after_the_clock_stepped_back_still_reads_each_step_once(tmp_path_factory, tmp_path):
    """The reader orders event files by the stamp in their names: a stopped fit's file stamped in the
    future (a clock that stepped back, as a fresh VM's NTP sync does) must not come after the resumed one."""
    run = tmp_path / "killed"
    shutil.copytree(runs_folder(tmp_path_factory) / "killed", run)
    for path in (run / tracking.DIR).glob("*tfevents*"):
        parts = path.name.split(".")  # events.out.tfevents.<time>.<host>.<pid>.<n>
        parts[3] = str(int(parts[3]) + 86_400)  # stamped a day ahead of now
        ahead = path.rename(path.with_name(".".join(parts)))
        parts[5] = "0"  # and a second copy, as a resume killed between its flush and its deletes leaves
        shutil.copy(ahead, ahead.with_name(".".join(parts)))
    assert main(["fit", *ARGS, "--no-baselines", "--out", str(run), "--resume"]) == 0
    acc = _events(run)
    assert _steps(acc, "train/loss") == list(range(1, STEPS + 1))
    assert _steps(acc, "train/lr") == list(range(1, STEPS + 1))


def test_without_the_extra_it_says_which_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"deepstrata\[tracking\]"):
        tracking.require()
    tracking.Tracker(tmp_path, False).step(1, 0.5, 1e-3, 8)  # a tracker that is off needs nothing
    assert main(["fit", *ARGS, "--no-baselines", "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()  # refused before anything was written
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["deepstrata: error: --tensorboard needs the tensorboard package: pip install 'deepstrata[tracking]'"]


def test_overwrite_takes_the_event_files():
    from deepstrata.rundir_marker import OWNED_DIRS

    assert tracking.DIR in OWNED_DIRS
