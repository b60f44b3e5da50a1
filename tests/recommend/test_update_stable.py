"""``update``'s "before" metrics: the same for identical calls, and ``evaluate``'s for the same data.

They once varied between identical calls (0.0108, 0.0112, 0.0103): the rows grown for new
users and items were drawn from torch's unseeded global generator. They are drawn from the
run's seed now, without touching the caller's random state.
"""

from __future__ import annotations

import pytest
import torch

import deepstrata as ds


@pytest.fixture(scope="module")
def mf_run(ml_split_files, tmp_path_factory):
    old_data, _ = ml_split_files
    return ds.fit(str(old_data), "mf", out=tmp_path_factory.mktemp("upd") / "mf", epochs=1, width=8, device="cpu",
                  quiet=True, baselines=False)


def test_identical_updates_report_identical_before_metrics(mf_run, ml_split_files, tmp_path):
    _, new_csv = ml_split_files
    torch.manual_seed(123)
    first = mf_run.update(new_csv, out=tmp_path / "a", epochs=1).comparison()["update"]
    torch.rand(7)  # a different global random state must not matter
    second = mf_run.update(new_csv, out=tmp_path / "b", epochs=1).comparison()["update"]
    assert first["new_users"] > 0 and first["new_items"] > 0
    assert first["before"] == second["before"]
    assert first["after"] == second["after"]


def test_before_equals_evaluate_on_the_same_data(mf_run, ml_split_files, tmp_path):
    old_data, _ = ml_split_files
    record = mf_run.update(old_data, out=tmp_path / "same", epochs=1).comparison()["update"]
    assert record["new_users"] == record["new_items"] == 0
    assert record["before"] == mf_run.evaluate()["metrics"] == mf_run.comparison()["rows"][0]["metrics"]


def test_replay_is_refused_for_a_recommender_whose_update_keeps_every_interaction(mf_run, ml_split_files, tmp_path):
    from deepstrata.errors import ConfigError

    _, new_csv = ml_split_files
    with pytest.raises(ConfigError, match="^--replay: .*replay is for image and text runs$"):
        mf_run.update(new_csv, out=tmp_path / "r", epochs=1, replay=0.5)
    assert not (tmp_path / "r").exists()
