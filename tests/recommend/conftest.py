"""Fixtures: a small synthetic log with known structure, and a slice of MovieLens 100K."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def ml_slice(shared_data: Path, tmp_path_factory) -> Path:
    """MovieLens 100K users 1-100 (about 10,000 ratings) as ``u.data``, with ``u.item`` beside it."""
    source = shared_data / "movielens-100k"
    folder = tmp_path_factory.mktemp("ml-slice")
    lines = [line for line in (source / "u.data").read_text().splitlines() if int(line.split("\t")[0]) <= 100]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    shutil.copy(source / "u.item", folder / "u.item")
    return folder / "u.data"


@pytest.fixture(scope="session")
def ml_split_files(ml_slice: Path, tmp_path_factory) -> tuple[Path, Path]:
    """The slice cut by time: the first 90% of events as ``u.data``, the last 10% as a CSV of new events.

    Users above 90 are held back entirely into the new part, so it brings new users
    (and, by time, some items nobody rated before).
    """
    rows = [line.split("\t") for line in ml_slice.read_text().splitlines()]
    rows.sort(key=lambda r: int(r[3]))
    cut = int(len(rows) * 0.9)
    old = [r for r in rows[:cut] if int(r[0]) <= 90]
    new = rows[cut:] + [r for r in rows[:cut] if int(r[0]) > 90]
    folder = tmp_path_factory.mktemp("ml-evolving")
    (folder / "u.data").write_text("".join("\t".join(r) + "\n" for r in old))
    shutil.copy(ml_slice.parent / "u.item", folder / "u.item")
    new_csv = folder / "new.csv"
    new_csv.write_text("user_id,item_id,rating,timestamp\n" + "".join(",".join(r) + "\n" for r in new))
    return folder / "u.data", new_csv
