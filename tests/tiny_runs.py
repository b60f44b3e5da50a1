"""Three tiny finished runs (digits CNN, AG News Transformer, MovieLens MF), built once per test session.

The tests of damaged run files and of verbs used on the wrong run copy them before changing
anything; the originals stay as fit wrote them. Each fit takes a few seconds on 2 cores.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from deepstrata.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TEXTS_PER_CLASS = 30
_BUILT: dict[str, Path] = {}


def _root(tmp_path_factory) -> Path:
    if "root" not in _BUILT:
        _BUILT["root"] = tmp_path_factory.mktemp("tiny-runs")
    return _BUILT["root"]


def news_csv(tmp_path_factory) -> Path:
    """120 AG News rows (30 per class) with a header: id, text, topic."""
    path = _root(tmp_path_factory) / "news.csv"
    if not path.is_file():
        from deepstrata.data.text import load_text

        news = load_text(SHARED / "ag-news" / "test.csv")
        counts = {name: 0 for name in news.classes}
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "topic"])
            for index, (text, label) in enumerate(zip(news.texts, news.labels.tolist())):
                if counts[news.classes[label]] < TEXTS_PER_CLASS:
                    counts[news.classes[label]] += 1
                    writer.writerow([index, text, news.classes[label]])
    return path


def ratings(tmp_path_factory) -> Path:
    """MovieLens 100K users 1-40 as ``u.data``."""
    path = _root(tmp_path_factory) / "ml" / "u.data"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [line for line in (SHARED / "movielens-100k" / "u.data").read_text().splitlines()
                 if int(line.split("\t")[0]) <= 40]
        path.write_text("\n".join(lines) + "\n")
    return path


def tiny_run(kind: str, tmp_path_factory) -> Path:
    """The finished run of ``kind`` (``image``, ``text`` or ``recommend``); fitted on first use."""
    if kind in _BUILT:
        return _BUILT[kind]
    out = _root(tmp_path_factory) / kind
    common = ["--epochs", "1", "--device", "cpu", "--quiet", "--no-baselines", "--out", str(out)]
    if kind == "image":
        args = ["fit", "--data", "digits", "--width", "8", "--batch-size", "64", *common]
    elif kind == "text":
        args = ["fit", "--data", str(news_csv(tmp_path_factory)), "--dim", "16", "--layers", "1", "--heads", "2",
                "--max-length", "32", "--vocab-size", "500", "--batch-size", "32", *common]
    else:
        args = ["fit", "--data", str(ratings(tmp_path_factory)), "--task", "recommend", "--model", "mf",
                "--width", "8", *common]
    assert main(args) == 0, kind
    _BUILT[kind] = out
    return out


def copy_run(kind: str, tmp_path_factory, dest: Path) -> Path:
    """A copy of the tiny run of ``kind`` at ``dest`` to damage."""
    shutil.copytree(tiny_run(kind, tmp_path_factory), dest)
    return dest
