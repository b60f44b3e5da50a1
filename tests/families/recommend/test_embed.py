"""``embed`` and ``search`` on a recommendation run: items by default, users with --rows users."""

from __future__ import annotations

import json

import numpy as np
import pytest

import deepstrata as ds
from deepstrata.cli import main
from deepstrata.embeddings import load_embeddings
from deepstrata.errors import ConfigError
from tests.tiny_runs import tiny_run


@pytest.fixture(scope="module")
def rec_run(tmp_path_factory):
    return tiny_run("recommend", tmp_path_factory)


def test_items_are_the_item_table_and_an_item_finds_itself(rec_run, tmp_path, capsys):
    out = tmp_path / "items.npy"
    assert main(["embed", str(rec_run), "--out", str(out)]) == 0
    emb = load_embeddings(out)
    run = ds.load(rec_run)
    item_ids = json.loads((rec_run / "vocab.json").read_text())["item_ids"]
    assert emb.ids == item_ids and emb.meta.rows == "items" and emb.layer == "item_embedding"
    np.testing.assert_allclose(emb.vectors, run.model.item_features().detach().numpy())
    capsys.readouterr()
    assert main(["search", str(rec_run), "--index", str(out), "--query", item_ids[3], "-k", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["results"][0]["id"] == item_ids[3] and result["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    # the rest is what `similar` ranks (it leaves the item itself out)
    assert [r["id"] for r in result["results"][1:]] == [e["item"] for e in run.similar(item_ids[3], k=4)["items"]]


def test_users_by_rows_and_layer_checks(rec_run, tmp_path):
    run = ds.load(rec_run)
    users = run.embed(rows="users")
    assert users.meta.rows == "users" and len(users) == run.info["data"]["users"] and users.labels[0] is None
    np.testing.assert_allclose(users.vectors, run.model.user_embedding.weight.detach().numpy(), atol=1e-6)
    assert run.search(users, users.ids[7], k=1)["results"][0]["id"] == users.ids[7]
    with pytest.raises(ConfigError, match="add --rows users"):
        run.embed(layer="user_embedding")
    with pytest.raises(ConfigError, match="the item table, not one vector per user"):
        run.embed(rows="users", layer="item_embedding")
    with pytest.raises(ConfigError, match="--rows: got 'movies'"):
        run.embed(rows="movies")
    assert main(["embed", str(rec_run), "--data", str(tmp_path / "other.csv"), "--out", str(tmp_path / "x.npy")]) == 2
