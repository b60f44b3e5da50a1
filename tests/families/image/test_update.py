"""Issue 14: `deepstrata update` of an image run — new classes grow the head, old rows kept, replay never
touches the old test split, and the run replaced in place is complete and keeps what deepstrata did not write."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from deepstrata.api import fit
from deepstrata.cli import main
from deepstrata.data.images import load_images
from deepstrata.errors import ConfigError, DataError
from deepstrata.families import updating
from deepstrata.families.image import update as image_update
from deepstrata.rundir import read_marker
from deepstrata.run import load

QUICK = {"epochs": 1, "width": 8, "batch_size": 64, "quiet": True, "device": "cpu", "baselines": False}
PER_CLASS = 40


def _write_idx(folder, images: np.ndarray, labels: np.ndarray) -> str:
    """A raw IDX folder (MNIST's layout, no test pair) of 8x8 digits."""
    folder.mkdir(parents=True)
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        array = np.ascontiguousarray(array, dtype=np.uint8)
        header = struct.pack(">4B", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        (folder / name).write_bytes(header + array.tobytes())
    return str(folder)


def _digits(root, name: str, digits: list[int], offset: int = 0) -> str:
    """Up to ``PER_CLASS`` scikit-learn digits of each of ``digits`` (from ``offset`` on), labels as they are."""
    ds = load_images("digits")
    x, y = ds.x.numpy()[:, 0], ds.y.numpy()
    keep = np.sort(np.concatenate([np.flatnonzero(y == d)[offset:offset + PER_CLASS] for d in digits]))
    return _write_idx(root / name, x[keep], y[keep])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("update-data")
    return {"old": _digits(root, "old", [0, 1, 2, 3]), "new": _digits(root, "new", [2, 4, 5], offset=PER_CLASS),
            "root": root}


@pytest.fixture(scope="module")
def source(data, tmp_path_factory):
    """A CNN fitted on digits 0-3 (the run every test updates or copies)."""
    return fit(data["old"], out=tmp_path_factory.mktemp("source") / "run", **QUICK).path


def _copy(source, tmp_path, name: str = "run"):
    shutil.copytree(source, tmp_path / name)
    return tmp_path / name


def test_the_grown_head_keeps_the_old_rows_bit_for_bit_and_appends_new_classes_by_name(source, data, tmp_path,
                                                                                     monkeypatch):
    seen = {}
    real_train = image_update.train

    def spy(net, task, config, run_dir, **kwargs):  # the model as the update hands it to the one loop
        seen["fc"] = {k: v.detach().clone() for k, v in net.layers["head"].fc.state_dict().items()}
        seen["labels"] = torch.unique(task.train_y).tolist()
        return real_train(net, task, config, run_dir, **kwargs)

    monkeypatch.setattr(image_update, "train", spy)
    updated = load(source).update(data["new"], tmp_path / "new", epochs=1)
    old = load_file(str(source / "checkpoints" / "best.safetensors"))
    assert updated.classes == ["0", "1", "2", "3", "4", "5"]  # 2 matched by name; 4 and 5 appended in order
    assert seen["fc"]["weight"].shape == (6, old["layers.head.fc.weight"].shape[1])
    assert torch.equal(seen["fc"]["weight"][:4], old["layers.head.fc.weight"])
    assert torch.equal(seen["fc"]["bias"][:4], old["layers.head.fc.bias"])
    assert not torch.equal(seen["fc"]["weight"][4:], torch.zeros_like(seen["fc"]["weight"][4:]))
    assert {2, 4, 5} <= set(seen["labels"])  # the new data's 2, 4, 5 as indices of the grown class list
    info = json.loads((tmp_path / "new" / "model.json").read_text())
    assert info["spec"]["num_classes"] == 6 and info["classes"] == updated.classes
    record = info["updates"][-1]
    assert record["new_classes"] == ["4", "5"] and record["replay"] == updating.DEFAULT_REPLAY
    assert record["before"]["new_test"]["new_classes_accuracy"] == 0.0  # the run as it was cannot name 4 or 5
    assert set(record["after"]) == {"old_test", "new_test"} and record["seconds"] > 0
    # "before" on the old test split is the run's own confusion matrix: what evaluating it again gives
    assert record["before"]["old_test"]["accuracy"] == load(source).evaluate()["metrics"]["accuracy"]
    assert record["before"]["old_test"]["from"].startswith("the run's confusion.json")
    assert json.loads((source / "model.json").read_text())["classes"] == ["0", "1", "2", "3"]  # --out: untouched


def test_classes_are_matched_by_name_and_empty_ones_not_appended():
    declared = [str(d) for d in range(10)]  # an IDX folder of digits 8 and 9 names the classes 0..9
    labels = [np.array([8, 9, 9]), np.array([8])]
    assert updating.present(labels, declared) == ["8", "9"]
    classes, appended = updating.merged_classes(["0", "1", "2"], updating.present(labels, declared))
    assert classes == ["0", "1", "2", "8", "9"] and appended == ["8", "9"]
    assert updating.label_table(declared, classes)[[0, 8, 9, 5]].tolist() == [0, 3, 4, -1]


def test_grow_head_draws_new_rows_from_the_seed_without_touching_the_callers_random_state(source):
    first, second = load(source).load_model(), load(source).load_model()
    state = torch.random.get_rng_state()
    updating.grow_head(first, 7, seed=3)
    updating.grow_head(second, 7, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.layers["head"].fc.weight, second.layers["head"].fc.weight)
    assert first.spec["num_classes"] == 7 and first(torch.rand(2, 1, 8, 8)).shape == (2, 7)


def test_replay_comes_from_the_old_training_and_validation_parts_only(source, data, tmp_path, monkeypatch):
    drawn = []
    real_sample, real_parts = updating.replay_sample, updating.split_parts
    parts = []
    monkeypatch.setattr(updating, "replay_sample", lambda *a, **k: drawn.append(real_sample(*a, **k)) or drawn[-1])
    monkeypatch.setattr(updating, "split_parts", lambda *a, **k: parts.append(real_parts(*a, **k)) or parts[-1])
    record = load(source).update(data["new"], tmp_path / "new", epochs=1, replay=0.5).info["updates"][-1]
    old_parts = parts[0]  # the run's own source, split with its seed as its fit did
    assert not old_parts.official
    train, val = drawn
    assert set(train) <= set(old_parts.train) and set(val) <= set(old_parts.val)
    assert not (set(train) | set(val)) & set(old_parts.test)
    assert len(train) == record["examples"]["replay_train"] and 0 < len(train) < len(old_parts.train)
    assert record["examples"]["old_test"] == len(old_parts.test) and record["replay"] == 0.5
    own = json.loads((source / "comparison.json").read_text())["split"]
    assert own["test"] == len(old_parts.test) and own["train"] == len(old_parts.train)


def test_in_place_update_leaves_a_complete_ordinary_run_and_keeps_foreign_files(source, data, tmp_path):
    run_dir = _copy(source, tmp_path)
    (run_dir / "my-notes.txt").write_text("mine")
    updated = load(run_dir).update(data["new"], epochs=1, replay=0.25)
    assert updated.path == run_dir and updated.classes == ["0", "1", "2", "3", "4", "5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging copy, no retired run left
    assert (run_dir / "my-notes.txt").read_text() == "mine"
    assert read_marker(run_dir)["status"] == "finished" and not (run_dir / ".lock").exists()
    for name in ("config.yaml", "model.json", "provenance.json", "metrics.jsonl", "comparison.json",
                 "confusion.json", "report.html", "checkpoints/best.safetensors"):
        assert (run_dir / name).is_file(), name
    run = load(run_dir)
    assert run.evaluate()["split"] == "test split of the run"
    assert run.evaluate(data["new"])["examples"] == 120
    image = tmp_path / "five.png"
    Image.fromarray(load_images(data["new"]).x[0, 0].numpy()).save(image)
    assert run.predict(image)[0].label in run.classes
    assert run.features(data["new"], layer="stage1").shape[0] == 120
    assert json.loads((run_dir / "comparison.json").read_text())["update"]["new_classes"] == ["4", "5"]


def test_an_update_with_the_runs_own_data_and_no_new_classes(source, data, tmp_path):
    updated = load(source).update(data["old"], tmp_path / "same", epochs=1)
    record = updated.info["updates"][-1]
    assert updated.classes == ["0", "1", "2", "3"] and record["new_classes"] == []
    assert record["replay"] == 0 and record["examples"]["replay_train"] == 0 and record["after"]["new_test"] is None
    assert any("nothing to replay" in note for note in record["notes"])


def test_incompatible_images_are_refused_in_one_line_before_anything_is_written(source, tmp_path):
    colour = tmp_path / "colour"
    for label in ("7", "8"):
        (colour / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8) + np.array([200, 0, 0], np.uint8)).save(
                colour / label / f"{i}.png")
    with pytest.raises(DataError) as err:
        load(source).update(str(colour), tmp_path / "out")
    assert "3-channel images" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    table = tmp_path / "texts.csv"
    table.write_text("text,label\nhello,a\nworld,b\n")
    with pytest.raises(DataError, match="table"):
        load(source).update(str(table), tmp_path / "out")


def test_bad_options_are_refused(source, data, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--replay"):
        load(source).update(data["new"], tmp_path / "out", replay=1.5)
    with pytest.raises(ConfigError, match="--epochs"):
        load(source).update(data["new"], tmp_path / "out", epochs=0)
    for flags in (["--replay", "2"], ["--replay", "x"], ["--epochs", "0"]):
        with pytest.raises(SystemExit) as stop:
            main(["update", str(source), "--data", data["new"], *flags])
        assert stop.value.code == 2
    assert main(["update", str(tmp_path / "missing"), "--data", data["new"]]) == 2
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["update", "--help"])
    assert f"(default {updating.DEFAULT_REPLAY:g})" in " ".join(capsys.readouterr().out.split())
    assert not (tmp_path / "out").exists()


def test_the_cli_prints_a_summary_and_the_record(source, data, tmp_path, capsys):
    assert main(["update", str(source), "--data", data["new"], "--out", str(tmp_path / "a"), "--epochs", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "classes 4 -> 6 (new: 4, 5)" in out and f"replay {updating.DEFAULT_REPLAY:g} of the old training" in out
    assert "old test split" in out and "new test split" in out and f"run directory: {tmp_path / 'a'}" in out
    assert main(["update", str(source), "--data", data["new"], "--out", str(tmp_path / "b"), "--epochs", "1",
                 "--replay", "0", "--json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["replay"] == 0 and record["examples"]["replay_train"] == 0
