"""A verb used on the wrong kind of run or data says what the run is and what the verb expects.

Never a silent wrong answer: a text run's ``features`` once returned 1 x D for a 400-text
source (a file name not found was read as one text), and ``embed`` / ``predict --file``
read another column when the run's text column was missing from the file.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import deepstrata as ds
from deepstrata.cli import main
from deepstrata.errors import DataError
from tests.tiny_runs import TEXTS_PER_CLASS, news_csv, tiny_run


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture()
def other_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("id,body,topic\n1,Stocks fell as oil rose,Business\n2,The team won the final,Sports\n",
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("kind, argv, says", [
    ("recommend", ["predict", "{run}", "{tmp}/x.png"],
     ["a recommendation run (mf)", "predict expects an image or text run", "deepstrata recommend RUN --user"]),
    ("recommend", ["predict", "{run}"],  # no paths: the run is named, not "give image files"
     ["a recommendation run (mf)", "predict expects an image or text run", "deepstrata recommend RUN --user"]),
    ("image", ["recommend", "{run}", "--user", "1"],
     ["an image-classification run (cnn)", "expect a recommendation run"]),
    ("text", ["similar", "{run}", "--item", "1"], ["a text-classification run (transformer)"]),
    ("image", ["embed", "{run}", "--data", "{tmp}/t.txt", "--out", "{tmp}/e.npy"],  # every run embeds; texts no
     ["t.txt: a table", "an image-classification run (cnn)", "embed --data expects images"]),
    ("image", ["embed", "{run}", "--data", "{tmp}/t.txt", "--out", "{tmp}/e.npz", "--per-token"],
     ["an image-classification run (cnn)", "embed --per-token expects a text run"]),
    ("recommend", ["search", "{run}", "--index", "{tmp}/e.npy", "--query", "1"], ["e.npy: no such file"]),
    ("text", ["evaluate", "{run}", "--data", "digits"],
     ["digits: an image data set", "a text-classification run (transformer)", "evaluate --data expects labelled texts"]),
    ("image", ["evaluate", "{run}", "--data", "{csv}"], ["news.csv: a table", "evaluate --data expects images"]),
    ("text", ["inspect", "{run}", "--data", "{tmp}/x.png"], ["x.png: an image file", "inspect --data expects"]),
    ("text", ["features", "{run}", "--layer", "embed", "--data", "digits", "--out", "{tmp}/f.npy"],
     ["digits: an image data set", "features --data expects labelled texts"]),
    ("image", ["predict", "{run}", "stocks fell"],
     ["stocks fell: no such file or directory", "an image-classification run (cnn)", "takes image files"]),
])
def test_the_wrong_run_or_data_is_named(kind, argv, says, tmp_path_factory, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("hello\n", encoding="utf-8")
    (tmp_path / "x.png").write_bytes(b"")
    run = tiny_run(kind, tmp_path_factory)
    code, out, err = run_cli(capsys, *[a.format(run=run, tmp=tmp_path, csv=news_csv(tmp_path_factory)) for a in argv])
    line = one_line(err)
    assert code == 2 and out == "", err
    for part in says:
        assert part in line, line


def test_features_of_a_text_run_read_every_text_never_a_file_name(tmp_path_factory, tmp_path, capsys,
                                                                  monkeypatch):
    run = tiny_run("text", tmp_path_factory)
    out = tmp_path / "f.npy"
    code, printed, err = run_cli(capsys, "features", run, "--layer", "embed", "--out", out)
    assert code == 0, err
    assert np.load(out).shape == (4 * TEXTS_PER_CLASS, 16)
    monkeypatch.chdir(tmp_path)  # the run's file name, relative, is not here: refused, not read as one text
    code, _, err = run_cli(capsys, "features", run, "--layer", "embed", "--data", "news.csv", "--out", out)
    assert code == 2 and "news.csv: no such file or directory" in one_line(err)


def test_features_of_a_run_without_config_yaml_are_refused(tmp_path_factory, tmp_path, capsys):
    run = shutil.copytree(tiny_run("text", tmp_path_factory), tmp_path / "run")
    (run / "config.yaml").unlink()
    code, _, err = run_cli(capsys, "features", run, "--layer", "embed", "--out", tmp_path / "f.npy")
    line = one_line(err)
    assert code == 2 and f"{run / 'config.yaml'}: not found" in line and "data source" in line
    code, _, err = run_cli(capsys, "evaluate", run)
    assert code == 2 and "config.yaml: not found" in one_line(err)
    # What does not need the run's settings still works: the text column is in model.json.
    code, printed, err = run_cli(capsys, "predict", run, "Stocks fell")
    assert code == 0 and printed.count("\n") == 1, err


@pytest.mark.parametrize("verb", ["predict", "embed"])
def test_a_missing_text_column_is_refused_naming_both(verb, other_csv, tmp_path_factory, tmp_path, capsys):
    run = tiny_run("text", tmp_path_factory)
    argv = (["predict", run, "--file", other_csv] if verb == "predict"
            else ["embed", run, "--data", other_csv, "--out", tmp_path / "e.npy"])
    code, printed, err = run_cli(capsys, *argv)
    line = one_line(err)
    assert code == 2 and printed == ""
    assert "no column 'text', the text column this run was trained on" in line
    assert "columns found: id, body, topic" in line and "--text-column" in line
    code, printed, err = run_cli(capsys, *argv, "--text-column", "body")
    assert code == 0, err
    if verb == "predict":
        assert printed.strip().splitlines()[0].endswith("Stocks fell as oil rose")
    else:
        assert np.load(tmp_path / "e.npy").shape == (2, 16)


def test_evaluate_on_another_table_says_which_columns_it_guessed(other_csv, tmp_path_factory):
    result = ds.load(tiny_run("text", tmp_path_factory)).evaluate(str(other_csv))
    assert result["examples"] == 2
    assert "texts from column 'body', labels from 'topic' (guessed: the run read 'text' and 'topic')" in result["split"]


def test_item_embedding_features_are_one_row_per_item(tmp_path_factory, tmp_path, capsys):
    path = tiny_run("recommend", tmp_path_factory)
    run = ds.load(path)
    item_ids = json.loads((path / "vocab.json").read_text())["item_ids"]
    code, printed, err = run_cli(capsys, "features", path, "--layer", "item_embedding", "--out", tmp_path / "i.npy")
    assert code == 0, err
    values = np.load(tmp_path / "i.npy")
    assert values.shape == (len(item_ids), 8) and len(item_ids) != run.info["data"]["users"]
    np.testing.assert_allclose(values, run.model.item_features().detach().numpy())
    table, ids = run.features(None, layer="item_embedding", with_ids=True)
    assert ids == item_ids and table.shape == values.shape
    some, some_ids = run.features([item_ids[5], item_ids[0]], layer="item_embedding", with_ids=True)
    assert some_ids == [item_ids[5], item_ids[0]]
    np.testing.assert_allclose(some, values[[5, 0]])
    users, user_ids = run.features(None, layer="user_embedding", with_ids=True)
    assert len(users) == len(user_ids) == run.info["data"]["users"]
    with pytest.raises(DataError, match="unknown item 'nope'"):
        run.features(["nope"], layer="item_embedding")
