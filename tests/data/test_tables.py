"""The shared table pieces: one cell reader and one Parquet reader for text tables and interaction logs."""

from __future__ import annotations

import datetime as dt

import pytest

from deepstrata.data import tables
from deepstrata.errors import DataError


def test_cell_common_rules():
    assert tables.cell(None) is None and tables.cell(None, missing="") == ""
    assert tables.cell(5.0) == "5" and tables.cell(2.5) == "2.5" and tables.cell(7) == "7"
    assert tables.cell(float("nan")) == "nan" and tables.cell("é") == "é"


def test_cell_json_spelling_for_text_tables():
    assert tables.cell(True, json=True) == "true" and tables.cell(False, json=True) == "false"
    assert tables.cell(["a", "é", {"k": 1}], json=True) == '["a", "é", {"k": 1}]'
    assert tables.cell(True) == "True" and tables.cell(["a"]) == "['a']"


def test_cell_iso_times_for_logs():
    moment = dt.datetime(2020, 1, 2, 3, 4, 5)
    assert tables.cell(moment, iso_times=True) == "2020-01-02T03:04:05"
    assert tables.cell(dt.date(2020, 1, 2), iso_times=True) == "2020-01-02"
    assert tables.cell(moment) == "2020-01-02 03:04:05"


def test_read_parquet_cells_and_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user": [1, None], "score": [4.0, 3.5], "ok": [True, False]}), path)
    assert tables.read_parquet(path, install="") == (["user", "score", "ok"], [["1", "4", "True"], [None, "3.5", "False"]])
    header, rows = tables.read_parquet(path, install="", missing="", json=True)
    assert rows == [["1", "4", "true"], ["", "3.5", "false"]]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        tables.read_parquet(bad, install="")


def test_reader_takes_a_field_over_the_default_limit():
    long = "x" * 200_000
    assert list(tables.reader([f'a,"{long}"\n'])) == [["a", long]]
