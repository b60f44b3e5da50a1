"""One self-contained HTML page per run (``RUN/report.html``), assembled from the run's files.

The page must open anywhere — an e-mail attachment, an air-gapped cluster, a CI artefact —
so it has no external references at all: CSS is inline and both plots are inline SVG
(``report_svg``; drawn in milliseconds, where importing matplotlib alone took 0.6 s of
every fit on two cores). Everything read from the run directory is
escaped; only ``extra_sections`` bodies are trusted HTML from callers.

This module lays out the page and reads the run directory; the pieces it is made of live
beside it: ``report_html`` (CSS, escaping, notes, sections, embedded figures — shared with
the inspection page), ``report_table`` (the comparison rows, verdict and terminal table)
and ``report_figures`` (what the plots show; ``report_svg`` draws them). Their public names are re-exported here.

Files read from the run directory (all optional, each missing one gives a short note):
``comparison.json``, ``metrics.jsonl``, ``confusion.json``, ``config.yaml``, ``provenance.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepstrata import runfiles
from deepstrata.errors import RunError
from deepstrata.report_figures import confusion_figure, curves_figure
from deepstrata.report_html import CSS, esc, note_html, section_html
from deepstrata.report_table import (
    LOWER_IS_BETTER,
    best_row,
    comparison_rows,
    comparison_summary,
    finite_number,
    fmt_int,
    fmt_metric,
    fmt_seconds,
    format_comparison_table,
    higher_is_better,
    metric_names,
    primary_metric,
    skipped_lines,
)

__all__ = [
    "LOWER_IS_BETTER", "REPORT_NAME", "SECTIONS_NAME", "comparison_rows", "comparison_summary",
    "format_comparison_table", "higher_is_better", "skipped_lines", "write_report",
]

REPORT_NAME = "report.html"
SECTIONS_NAME = "report_sections.json"
"""The ``extra_sections`` a task gave, kept so that re-rendering the report does not drop them."""


# ---------------------------------------------------------------- reading the run directory


def _read_json(path: Path) -> Any:
    """Any JSON value; a damaged file is a ``RunError`` naming it (``runfiles``)."""
    return runfiles.read_json(path, kind=object)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return runfiles.read_jsonl(path)


def _optional(path: Path, reader: Any) -> Any:
    return reader(path) if path.is_file() else None


# ---------------------------------------------------------------- HTML sections


def _header_html(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return note_html("comparison.json not found: task, data and split are not recorded.")
    items = [("task", comparison.get("task", "-")), ("data", comparison.get("data", "-"))]
    split = comparison.get("split")
    if isinstance(split, dict) and split:
        sizes = (f"{k} {fmt_int(v)}" if finite_number(v) is not None else f"{k}: {v}" for k, v in split.items())
        items.append(("split", " · ".join(sizes)))
    items.append(("primary metric", primary_metric(comparison)))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    summary = ""
    if comparison.get("rows"):
        summary = f'<p class="summary">{esc(comparison_summary(comparison))}</p>'
    return f'<dl class="meta">{dl}</dl>{summary}'


def _comparison_html(comparison: dict[str, Any] | None) -> str:
    if not comparison or not comparison.get("rows"):
        return note_html("No comparison rows recorded.")
    rows = comparison_rows(comparison)
    metrics = metric_names(comparison, rows)
    primary = primary_metric(comparison)
    best = best_row(rows, primary)
    best_name = best[0]["name"] if best else None
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i >= 2 else f"<th>{esc(h)}</th>"
        for i, h in enumerate(["name", "kind", *metrics, "train seconds", "feature dim", "params"])
    )
    body = []
    for row in rows:
        cells = [f"<td>{esc(row['name'])}</td>", f"<td>{esc(row.get('kind', '-'))}</td>"]
        for m in metrics:
            text = esc(fmt_metric(row.get("metrics", {}).get(m)))
            if m == primary and best is not None and finite_number(row.get("metrics", {}).get(m)) == best[1]:
                text = f"<strong>{text}</strong>"
            cells.append(f'<td class="num">{text}</td>')
        cells += [
            f'<td class="num">{esc(fmt_seconds(row.get("train_seconds")))}</td>',
            f'<td class="num">{esc(fmt_int(row.get("feature_dim")))}</td>',
            f'<td class="num">{esc(fmt_int(row.get("params")))}</td>',
        ]
        kind = esc(str(row.get("kind", "")).replace(" ", "-"))
        body.append(f'<tr class="{kind}">{"".join(cells)}</tr>')
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    caption = note_html(f"Best {primary} in bold ({best_name}). Learned models first.")
    if best_name is None:
        caption = note_html(f"No row reports {primary}. Learned models first.")
    settings = [(row["name"], row["settings"]) for row in rows if row.get("settings")]
    if settings:
        items = "".join(
            f"<dt>{esc(name)}</dt><dd><code>{esc(json.dumps(s, sort_keys=True, default=str))}</code></dd>"
            for name, s in settings
        )
        table += f'<details><summary>Row settings</summary><dl class="meta">{items}</dl></details>'
    return table + caption + "".join(note_html(line) for line in skipped_lines(comparison))


def _curves_html(records: list[dict[str, Any]] | None) -> str:
    if not records:
        return note_html("metrics.jsonl not found or empty: no training curves (baselines-only run?).")
    svg = curves_figure(records)
    if svg is None:
        return note_html("metrics.jsonl holds no plottable values.")
    return svg


def _confusion_html(confusion: Any, path: Path) -> str:
    if confusion is None:
        return note_html("confusion.json not found.")
    if not isinstance(confusion, dict) or "matrix" not in confusion:
        raise runfiles.damaged(path, "expected an object with 'classes' and 'matrix'")
    matrix = confusion["matrix"]
    if not isinstance(matrix, list) or not all(isinstance(r, list) and len(r) == len(matrix) for r in matrix):
        raise runfiles.damaged(path, "'matrix' must be a square list of lists")
    classes = confusion.get("classes") or [str(i) for i in range(len(matrix))]
    if len(classes) != len(matrix):
        raise runfiles.damaged(path, f"{len(classes)} classes but the matrix is {len(matrix)}x{len(matrix)}")
    if not matrix:
        return note_html("confusion.json holds an empty matrix.")
    try:
        svg = confusion_figure([str(c) for c in classes], matrix)
    except (TypeError, ValueError):
        raise runfiles.damaged(path, "'matrix' must hold numbers only") from None
    title = confusion.get("model")
    prefix = f"<p>Model: {esc(title)}; split: {esc(confusion.get('split', 'test'))}.</p>" if title else ""
    return prefix + svg


def _config_html(text: str | None) -> str:
    if text is None:
        return note_html("config.yaml not found.")
    return f"<pre>{esc(text)}</pre>"


def _provenance_html(provenance: Any, path: Path) -> str:
    if provenance is None:
        return note_html("provenance.json not found.")
    if not isinstance(provenance, dict):
        raise runfiles.damaged(path, "expected a JSON object")
    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)

    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(text(v))}</td></tr>" for k, v in provenance.items())
    return f"<table>{rows}</table>"


def _kept_sections(run_dir: Path, given: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The task's extra sections: saved when given, so a later re-render (e.g. after inspect) keeps them."""
    path = run_dir / SECTIONS_NAME
    if given:
        _atomic_write_text(path, json.dumps([[str(h), str(b)] for h, b in given]))
        return list(given)
    saved = _optional(path, _read_json)
    if not isinstance(saved, list):
        return []
    return [(str(item[0]), str(item[1])) for item in saved if isinstance(item, list) and len(item) == 2]


