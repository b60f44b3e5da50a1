"""Inspection of the other families end to end: a text Transformer on AG News rows, SASRec on MovieLens users."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import deepstrata
from deepstrata.errors import ConfigError
from deepstrata.inspect import inspect_run


@pytest.fixture(scope="module")
def text_run(shared_data: Path, tmp_path_factory) -> Path:
    from deepstrata.data.text import load_text

    news = load_text(shared_data / "ag-news" / "test.csv")
    folder = tmp_path_factory.mktemp("inspect-text")
    counts = {name: 0 for name in news.classes}
    with (folder / "news.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "topic"])
        for text, label in zip(news.texts, news.labels.tolist()):
            if counts[news.classes[label]] < 60:
                counts[news.classes[label]] += 1
                writer.writerow([text, news.classes[label]])
    deepstrata.fit(data=str(folder / "news.csv"), model="transformer", out=folder / "run", epochs=1, dim=32, layers=2,
                   heads=2, max_length=48, vocab_size=1000, quiet=True, baselines=False, device="cpu")
    return folder / "run"


@pytest.fixture(scope="module")
def sasrec_run(shared_data: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inspect-rec")
    source = shared_data / "movielens-100k"
    lines = [line for line in (source / "u.data").read_text().splitlines() if int(line.split("\t")[0]) <= 80]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    (folder / "u.item").write_bytes((source / "u.item").read_bytes())
    deepstrata.fit(data=str(folder / "u.data"), model="sasrec", task="recommend", out=folder / "run", epochs=1,
                   quiet=True, baselines=False, device="cpu")
    return folder / "run"


def test_text_run_probes_attention_and_nearest_tokens(text_run):
    result = inspect_run(text_run, samples=200, tsne=False)
    assert result.layers == ["embed", "block1", "block2", "head"]
    assert [p.layer for p in result.probes] == result.layers and result.probe("block2").dim == 32
    assert result.shapes["block1"][-1] == 32 and result.cka.shape == (4, 4)
    assert "attention" in result.figures and "projections" in result.figures
    (table,) = result.tables
    assert table.columns == ["embed", "block1", "block2"] and len(table.rows) == 8
    page = result.report_path.read_text(encoding="utf-8")
    for heading in ("Linear probes by depth", "Attention maps", "Nearest tokens per layer",
                    "Similarity between layers (linear CKA)", "2-D projections of each layer"):
        assert f"<h2>{heading}</h2>" in page
    assert "Text data and tokenizer" in (text_run / "report.html").read_text(encoding="utf-8")
    assert 'href="inspect/report.html"' in (text_run / "report.html").read_text(encoding="utf-8")

    run = deepstrata.load(text_run)
    one = run.features(["Stocks fell as oil prices rose"], layer="block1")
    two = run.features(["Stocks fell as oil prices rose", "The team won the final in extra time"], layer="block1")
    assert one.shape == (1, 32)
    np.testing.assert_allclose(two[:1], one, atol=1e-5)
    with pytest.raises(ConfigError, match="this model has: embed, block1, block2, head"):
        run.features(["x"], layer="stage2")


def test_recommender_run_item_space_and_no_probes(sasrec_run):
    result = inspect_run(sasrec_run, samples=500, tsne=False)
    assert result.layers == ["item_embedding", "block1", "block2", "head"]
    assert result.probes == [] and any("position_embedding" in note for note in result.notes)
    assert result.samples == 80 and result.cka.shape == (4, 4)
    assert {t.title for t in result.tables} == {"Nearest items in the item space: trained",
                                                "Nearest items in the item space: random init"}
    assert "items" in result.figures
    page = result.report_path.read_text(encoding="utf-8")
    for heading in ("Item space: nearest neighbours", "Item space: 2-D map", "Similarity between layers (linear CKA)"):
        assert f"<h2>{heading}</h2>" in page
    assert "Interactions and split" in (sasrec_run / "report.html").read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="is a table, not one output per example"):
        inspect_run(sasrec_run, layers="position_embedding", write=False)
    run = deepstrata.load(sasrec_run)
    assert run.features(["1", "2"], layer="head").shape == (2, result.shapes["head"][-1])
