"""Readers: every text form a user brings, column guessing, the official IMDB split, AG News."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

import deepstrata as ds
from deepstrata.data.text import detect_text_format, load_text, read_texts, split_text


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_with_named_columns_is_guessed(tmp_path):
    path = write(tmp_path / "r.csv", 'id,review,sentiment\n1,"Great, fun film",pos\n2,Dull,neg\n3,"Line one\nline two",pos\n')
    data = load_text(path)
    assert data.text_column == "review" and data.label_column == "sentiment"
    assert data.texts == ["Great, fun film", "Dull", "Line one\nline two"]
    assert data.classes == ["neg", "pos"] and data.labels.tolist() == [1, 0, 1]
    assert data.format == "csv" and data.test_texts is None


def test_tsv_jsonl_json_and_fasttext(tmp_path):
    tsv = load_text(write(tmp_path / "a.tsv", "text\tlabel\ngood\t1\nbad\t0\nok\t1\n"))
    assert tsv.texts == ["good", "bad", "ok"] and tsv.classes == ["0", "1"]
    lines = [{"text": "good", "label": 1}, {"text": "bad", "label": 0, "extra": [1]}]
    jsonl = load_text(write(tmp_path / "a.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n"))
    assert jsonl.texts == ["good", "bad"] and jsonl.labels.tolist() == [1, 0]
    array = load_text(write(tmp_path / "a.json", json.dumps(lines)))
    assert array.texts == jsonl.texts and array.labels.tolist() == [1, 0]
    fast = load_text(write(tmp_path / "a.txt", "__label__pos great film\n__label__neg awful\n\n__label__pos ok\n"))
    assert fast.format == "fasttext" and fast.texts == ["great film", "awful", "ok"]
    assert fast.classes == ["neg", "pos"] and fast.labels.tolist() == [1, 0, 1]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (the deepstrata[text] extra)")
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["good", "bad", "fine"], "stars": [5, 1, 4]}), path)
    data = load_text(path)
    assert data.text_column == "body" and data.label_column == "stars"
    assert data.classes == ["1", "4", "5"] and data.labels.tolist() == [2, 0, 1]


def test_several_text_columns_and_the_public_api(tmp_path):
    path = write(tmp_path / "n.csv", "title,description,category\nA,first,x\nB,second,y\n")
    data = ds.data.text_table(path, text=["title", "description"], label="category")
    assert data.texts == ["A first", "B second"] and data.text_column == "title,description"
    assert data.task == "text"


def test_unambiguous_guess_by_content_and_ambiguous_error(tmp_path):
    rows = "".join(f"a sentence long enough to be text number {i},{'xy'[i % 2]}\n" for i in range(4))
    data = load_text(write(tmp_path / "c.csv", "a,b\n" + rows))
    assert data.text_column == "a" and data.label_column == "b"
    from deepstrata.errors import DataError

    with pytest.raises(DataError, match=r"\(columns: name, city, note\); name it with --text-column"):
        load_text(write(tmp_path / "d.csv", "name,city,note\nann,rome,hi\nbob,oslo,yo\ncid,rome,hi\n"),
                  label_column="city")


def folder(root: Path, split: bool) -> Path:
    for part in (["train", "test"] if split else [""]):
        for label, texts in (("pos", ["good", "great"]), ("neg", ["bad<br />worse", "awful"])):
            target = root / part / label
            target.mkdir(parents=True)
            for i, text in enumerate(texts):
                (target / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
    (root / "train" / "unsup").mkdir(parents=True, exist_ok=True) if split else None
    if split:
        (root / "train" / "unsup" / "0_0.txt").write_text("unlabelled", encoding="utf-8")
    return root


def test_folder_per_class_without_and_with_official_split(tmp_path):
    plain = load_text(folder(tmp_path / "plain", split=False))
    assert plain.format == "folder" and plain.classes == ["neg", "pos"] and plain.test_texts is None
    assert plain.texts == ["bad\nworse", "awful", "good", "great"]
    imdb = load_text(folder(tmp_path / "aclImdb", split=True))
    assert len(imdb.texts) == 4 and len(imdb.test_texts) == 4 and "unlabelled" not in imdb.texts
    splits = split_text(imdb, seed=0)
    assert splits.test_is_official and sorted(splits.test_texts) == sorted(imdb.test_texts)
    assert len(splits.train_texts) + len(splits.val_texts) == 4


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tar.xz", "w:xz")])
def test_archive_reads_like_the_folder(tmp_path, suffix, mode):
    root = folder(tmp_path / "aclImdb", split=True)
    archive = tmp_path / f"aclImdb{suffix}"
    with tarfile.open(archive, mode) as tar:
        tar.add(root, arcname="aclImdb")
    assert detect_text_format(archive) == "folder"
    packed, unpacked = load_text(archive), load_text(root)
    assert packed.texts == unpacked.texts and packed.test_texts == unpacked.test_texts
    assert packed.labels.tolist() == unpacked.labels.tolist()


def test_imdb_archive_sample_keeps_the_official_split(imdb_sample):
    assert imdb_sample.classes == ["neg", "pos"]
    assert len(imdb_sample.texts) == 120 and len(imdb_sample.test_texts) == 120
    assert np.bincount(imdb_sample.labels).tolist() == [60, 60]
    assert np.bincount(imdb_sample.test_labels).tolist() == [60, 60]
    assert not any("<br />" in t for t in imdb_sample.texts)
    assert set(imdb_sample.texts).isdisjoint(imdb_sample.test_texts)


def test_ag_news_layout(ag_news):
    assert ag_news.classes == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(ag_news.texts) == 7600 and np.bincount(ag_news.labels).tolist() == [1900] * 4
    assert ag_news.label_column == "column1" and ag_news.text_column == "column2,column3"
    second = ag_news.texts[1]
    assert second.startswith("The Race is On: Second Private Team") and "$10 million" in second and "\\" not in second
    splits = split_text(ag_news, seed=0)
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (5472, 608, 1520)
    again = split_text(ag_news, seed=0)
    assert again.test_texts == splits.test_texts


def test_read_texts_for_predict_and_embed(tmp_path):
    assert read_texts(write(tmp_path / "t.txt", "one\r\ntwo\n\nfour\n")) == ["one", "two", "", "four"]
    assert read_texts(write(tmp_path / "t.csv", "text,label\nhi,1\nyo,0\n")) == ["hi", "yo"]


def test_unicode_and_other_encodings(tmp_path):
    data = load_text(write(tmp_path / "u.csv", "\ufefftext,label\nnaïve café 😀,a\n日本語,b\n"))
    assert data.texts == ["naïve café 😀", "日本語"] and data.text_column == "text"
    latin = load_text(write(tmp_path / "l.csv", "text,label\ncrème brûlée,a\nfaçade,b\n", "latin-1"), encoding="latin-1")
    assert latin.texts == ["crème brûlée", "façade"]
