"""Small real text samples for the text tests: AG News rows and IMDB reviews from ../shared/data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from deepstrata.data.text import load_text


@pytest.fixture(scope="session")
def ag_news(shared_data: Path):
    """The 7,600 AG News test rows as a TextDataset (the file has no header)."""
    return load_text(shared_data / "ag-news" / "test.csv")


@pytest.fixture(scope="session")
def ag_csv(ag_news, tmp_path_factory) -> Path:
    """A 400-row CSV with a header (text, topic): the first 100 AG News rows of each class."""
    path = tmp_path_factory.mktemp("ag") / "news.csv"
    counts = {name: 0 for name in ag_news.classes}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "topic"])
        for index, (text, label) in enumerate(zip(ag_news.texts, ag_news.labels.tolist())):
            name = ag_news.classes[label]
            if counts[name] < 100:
                counts[name] += 1
                writer.writerow([index, text, name])
    return path


@pytest.fixture(scope="session")
def imdb_sample(shared_data: Path):
    """60 reviews per class of each official split, streamed from the aclImdb .tar.xz."""
    return load_text(shared_data / "imdb" / "aclImdb_labeled.tar.xz", max_per_class=60)
