"""``embed`` and ``search`` on a text run: a table's ids and labels, a .txt's lines, layers, the Python API."""

from __future__ import annotations

import json

import numpy as np
import pytest

import deepstrata as ds
from deepstrata.cli import main
from deepstrata.embeddings import load_embeddings
from deepstrata.families.text.verbs import embed_texts
from tests.tiny_runs import TEXTS_PER_CLASS, news_csv, tiny_run

pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    return tiny_run("text", tmp_path_factory)


def test_a_table_gives_its_id_column_and_labels_and_each_text_finds_itself(text_run, tmp_path_factory, tmp_path):
    table = news_csv(tmp_path_factory)
    out = tmp_path / "news.parquet"
    assert main(["embed", str(text_run), "--data", str(table), "--out", str(out)]) == 0
    emb = load_embeddings(out)
    import csv

    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert emb.ids == [row["id"] for row in rows] and emb.labels == [row["topic"] for row in rows]
    assert len(emb) == 4 * TEXTS_PER_CLASS and emb.layer == "features" and emb.dim == 16
    run = ds.load(text_run)
    for row in rows[::10]:
        results = run.search(emb, row["text"], k=3)["results"]
        assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)
        assert row["id"] in [r["id"] for r in results if r["score"] > 1 - 1e-5]  # itself (or an identical text)


def test_a_txt_gives_line_numbers_and_no_labels_in_npy(text_run, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("Stocks fell on Wall Street\n\nThe striker scored twice\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["embed", str(text_run), "--data", str(texts), "--out", str(tmp_path / "t.npy")]) == 0
    assert "3 x 16 vectors of layer features" in capsys.readouterr().out
    emb = load_embeddings(tmp_path / "t.npy")
    assert emb.ids == ["1", "2", "3"] and emb.labels == [None, None, None]
    np.testing.assert_allclose(emb.vectors, embed_texts(ds.load(text_run), texts.read_text().splitlines()), atol=1e-5)
    assert main(["search", str(text_run), "--index", str(tmp_path / "t.npy"), "--query", "The striker scored twice",
                 "-k", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"] == "The striker scored twice" and result["results"][0]["id"] == "3"


def test_layer_and_the_list_form_of_the_python_api(text_run, tmp_path):
    run = ds.load(text_run)
    pooled = run.embed(["Stocks rallied", "Goal"])  # a list of texts: the matrix, as before
    assert isinstance(pooled, np.ndarray) and pooled.shape == (2, 16)
    np.testing.assert_array_equal(pooled, embed_texts(run, ["Stocks rallied", "Goal"]))
    embed_layer = run.embed(["Stocks rallied", "Goal"], layer="embed")
    assert embed_layer.shape == (2, 16) and not np.allclose(embed_layer, pooled)
    texts = tmp_path / "t.txt"
    texts.write_text("Stocks rallied\nGoal\n", encoding="utf-8")
    emb = run.embed(str(texts), layer="embed")
    assert emb.layer == "embed" and emb.ids == ["1", "2"]
    np.testing.assert_allclose(emb.vectors, embed_layer, atol=1e-5)
    result = run.search(emb, "Goal", k=1)
    assert result == {"query": "Goal", "results": [{"id": "2", "label": None, "score": pytest.approx(1.0, abs=1e-5)}]}
