"""End to end on a slice of MovieLens 100K: fit, recommend, similar, update, resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

import deepstrata as ds
from deepstrata.cli import build_parser, main
from deepstrata.recsys_metrics import METRIC_NAMES

from .conftest import write

SMALL = ["--epochs", "2", "--width", "16", "--max-seq-len", "20", "--device", "cpu", "--quiet"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.run([sys.executable, "-m", "deepstrata", *args], capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.fixture(scope="module")
def sasrec_run(ml_slice, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ml-sasrec"
    done = cli("fit", "--data", str(ml_slice), "--task", "recommend", "--out", str(out), *SMALL, "--threads", "1")
    assert done.returncode == 0, done.stderr
    return out


def test_help_lists_the_verbs_and_flags(capsys):
    text = build_parser().format_help()
    for verb in ("recommend", "similar", "update"):
        assert verb in text
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    fit_help = capsys.readouterr().out
    for flag in ("--user-column", "--item-column", "--rating-column", "--min-rating", "--time-column", "--split"):
        assert flag in fit_help


def test_fit_writes_a_recommendation_run(sasrec_run):
    for name in ("config.yaml", "model.json", "provenance.json", "metrics.jsonl", "comparison.json", "report.html",
                 "interactions.npz", "vocab.json", "checkpoints/best.safetensors"):
        assert (sasrec_run / name).is_file(), name
    comparison = json.loads((sasrec_run / "comparison.json").read_text())
    assert comparison["task"] == "recommendation" and comparison["primary_metric"] == "ndcg@10"
    assert [row["name"] for row in comparison["rows"]] == ["sasrec", "popularity", "itemknn"]
    for row in comparison["rows"]:
        assert set(row["metrics"]) == set(METRIC_NAMES)
        assert all(0.0 <= v <= 1.0 for v in row["metrics"].values())
    assert comparison["split"]["test"] == 100 and comparison["split"]["method"] == "leave-last-out"
    info = json.loads((sasrec_run / "model.json").read_text())
    assert info["layers"] == ["item_embedding", "position_embedding", "block1", "block2", "head"]
    history = [json.loads(line) for line in (sasrec_run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and "val_ndcg@10" in history[0]
    assert "Interactions and split" in (sasrec_run / "report.html").read_text()


def test_recommend_json_excludes_what_the_user_has(sasrec_run, ml_slice, capsys):
    assert main(["recommend", str(sasrec_run), "--user", "42", "-k", "7", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"user", "items", "fallback"} and result["user"] == "42" and result["fallback"] is False
    assert len(result["items"]) == 7
    for entry in result["items"]:
        assert set(entry) == {"item", "score", "title"} and isinstance(entry["score"], float)
        assert isinstance(entry["title"], str)
    scores = [entry["score"] for entry in result["items"]]
    assert scores == sorted(scores, reverse=True)
    seen = {line.split("\t")[1] for line in ml_slice.read_text().splitlines() if line.split("\t")[0] == "42"}
    assert not seen & {entry["item"] for entry in result["items"]}


def test_unknown_user_gets_popular_items(sasrec_run, ml_slice, capsys):
    assert main(["recommend", str(sasrec_run), "--user", "no-such-user", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "user no-such-user is not in this run's log: showing the most popular items"
    result = ds.load(sasrec_run).recommend("no-such-user", 3)
    counts: dict[str, int] = {}
    for line in ml_slice.read_text().splitlines():
        item = line.split("\t")[1]
        counts[item] = counts.get(item, 0) + 1
    assert result["fallback"] is True
    assert [e["score"] for e in result["items"]] == sorted(counts.values(), reverse=True)[:3]


def test_similar(sasrec_run, capsys):
    assert main(["similar", str(sasrec_run), "--item", "50", "-k", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["item"] == "50" and result["title"] == "Star Wars (1977)"
    assert len(result["items"]) == 4 and "50" not in {e["item"] for e in result["items"]}
    assert all(-1.0 <= e["score"] <= 1.0 for e in result["items"])


def test_bad_inputs_exit_2_with_one_line(sasrec_run, tmp_path, capsys):
    cases = [
        (["fit", "--data", str(write(tmp_path / "a.csv", "person,thing\n1,2\n")), "--task", "recommend",
          "--out", str(tmp_path / "r1"), *SMALL], "no user column found (columns: person, thing)"),
        (["fit", "--data", str(write(tmp_path / "b.csv", "user,item,rating\n1,2,5\n1,3,x\n")), "--task",
          "recommend", "--min-rating", "4", "--out", str(tmp_path / "r2"), *SMALL], "line 3: rating 'x'"),
        (["fit", "--data", str(write(tmp_path / "c.csv", "user,item\n")), "--task", "recommend",
          "--out", str(tmp_path / "r3"), *SMALL], "no interactions"),
        (["similar", str(sasrec_run), "--item", "99999"], "unknown item '99999'"),
        (["recommend", str(tmp_path), "--user", "1"], "not a deepstrata run directory"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("deepstrata: error: ") and expected in err, err
    with pytest.raises(SystemExit) as exit_info:  # a bad flag value is refused while parsing, in three lines
        main(["recommend", str(sasrec_run), "--user", "1", "-k", "0"])
    assert exit_info.value.code == 2 and "-k: got 0, expected a positive integer" in capsys.readouterr().err


def test_bad_input_through_the_real_command(tmp_path):
    done = cli("fit", "--data", str(write(tmp_path / "x.csv", "user,item\n")), "--task", "recommend",
               "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "no interactions" in done.stderr


def test_mf_temporal_threshold_and_resume(ml_slice, tmp_path):
    out = tmp_path / "mf"
    args = ["fit", "--data", str(ml_slice), "--model", "mf", "--split", "temporal", "--min-rating", "4",
            "--no-baselines", "--out", str(out), "--epochs", "1", "--width", "8", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["split"]["method"] == "temporal" and [r["name"] for r in comparison["rows"]] == ["mf"]
    assert any("rating < 4" in note for note in json.loads((out / "vocab.json").read_text())["notes"])
    assert main(["fit", "--task", "recommend", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    result = ds.load(out).recommend(1, 5)
    assert result["user"] == "1" and len(result["items"]) == 5 and not result["fallback"]


def test_update_with_new_users_and_items(ml_split_files, tmp_path, capsys):
    old_data, new_csv = ml_split_files
    run_dir = tmp_path / "old"
    assert main(["fit", "--data", str(old_data), "--task", "recommend", "--no-baselines", "--out", str(run_dir),
                 *SMALL]) == 0
    old_weights = load_file(str(run_dir / "checkpoints" / "best.safetensors"))
    old_vocab = json.loads((run_dir / "vocab.json").read_text())
    assert "95" not in old_vocab["user_ids"]
    updated = tmp_path / "new"
    assert main(["update", str(run_dir), "--data", str(new_csv), "--out", str(updated), "--epochs", "1",
                 "--json", "--quiet"]) == 0
    record = json.loads(capsys.readouterr().out)
    old_users = {line.split("\t")[0] for line in old_data.read_text().splitlines()}
    new_users = {line.split(",")[0] for line in new_csv.read_text().splitlines()[1:]} - old_users
    assert record["new_users"] == len(new_users) >= 10 and record["new_items"] > 0 and record["new_events"] > 0
    assert set(record["before"]) == set(METRIC_NAMES) == set(record["after"])
    vocab = json.loads((updated / "vocab.json").read_text())
    assert vocab["user_ids"][: len(old_vocab["user_ids"])] == old_vocab["user_ids"]
    assert vocab["item_ids"][: len(old_vocab["item_ids"])] == old_vocab["item_ids"]
    info = json.loads((updated / "model.json").read_text())
    assert info["spec"]["num_items"] == len(vocab["item_ids"]) and len(info["updates"]) == 1
    new_weights = load_file(str(updated / "checkpoints" / "best.safetensors"))
    assert new_weights["item_embedding.weight"].shape[0] == len(vocab["item_ids"]) + 1
    assert old_weights["item_embedding.weight"].shape[0] == len(old_vocab["item_ids"]) + 1
    assert json.loads((updated / "comparison.json").read_text())["update"]["after"] == record["after"]
    fresh = ds.load(updated).recommend("95", 5)
    assert fresh["fallback"] is False and len(fresh["items"]) == 5
    assert (run_dir / "model.json").is_file()  # --out leaves the old run as it was


def test_update_in_place_grows_mf(ml_split_files, tmp_path):
    old_data, new_csv = ml_split_files
    run = ds.fit(str(old_data), "mf", out=tmp_path / "mf", epochs=1, width=8, device="cpu", quiet=True,
                 baselines=False)
    before_users = np.asarray(json.loads((run.path / "vocab.json").read_text())["user_ids"])
    old_rows = load_file(str(run.path / "checkpoints" / "best.safetensors"))["user_embedding.weight"]
    same = run.update(new_csv, epochs=1)
    assert same.path == run.path
    assert not any(p.name.startswith(".mf") for p in tmp_path.iterdir())
    weights = load_file(str(same.path / "checkpoints" / "best.safetensors"))
    assert weights["user_embedding.weight"].shape[0] == len(before_users) + same.comparison()["update"]["new_users"]
    assert weights["user_embedding.weight"].shape[0] > old_rows.shape[0]
    assert same.recommend("100", 3)["fallback"] is False
    assert same.comparison()["update"]["new_users"] >= 10


def test_evaluate_repeats_the_test_metrics(sasrec_run, capsys):
    comparison = json.loads((sasrec_run / "comparison.json").read_text())
    result = ds.load(sasrec_run).evaluate()
    assert result["metrics"] == comparison["rows"][0]["metrics"] and result["examples"] == 100
    assert main(["evaluate", str(sasrec_run), "--data", "elsewhere.csv"]) == 2
    assert "evaluated on its own log" in capsys.readouterr().err
