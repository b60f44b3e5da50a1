"""Bad text input: one clear line naming the file, line or column, exit status 2, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepstrata.cli import main
from deepstrata.data.text import load_text
from deepstrata.errors import DataError


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def test_missing_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "a.csv", "review,sentiment\ngood,pos\nbad,neg\n")
    with pytest.raises(DataError, match=r"a.csv: no text column 'text'; the columns are: review, sentiment; "
                                        r"name another with --text-column$"):
        load_text(path, text_column="text")
    with pytest.raises(DataError, match=r"no label column 'stars'; the columns are: review, sentiment; "
                                        r"name another with --label-column$"):
        load_text(path, label_column="stars")


def test_labels_missing_or_of_one_class(tmp_path):
    with pytest.raises(DataError, match=r"a.csv: line 3: no label in column 'label'"):
        load_text(write(tmp_path / "a.csv", "text,label\ngood,pos\nbad,\nok,neg\n"))
    with pytest.raises(DataError, match=r"every example has the label 'pos' in column 'label'; a classifier needs at least 2"):
        load_text(write(tmp_path / "b.csv", "text,label\ngood,pos\nfine,pos\n"))
    with pytest.raises(DataError, match=r"line 2: no label in column 'label'"):
        load_text(write(tmp_path / "c.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n'))


def test_non_utf8_bytes_name_the_line_and_encoding_fixes_it(tmp_path):
    path = write(tmp_path / "l.csv", "text,label\ngood,pos\n".encode() + "crème,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"l.csv: line 3: bytes .* are not valid utf-8; pass --encoding"):
        load_text(path)
    assert load_text(path, encoding="latin-1").texts == ["good", "crème"]


def test_empty_file_and_header_only(tmp_path):
    for name in ("e.csv", "e.jsonl", "e.txt"):
        with pytest.raises(DataError, match="empty file"):
            load_text(write(tmp_path / name, "  \n"))
    with pytest.raises(DataError, match=r"only a header row \(text, label\)"):
        load_text(write(tmp_path / "h.csv", "text,label\n"))


def test_wrong_number_of_fields_names_the_line(tmp_path):
    path = write(tmp_path / "w.csv", 'text,label\n"multi\nline",pos\ngood,neg\nbad,neg,extra\n')
    with pytest.raises(DataError, match=r"w.csv: line 5: expected 2 fields \(as in the header\), got 3"):
        load_text(path)
    with pytest.raises(DataError, match=r"line 2: not valid JSON"):
        load_text(write(tmp_path / "j.jsonl", '{"text": "a", "label": 1}\n{"text": \n'))
    with pytest.raises(DataError, match=r"line 1: expected '__label__<class> <text>'"):
        load_text(write(tmp_path / "f.txt", "plain line\n"))


def test_cli_reports_one_line_exit_2_and_loses_nothing(tmp_path, capsys):
    bad = write(tmp_path / "bad.csv", "text,label\ngood,pos\nbad,neg,extra\n")
    out = tmp_path / "run"
    assert main(["fit", "--data", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"deepstrata: error: {bad}: line 3: expected 2 fields (as in the header), got 3"
    assert not out.exists()
    assert main(["fit", "--data", str(write(tmp_path / "ok.csv", "review,label\na,x\nb,y\n")), "--text-column",
                 "body", "--out", str(out), "--quiet"]) == 2
    assert "the columns are: review, label" in capsys.readouterr().err
    assert main(["fit", "--data", str(bad), "--encoding", "nope", "--quiet"]) == 2
    assert "unknown codec 'nope'" in capsys.readouterr().err
    assert main(["fit", "--data", str(bad), "--model", "transformer", "--image-size", "32", "--quiet"]) == 2
    assert "--image-size applies to image data" in capsys.readouterr().err


def test_texts_that_are_all_empty_are_refused_in_every_format(tmp_path):
    with pytest.raises(DataError, match=r"e.csv: every one of the 3 texts \(column 'text'\) is empty or whitespace"):
        load_text(write(tmp_path / "e.csv", 'text,label\n"",a\n"  ",b\n" \t",a\n'))
    with pytest.raises(DataError, match=r"e.jsonl: every one of the 2 texts .* is empty"):
        load_text(write(tmp_path / "e.jsonl", '{"label": "a"}\n{"text": " ", "label": "b"}\n'))
    with pytest.raises(DataError, match=r"f.txt: every one of the 2 texts is empty"):
        load_text(write(tmp_path / "f.txt", "__label__a\n__label__b   \n"))
    for label in ("pos", "neg"):
        (tmp_path / "docs" / label).mkdir(parents=True)
        write(tmp_path / "docs" / label / "1.txt", "\n")
    with pytest.raises(DataError, match=r"docs: every one of the 2 texts is empty"):
        load_text(tmp_path / "docs")
    assert load_text(write(tmp_path / "ok.csv", 'text,label\n"",a\nfine,b\n')).notes == [
        "1 empty text(s) kept (they are classified from no tokens)"]


def test_one_class_is_refused_for_folders_fasttext_and_texts_built_in_code(tmp_path):
    import numpy as np

    from deepstrata.data.text import TextDataset, split_text

    (tmp_path / "docs" / "pos").mkdir(parents=True)
    write(tmp_path / "docs" / "pos" / "1.txt", "good")
    with pytest.raises(DataError, match=r"docs: every example has the label 'pos'; a classifier needs at least 2"):
        load_text(tmp_path / "docs")
    with pytest.raises(DataError, match=r"every example has the label 'a'"):
        load_text(write(tmp_path / "f.txt", "__label__a one\n__label__a two\n"))
    one = TextDataset(texts=["x", "y"], labels=np.array([0, 0]), classes=["a"])
    with pytest.raises(DataError, match=r"<in-memory texts>: every example has the label 'a'"):
        split_text(one, seed=0)
    blank = TextDataset(texts=["", " "], labels=np.array([0, 1]), classes=["a", "b"], source="mine")
    with pytest.raises(DataError, match=r"mine: every one of the 2 texts is empty"):
        split_text(blank, seed=0)


def test_a_cell_longer_than_pythons_csv_field_limit_is_read(tmp_path):
    import csv

    long_text = "word " * 60_000  # 300,000 characters, over csv's default limit of 131,072
    path = tmp_path / "long.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([[long_text, "a"], ["short", "b"]])
    data = load_text(path)
    assert data.texts[0] == long_text and len(data.texts[0]) > 131_072
    tsv = write(tmp_path / "long.tsv", f"text\tlabel\n{long_text}\ta\nshort\tb\n")
    assert load_text(tsv).texts[0] == long_text

    from deepstrata.data.text import read_texts

    assert read_texts(path)[0] == long_text


def test_cli_refuses_empty_texts_before_training(tmp_path, capsys):
    bad = write(tmp_path / "blank.csv", "text,label\n" + "".join(f'" ",{"ab"[i % 2]}\n' for i in range(20)))
    out = tmp_path / "run"
    assert main(["fit", "--data", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deepstrata: error: {bad}: every one of the 20 texts (column 'text') is empty or whitespace; "
                   "there is nothing to learn from"]
    assert not out.exists()
