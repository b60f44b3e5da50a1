"""``inspect_run`` end to end on a trained digits CNN: numbers, figures, the page, summary.json, the link."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from deepstrata.errors import ConfigError
from deepstrata.inspect import inspect_run
from deepstrata.report import write_report
from deepstrata.run import Run

SECTIONS = ("Overview", "Linear probes by depth", "Similarity between layers (linear CKA)",
            "2-D projections of each layer", "First-layer filters", "Activation maps", "Top-activating patches",
            "Activation maximisation", "Settings and timing")


@pytest.fixture(scope="module")
def inspected(digits_run):
    started = time.process_time()
    result = inspect_run(digits_run, maximize=True)
    return result, time.process_time() - started


def test_numbers_show_the_hierarchy(inspected):
    result, _ = inspected
    assert result.layers == ["stem", "stage1", "stage2", "head"]
    assert result.samples == 502 and result.probe_split == {"fit": 251, "score": 251}
    last = result.probe("stage2")
    assert last.trained > last.random + 0.1 and last.trained > result.probe("stem").trained
    model = Run(result.run).model
    assert last.dim == model.feature_dim and result.shapes["stage2"][0] == model.feature_dim
    assert 0.0 < result.chance < 0.2 and result.input_probe["dim"] == 64
    assert result.cka.shape == (4, 4) and np.allclose(np.diag(result.cka), 1.0)
    assert set(result.cka_vs_init) == set(result.layers)
    assert result.cka_vs_init["head"] < result.cka_vs_init["stem"]
    table = result.table()
    for name in result.layers:
        assert name in table
    assert "raw input (64-d)" in table


def test_figures_come_back_as_objects(inspected):
    result, _ = inspected
    expected = {"probes", "cka", "projections", "filters", "maximize"}
    expected |= {f"{kind}/{name}" for kind in ("maps", "patches") for name in ("stem", "stage1", "stage2")}
    assert expected <= set(result.figures)
    for figure in result.figures.values():
        assert figure.axes


def test_the_page_is_self_contained_and_has_every_section(inspected, digits_run):
    result, _ = inspected
    page = (digits_run / "inspect" / "report.html").read_text(encoding="utf-8")
    assert result.report_path == digits_run / "inspect" / "report.html"
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page, heading
    assert len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', page)) == len(result.figures) >= 11
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "Adam lr 0.05, 128 steps" in page
    assert "502 of 502 images of the validation + test splits" in page


def test_summary_json_has_the_promised_shape(inspected, digits_run):
    result, _ = inspected
    summary = json.loads((digits_run / "inspect" / "summary.json").read_text())
    assert summary["samples"] == 502
    assert [p["layer"] for p in summary["probes"]] == result.layers
    for probe in summary["probes"]:
        assert set(probe) >= {"layer", "dim", "trained", "random"}
        assert 0.0 <= probe["trained"] <= 1.0 and 0.0 <= probe["random"] <= 1.0
    assert summary["cka"]["layers"] == result.layers
    assert len(summary["cka"]["matrix"]) == 4 and all(len(row) == 4 for row in summary["cka"]["matrix"])
    assert summary["seconds"]["total"] > 0 and summary["settings"]["maximize"]["steps"] == 128


def test_fit_report_links_to_the_inspection(inspected, digits_run):
    page = (digits_run / "report.html").read_text(encoding="utf-8")
    assert 'href="inspect/report.html"' in page
    assert "probe (random init)" in page


def test_inspecting_digits_costs_under_a_minute_of_cpu(inspected):
    _, cpu_seconds = inspected
    assert cpu_seconds < 60, f"inspect took {cpu_seconds:.1f} s of CPU time"


def test_selected_layers_sample_size_and_no_write(digits_run, tmp_path):
    run = Run(digits_run)
    result = run.inspect(layers="stem,stage2", samples=100, tsne=False, write=False)
    assert result.layers == ["stem", "stage2"] and result.samples == 100
    assert result.report_path is None and "maps/stage1" not in result.figures
    assert result.settings["projection"]["methods"] == ["pca"]
    with pytest.raises(ConfigError, match="this model has: stem, stage1, stage2, head"):
        run.inspect(layers=["stage7"])
    with pytest.raises(ConfigError, match="--samples"):
        run.inspect(samples=3)


def test_re_rendering_the_run_report_keeps_task_sections(tmp_path):
    (tmp_path / "comparison.json").write_text(json.dumps({"task": "t", "rows": []}))
    write_report(tmp_path, extra_sections=[("Task data", "<p>kept section</p>")])
    write_report(tmp_path)
    assert "kept section" in (tmp_path / "report.html").read_text(encoding="utf-8")