def _inspect_link_html(run_dir: Path) -> str:
    """A link to ``inspect/report.html`` (written by ``deepstrata inspect``) and its probe table in brief."""
    link = f'<p><a href="inspect/{REPORT_NAME}">Open the inspection report</a>: layer-wise linear probes, CKA, ' \
           "projections and pictures of each named layer.</p>"
    try:
        summary = _optional(run_dir / "inspect" / "summary.json", _read_json) or {}
    except RunError:
        return link
    probes = [p for p in summary.get("probes", []) if isinstance(p, dict)]
    cells = "".join(
        f"<tr><td>{esc(p.get('layer'))}</td><td class=\"num\">{esc(fmt_metric(p.get('trained')))}</td>"
        f"<td class=\"num\">{esc(fmt_metric(p.get('random')))}</td></tr>" for p in probes
    )
    if not cells:
        return link
    head = '<tr><th>layer</th><th class="num">probe (trained)</th><th class="num">probe (random init)</th></tr>'
    return link + f"<table><thead>{head}</thead><tbody>{cells}</tbody></table>"


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` complete or not at all, durably (readers never see half a page).

    ``engine.checkpoint``'s writer (temp file, fsync, rename), imported here rather than at the
    top because it imports torch, which ``deepstrata compare`` must not pay for.
    """
    from deepstrata.engine.checkpoint import atomic_write_text

    atomic_write_text(path, text)


def write_report(
    run_dir: Path,
    *,
    title: str | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write ``run_dir/report.html`` from the run's files and return its path.

    Sections: overview, model comparison, training curves, confusion matrix, config,
    provenance, a link to ``inspect/report.html`` when ``deepstrata inspect`` wrote one,
    then each ``(heading, html)`` of ``extra_sections`` (the html is inserted
    as given; headings are escaped). Missing optional files give a short note instead.
    Given ``extra_sections`` are saved in ``report_sections.json``; a call without them
    reuses the saved ones, so re-rendering (as ``inspect`` does) loses nothing.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory not found: {run_dir}")
    comparison = _optional(run_dir / "comparison.json", _read_json)
    if comparison is not None and not isinstance(comparison, dict):
        raise runfiles.damaged(run_dir / "comparison.json", "expected a JSON object")
    records = _optional(run_dir / "metrics.jsonl", _read_jsonl)
    confusion = _optional(run_dir / "confusion.json", _read_json)
    config_text = _optional(run_dir / "config.yaml", runfiles.read_text)
    provenance = _optional(run_dir / "provenance.json", _read_json)
    extra_sections = _kept_sections(run_dir, extra_sections)

    if title is None:
        if comparison and comparison.get("task"):
            title = f"{comparison['task']} on {comparison.get('data', run_dir.name)}"
        else:
            title = run_dir.name
    sections = [
        section_html("Overview", _header_html(comparison), "overview"),
        section_html("Model comparison", _comparison_html(comparison), "comparison"),
        section_html("Training curves", _curves_html(records), "curves"),
        section_html("Confusion matrix", _confusion_html(confusion, run_dir / "confusion.json"), "confusion"),
        section_html("Config", _config_html(config_text), "config"),
        section_html("Provenance", _provenance_html(provenance, run_dir / "provenance.json"), "provenance"),
    ]
    if (run_dir / "inspect" / REPORT_NAME).is_file():
        sections.append(section_html("Inspection: what every layer learned", _inspect_link_html(run_dir), "inspect"))
    for i, (heading, body) in enumerate(extra_sections):
        sections.append(section_html(heading, body, f"extra-{i}"))
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<p class=\"note\">Run directory: {esc(run_dir.name)}</p>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    out = run_dir / REPORT_NAME
    _atomic_write_text(out, page)
    return out
