"""Issue 14: `deepstrata update` of a text run — a new topic grows the head (old rows kept), the tokenizer is
kept, replay never touches the old test split, and the run replaced in place is an ordinary text run."""

from __future__ import annotations

import csv
import shutil

import pytest
import torch
from safetensors.torch import load_file

from deepstrata.api import fit
from deepstrata.cli import main
from deepstrata.errors import DataError
from deepstrata.families import updating
from deepstrata.families.text import update as text_update
from deepstrata.rundir import read_marker
from deepstrata.run import load
from tests.tiny_runs import news_csv

SMALL = {"epochs": 1, "dim": 16, "layers": 1, "heads": 2, "max_length": 32, "vocab_size": 500, "batch_size": 32,
         "quiet": True, "device": "cpu", "baselines": False}


def _table(path, rows) -> str:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "topic"])
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Old: 20 AG News rows of each of three topics; new: the fourth topic and 10 more rows of an old one."""
    with news_csv(tmp_path_factory).open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    topics = sorted({row[2] for row in rows})
    kept, added = topics[:3], topics[3]
    old = [r for t in kept for r in [row for row in rows if row[2] == t][:20]]
    new = [row for row in rows if row[2] == added] + [row for row in rows if row[2] == kept[0]][20:]
    root = tmp_path_factory.mktemp("text-update")
    return {"old": _table(root / "old.csv", old), "new": _table(root / "new.csv", new), "kept": kept,
            "added": added}


@pytest.fixture(scope="module")
def source(data, tmp_path_factory):
    return fit(data["old"], out=tmp_path_factory.mktemp("text-source") / "run", **SMALL).path


def test_a_new_topic_grows_the_head_keeping_the_old_rows_and_the_tokenizer(source, data, tmp_path, monkeypatch):
    seen = {}
    real_train = text_update.train

    def spy(net, task, config, run_dir, **kwargs):
        seen["fc"] = {k: v.detach().clone() for k, v in net.layers["head"].fc.state_dict().items()}
        return real_train(net, task, config, run_dir, **kwargs)

    monkeypatch.setattr(text_update, "train", spy)
    updated = load(source).update(data["new"], tmp_path / "new", epochs=1)
    old = load_file(str(source / "checkpoints" / "best.safetensors"))
    assert updated.classes == [*data["kept"], data["added"]]
    assert torch.equal(seen["fc"]["weight"][:3], old["layers.head.fc.weight"])
    assert torch.equal(seen["fc"]["bias"][:3], old["layers.head.fc.bias"])
    assert seen["fc"]["weight"].shape[0] == 4
    assert (tmp_path / "new" / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    record = updated.info["updates"][-1]
    assert record["new_classes"] == [data["added"]] and "tokenizer is kept" in record["notes"][0]
    assert record["before"]["new_test"]["new_classes_accuracy"] == 0.0
    assert record["after"]["old_test"]["examples"] == record["examples"]["old_test"] > 0
    assert updated.evaluate(data["new"])["examples"] == 40
    assert len(updated.predict(["stocks fell sharply", "the match ended"])[0].probabilities) == 4
    assert updated.embed(["a new text"]).shape == (1, 16)


def test_replay_comes_from_the_old_training_and_validation_parts_only(source, data, tmp_path, monkeypatch):
    drawn, parts = [], []
    real_sample, real_parts = updating.replay_sample, updating.split_parts
    monkeypatch.setattr(updating, "replay_sample", lambda *a, **k: drawn.append(real_sample(*a, **k)) or drawn[-1])
    monkeypatch.setattr(updating, "split_parts", lambda *a, **k: parts.append(real_parts(*a, **k)) or parts[-1])
    record = load(source).update(data["new"], tmp_path / "new", epochs=1, replay=0.5).info["updates"][-1]
    train, val = drawn
    assert set(train) <= set(parts[0].train) and set(val) <= set(parts[0].val)
    assert not (set(train) | set(val)) & set(parts[0].test)
    assert record["examples"]["replay_train"] == len(train) == 0.5 * len(parts[0].train)


def test_in_place_update_of_a_text_run_and_an_update_with_its_own_data(source, data, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    (run_dir / "notes.md").write_text("kept")
    updated = load(run_dir).update(data["new"], epochs=1)
    assert updated.path == run_dir and len(updated.classes) == 4 and (run_dir / "notes.md").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and read_marker(run_dir)["status"] == "finished"
    assert load(run_dir).evaluate()["split"] == "test split of the run"
    same = load(source).update(data["old"], tmp_path / "same", epochs=1).info["updates"][-1]
    assert same["new_classes"] == [] and same["replay"] == 0 and same["after"]["new_test"] is None


def test_images_given_to_a_text_run_are_refused_in_one_line(source, tmp_path, capsys):
    with pytest.raises(DataError) as err:
        load(source).update("digits", tmp_path / "out")
    assert "\n" not in str(err.value) and "update --data expects labelled texts" in str(err.value)
    assert main(["update", str(source), "--data", "digits", "--out", str(tmp_path / "out")]) == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "out").exists()
