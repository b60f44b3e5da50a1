"""The HTML report is self-contained and has every section; the terminal table reads right."""

import json
import re

import numpy as np
import pytest
import yaml

from deepstrata.errors import RunError
from deepstrata.report import (
    comparison_summary,
    format_comparison_table,
    higher_is_better,
    write_report,
)

COMPARISON = {
    "task": "image-classification",
    "data": "digits",
    "split": {"train": 1149, "val": 288, "test": 360},
    "primary_metric": "accuracy",
    "rows": [
        {"name": "hog_lr", "kind": "baseline", "metrics": {"accuracy": 0.95, "macro_f1": 0.949},
         "train_seconds": 0.6, "feature_dim": 340, "params": 3410, "settings": {"C": 0.1}},
        {"name": "pixels_lr", "kind": "baseline", "metrics": {"accuracy": 0.97, "macro_f1": 0.969},
         "train_seconds": 0.1, "feature_dim": 64, "params": 650},
        {"name": "cnn", "kind": "learned", "metrics": {"accuracy": 0.994, "macro_f1": 0.9943},
         "train_seconds": 12.3, "feature_dim": 256, "params": 123456},
    ],
}

SECTIONS = ("Overview", "Model comparison", "Training curves", "Confusion matrix", "Config", "Provenance")


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "comparison.json").write_text(json.dumps(COMPARISON))
    with open(tmp_path / "metrics.jsonl", "w") as fh:
        for epoch in range(1, 6):
            rec = {"epoch": epoch, "step": 36 * epoch, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch,
                   "val_accuracy": 0.9 + 0.015 * epoch, "val_macro_f1": 0.89 + 0.015 * epoch,
                   "lr": 0.01 * 0.5**epoch, "seconds": 2.0}
            fh.write(json.dumps(rec) + "\n")
    rng = np.random.default_rng(0)
    matrix = (np.eye(10) * 35 + rng.integers(0, 3, (10, 10))).astype(int).tolist()
    (tmp_path / "confusion.json").write_text(json.dumps({"classes": [str(i) for i in range(10)], "matrix": matrix}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "cnn", "width": 32}, "note": "<b>x</b>"}))
    (tmp_path / "provenance.json").write_text(json.dumps({"version": "0.1.0", "torch": "2.x", "seed": 0}))
    return tmp_path


def test_report_has_every_section_and_is_self_contained(run_dir):
    out = write_report(run_dir, extra_sections=[("Inspection", '<a href="inspect/report.html">layers</a>')])
    assert out == run_dir / "report.html"
    page = out.read_text(encoding="utf-8")
    for heading in (*SECTIONS, "Inspection"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count('<svg role="img"') == 4  # loss, validation metrics, learning rate; the confusion matrix
    assert '<svg role="img" aria-label="confusion matrix"' in page
    assert not re.search(r"https?://", page)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert '<a href="inspect/report.html">' in page
    assert "image-classification on digits" in page
    assert "<strong>0.9940</strong>" in page
    assert page.index(">cnn<") < page.index(">hog_lr<")
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_report_with_only_comparison_and_generic_metrics(tmp_path):
    comparison = {
        "task": "recommendation", "data": "movielens-100k", "primary_metric": "ndcg@10",
        "rows": [
            {"name": "popularity", "kind": "baseline", "metrics": {"ndcg@10": 0.1, "recall@10": 0.2}},
            {"name": "two_tower", "kind": "learned", "metrics": {"ndcg@10": 0.15, "recall@10": 0.25}},
        ],
    }
    (tmp_path / "comparison.json").write_text(json.dumps(comparison))
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"epoch": e, "train_loss": 1 / e, "val_ndcg@10": 0.1 * e}) for e in (1, 2, 3))
    )
    page = write_report(tmp_path, title="Recs & <friends>").read_text()
    for heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in page
    assert "Recs &amp; &lt;friends&gt;" in page
    assert "ndcg@10" in page and "<strong>0.1500</strong>" in page
    assert "confusion.json not found" in page


def test_report_errors_name_the_file(tmp_path):
    with pytest.raises(RunError, match="not found"):
        write_report(tmp_path / "missing")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{oops\n')
    with pytest.raises(RunError, match=r"metrics.jsonl.*line 2"):
        write_report(tmp_path)


def test_format_comparison_table():
    text = format_comparison_table(COMPARISON)
    lines = text.splitlines()
    assert lines[0].split() == ["model", "kind", "accuracy", "macro_f1", "train", "s", "feature", "dim", "params"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["cnn", "pixels_lr", "hog_lr"]
    assert lines[1].split() == ["cnn", "learned", "0.9940", "0.9943", "12.3", "256", "123456"]
    assert lines[-1] == "cnn beats the best baseline (pixels_lr) by +2.4 points of accuracy."
    assert len({len(ln) for ln in lines[:4]}) == 1


def test_summary_handles_trailing_missing_and_lower_is_better():
    worse = {"primary_metric": "accuracy", "rows": [
        {"name": "mlp", "kind": "learned", "metrics": {"accuracy": 0.9}},
        {"name": "hog_lr", "kind": "baseline", "metrics": {"accuracy": 0.95}},
    ]}
    assert comparison_summary(worse) == "mlp trails the best baseline (hog_lr) by -5.0 points of accuracy."
    only = {"primary_metric": "accuracy", "rows": [{"name": "hog_lr", "kind": "baseline", "metrics": {"accuracy": 0.95}}]}
    assert "No learned model" in format_comparison_table(only)
    rmse = {"primary_metric": "rmse", "rows": [
        {"name": "mf", "kind": "learned", "metrics": {"rmse": 0.91}},
        {"name": "mean", "kind": "baseline", "metrics": {"rmse": 1.12}},
    ]}
    assert not higher_is_better("rmse") and higher_is_better("ndcg@10")
    assert comparison_summary(rmse).startswith("mf beats the best baseline (mean)")
