"""Fixtures of the inspection tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import trained_digits_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    return trained_digits_run(tmp_path_factory)
