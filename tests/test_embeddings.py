"""The embedding files (``deepstrata.embeddings``) and exact cosine search (``deepstrata.vector_search``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepstrata.embeddings import EmbeddingMeta, Embeddings, load_embeddings
from deepstrata.errors import ConfigError, DataError
from deepstrata.vector_search import cosine_top_k

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _embeddings(n: int = 7, dim: int = 5) -> Embeddings:
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    meta = EmbeddingMeta(run="/runs/a", weights="0123456789abcdef", layer="features", dim=dim, task="t")
    labels = [None if i % 3 == 0 else f"class {i % 2}" for i in range(n)]
    return Embeddings(vectors, [f"img/{i}.png" for i in range(n)], labels, meta)


def test_cosine_top_k_matches_brute_force_across_chunks():
    rng = np.random.default_rng(1)
    index = rng.normal(size=(103, 6)).astype(np.float32)
    queries = rng.normal(size=(4, 6)).astype(np.float32)
    unit = index / np.linalg.norm(index, axis=1, keepdims=True)
    expected = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    for chunk in (7, 50, 1000):
        scores, rows = cosine_top_k(index, queries, 5, chunk=chunk)
        np.testing.assert_array_equal(rows, np.argsort(-expected, axis=1)[:, :5])
        np.testing.assert_allclose(scores, np.take_along_axis(expected, rows, 1), atol=1e-5)
    scores, rows = cosine_top_k(index, index, 1, chunk=10)
    np.testing.assert_array_equal(rows[:, 0], np.arange(103))  # each row's nearest is itself
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert cosine_top_k(index[:3], queries, 10)[1].shape == (4, 3)  # k larger than the index


@pytest.mark.parametrize("suffix", [".parquet", ".npy"])
def test_ids_labels_and_metadata_round_trip(tmp_path, suffix):
    emb = _embeddings()
    path = emb.save(tmp_path / f"emb{suffix}")
    back = load_embeddings(path)
    assert back.ids == emb.ids and back.labels == emb.labels and back.meta == emb.meta
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    assert back.vectors.dtype == np.float32


def test_parquet_columns_and_file_metadata(tmp_path):
    path = _embeddings().save(tmp_path / "emb.parquet")
    table = pq.read_table(path)
    assert table.column_names == ["id", "label", "vector"]
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 5)
    meta = json.loads(table.schema.metadata[b"deepstrata"])
    assert meta["run"] == "/runs/a" and meta["layer"] == "features" and meta["dim"] == 5


def test_npy_sidecar_holds_ids_labels_and_metadata(tmp_path):
    _embeddings().save(tmp_path / "emb.npy")
    sidecar = json.loads((tmp_path / "emb.ids.json").read_text())
    assert sidecar["ids"][:2] == ["img/0.png", "img/1.png"] and sidecar["labels"][0] is None
    assert sidecar["layer"] == "features" and sidecar["dim"] == 5
    assert np.load(tmp_path / "emb.npy").shape == (7, 5)


def test_unreadable_indexes_are_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match=r"--out .*emb.csv: embeddings are written as .parquet or .npy"):
        _embeddings().save(tmp_path / "emb.csv")
    with pytest.raises(ConfigError, match="expected a .parquet or .npy"):
        load_embeddings(tmp_path / "emb.csv")
    with pytest.raises(DataError, match="no such file"):
        load_embeddings(tmp_path / "missing.parquet")
    np.save(tmp_path / "bare.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match="no bare.ids.json beside it"):
        load_embeddings(tmp_path / "bare.npy")
    pq.write_table(pa.table({"id": ["a"], "label": ["b"], "vector": [[1.0, 2.0]]}), tmp_path / "plain.parquet")
    with pytest.raises(DataError, match="no deepstrata embedding metadata"):
        load_embeddings(tmp_path / "plain.parquet")
