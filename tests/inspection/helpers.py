"""One small trained digits run per test session, shared by the inspection tests and the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import deepstrata


def trained_digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits CNN (width 16, 8 epochs, no baselines), trained on first use and reused after."""
    out = tmp_path_factory.getbasetemp() / "inspect-digits-run"
    if not (out / "comparison.json").is_file():
        deepstrata.fit(data="digits", epochs=8, width=16, out=out, quiet=True, baselines=False, overwrite=True,
                       device="cpu")
    return out
