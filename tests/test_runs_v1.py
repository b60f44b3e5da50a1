"""Run directories written by older code still load and answer every verb the same way.

``tests/fixtures/runs_v1`` holds three tiny runs (digits CNN, AG News Transformer, MovieLens
MF) and the answers of evaluate / predict / recommend / similar / features / embed on them,
all made by the code before the family redesign (tests/fixtures/make_runs_v1.py). A change
that breaks the run-directory format or a verb's result fails here.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from deepstrata.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_runs_v1 as made  # noqa: E402

EXPECTED = json.loads((FIXTURES / "runs_v1" / "expected.json").read_text())


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("v1") / "runs_v1"
    shutil.copytree(FIXTURES / "runs_v1", target)
    return target


@pytest.fixture
def root(copy, monkeypatch) -> Path:
    monkeypatch.chdir(copy)  # the runs recorded their sources relative to it
    return copy


def assert_close(got, want, where: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for index, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, f"{where}[{index}]")
    elif isinstance(want, float):
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-6), (where, got, want)
    else:
        assert got == want, (where, got, want)


@pytest.mark.parametrize("name", sorted(made.VERBS))
def test_old_run_answers_as_before(root, name):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(made.fill(made.VERBS[name])) == 0
    got = json.loads(out.getvalue())
    assert_close(got, EXPECTED[name], name)


@pytest.mark.parametrize("name", sorted(made.ARRAYS))
def test_old_run_extracts_as_before(root, tmp_path, name):
    target = tmp_path / "out.npy"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(made.fill(made.ARRAYS[name]) + ["--out", str(target)]) == 0
    assert_close(made.summary(np.load(target)), EXPECTED[name], name)
