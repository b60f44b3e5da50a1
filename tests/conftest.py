"""Shared fixtures: the real data sets in ../shared/data (read-only; copy before changing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real public data sets that travels with the code; skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


# The suite's figures are fp32 on every machine: `--precision auto` would pick bf16 on a CPU with
# AVX512-BF16 or AMX, and tests compare numbers with plain PyTorch and between processes. Set before
# any test runs, so CLI fits in subprocesses inherit it; tests of `auto` fake the probe themselves.
os.environ["DEEPSTRATA_CPU_BF16"] = "0"
