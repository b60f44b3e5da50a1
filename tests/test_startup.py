"""``before_fit``: the baselines' helper starts only for the process that will fit the baselines."""

import pytest

from deepstrata.baselines import helper
from deepstrata.startup import before_fit


@pytest.fixture(autouse=True)
def no_helper():
    helper.stop()
    yield
    helper.stop()


@pytest.mark.parametrize("baselines, devices, rank", [(False, None, None), (None, 2, None), (None, None, "1")])
def test_no_helper_when_this_process_fits_no_baselines(baselines, devices, rank, monkeypatch):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    before_fit(baselines, devices)
    assert not helper.running()


def test_a_helper_for_a_plain_fit_and_rank_0(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    before_fit(None, 1)
    assert helper.running()
    first = helper._helper
    before_fit(True, None)  # a second fit in the same process (a learning curve) reuses it
    assert helper._helper is first


@pytest.mark.parametrize("text", ["baselines: false\n", "train:\n  devices: 2\n"])
def test_no_helper_when_the_config_file_says_so(text, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    config = tmp_path / "run.yaml"
    config.write_text(text)
    before_fit(None, None, str(config))
    assert not helper.running()


def test_a_flag_wins_over_the_config_file_and_an_unreadable_one_is_left_to_the_fit(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    config = tmp_path / "run.yaml"
    config.write_text("baselines: false\n")
    before_fit(True, None, str(config))
    assert helper.running()
    helper.stop()
    config.write_text("baselines: [unclosed\n")
    before_fit(None, None, str(config))
    assert helper.running()
    helper.stop()
    before_fit(None, None, str(tmp_path / "missing.yaml"))
    assert helper.running()
