"""One self-contained HTML page per run, and the plain-text comparison table for the terminal.

The page must open anywhere — an e-mail attachment, an air-gapped cluster, a CI artefact —
so it has no external references at all: CSS is inline and every plot is a PNG drawn with
matplotlib's Agg canvas and embedded as base64. Everything read from the run directory is
escaped with ``html.escape``; only ``extra_sections`` bodies are trusted HTML from callers.

Files read from the run directory (all optional, each missing one gives a short note):
``comparison.json``, ``metrics.jsonl``, ``confusion.json``, ``config.yaml``, ``provenance.json``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from deepstrata import runfiles
from deepstrata.errors import RunError

REPORT_NAME = "report.html"
SECTIONS_NAME = "report_sections.json"
"""The ``extra_sections`` a task gave, kept so that re-rendering the report does not drop them."""

LOWER_IS_BETTER = ("loss", "rmse", "mse", "mae", "error", "perplexity")
"""Substrings of metric names for which smaller is better; every other metric is maximised."""

_KIND_ORDER = {"learned": 0, "baseline": 1}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #e5e5e5; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.learned td:first-child { border-left: 3px solid #3b6fb6; }
tr.baseline td:first-child { border-left: 3px solid #bbb; }
pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .85rem; }
img { max-width: 100%; height: auto; }
.note { color: #666; font-style: italic; }
.summary { font-size: 1.05rem; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .15rem 1rem; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
"""


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (accuracy, ndcg@10) or worse (loss, rmse)."""
    name = metric.lower()
    return not any(part in name for part in LOWER_IS_BETTER)


# ---------------------------------------------------------------- comparison helpers


def _rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """Validated rows of a comparison dict, learned first, then baselines, best first within each."""
    if not isinstance(comparison, dict):
        raise RunError(f"comparison: expected a JSON object, got {type(comparison).__name__}")
    rows = comparison.get("rows", [])
    if not isinstance(rows, list):
        raise RunError("comparison: 'rows' must be a list")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "name" not in row:
            raise RunError(f"comparison: row {i} must be an object with a 'name'")
        if not isinstance(row.get("metrics", {}), dict):
            raise RunError(f"comparison: row {i} ('{row['name']}') has 'metrics' that is not an object")
    primary = _primary(comparison)
    sign = 1.0 if higher_is_better(primary) else -1.0

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        i, row = item
        value = _number(row.get("metrics", {}).get(primary))
        score = -sign * value if value is not None else math.inf
        return (_KIND_ORDER.get(str(row.get("kind")), 2), score, i)

    return [row for _, row in sorted(enumerate(rows), key=key)]


def _primary(comparison: dict[str, Any]) -> str:
    """The primary metric's name: as recorded, else the first metric of the first row."""
    primary = comparison.get("primary_metric")
    if primary:
        return str(primary)
    for row in comparison.get("rows", []) or []:
        if isinstance(row, dict) and isinstance(row.get("metrics"), dict) and row["metrics"]:
            return str(next(iter(row["metrics"])))
    return "accuracy"


def _metric_names(comparison: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Union of metric names over rows, the primary metric first, then in order of appearance."""
    seen = [str(name) for row in rows for name in row.get("metrics", {})]
    primary = _primary(comparison)
    names = [primary] if primary in seen or not seen else []
    for name in seen:
        if name not in names:
            names.append(name)
    return names


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _best(rows: Iterable[dict[str, Any]], metric: str) -> tuple[dict[str, Any], float] | None:
    """The row with the best value of ``metric`` among ``rows``, and that value."""
    scored = [(row, v) for row in rows if (v := _number(row.get("metrics", {}).get(metric))) is not None]
    if not scored:
        return None
    pick = max if higher_is_better(metric) else min
    return pick(scored, key=lambda rv: rv[1])


def comparison_summary(comparison: dict[str, Any]) -> str:
    """One sentence: how the best learned row compares with the best baseline on the primary metric.

    Differences of metrics that live in [0, 1] (accuracy, F1, nDCG) are given in points
    (hundredths), the unit papers use; anything else as a plain difference.
    """
    rows = _rows(comparison)
    metric = _primary(comparison)
    learned = _best((r for r in rows if r.get("kind") == "learned"), metric)
    baseline = _best((r for r in rows if r.get("kind") == "baseline"), metric)
    if learned is None and baseline is None:
        return f"No row reports {metric}."
    if learned is None:
        b_row, b_val = baseline
        return f"No learned model reports {metric}; the best baseline is {b_row['name']} ({b_val:.4g})."
    if baseline is None:
        return f"No baseline reports {metric}; {learned[0]['name']} scores {learned[1]:.4g}."
    (l_row, l_val), (b_row, b_val) = learned, baseline
    delta = l_val - b_val
    if higher_is_better(metric) and 0.0 <= l_val <= 1.0 and 0.0 <= b_val <= 1.0:
        amount = f"{100 * delta:+.1f} points of {metric}"
        tied = round(100 * delta, 1) == 0.0
    else:
        amount = f"{delta:+.4g} {metric}"
        tied = delta == 0.0
    if tied:
        return f"{l_row['name']} matches the best baseline ({b_row['name']}) on {metric} ({amount})."
    better = (delta > 0) == higher_is_better(metric)
    verb = "beats" if better else "trails"
    return f"{l_row['name']} {verb} the best baseline ({b_row['name']}) by {amount}."


def _fmt_metric(value: Any) -> str:
    v = _number(value)
    return "-" if v is None else f"{v:.4f}"


def _fmt_seconds(value: Any) -> str:
    v = _number(value)
    return "-" if v is None else f"{v:.1f}"


def _fmt_int(value: Any) -> str:
    v = _number(value)
    return "-" if v is None else f"{int(v)}"


def format_comparison_table(comparison: dict[str, Any]) -> str:
    """A fixed-width text table of the comparison rows, learned first, then a summary sentence.

    ``comparison`` follows the comparison.json schema; metric columns are whatever metrics
    the rows report, so the same table serves classification, ranking and regression tasks.
    """
    rows = _rows(comparison)
    metrics = _metric_names(comparison, rows)
    header = ["model", "kind", *metrics, "train s", "feature dim", "params"]
    body = [
        [
            str(row["name"]),
            str(row.get("kind", "-")),
            *(_fmt_metric(row.get("metrics", {}).get(m)) for m in metrics),
            _fmt_seconds(row.get("train_seconds")),
            _fmt_int(row.get("feature_dim")),
            _fmt_int(row.get("params")),
        ]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    left = 2

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(parts).rstrip()

    lines = [line(header), *(line(r) for r in body)]
    if not body:
        lines.append("(no rows)")
    lines.append(comparison_summary(comparison))
    lines += skipped_lines(comparison)
    return "\n".join(lines)


# ---------------------------------------------------------------- reading the run directory


def _read_json(path: Path) -> Any:
    """Any JSON value; a damaged file is a ``RunError`` naming it (``runfiles``)."""
    return runfiles.read_json(path, kind=object)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return runfiles.read_jsonl(path)


def _optional(path: Path, reader: Any) -> Any:
    return reader(path) if path.is_file() else None


# ---------------------------------------------------------------- plots


def _png(fig: Any, alt: str) -> str:
    """Render a matplotlib Figure to an <img> tag with a base64 PNG (no metadata, so no URLs)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(x, y) of the records that hold a finite number under ``key``; x is epoch, else step, else index."""
    xs, ys = [], []
    for i, rec in enumerate(records):
        y = _number(rec.get(key))
        if y is None:
            continue
        x = _number(rec.get("epoch"))
        if x is None:
            x = _number(rec.get("step"))
        xs.append(x if x is not None else float(i))
        ys.append(y)
    return xs, ys


def _curves_figure(records: Sequence[dict[str, Any]]) -> Any | None:
    """Loss (train and val), every other val_* metric, and the learning rate, side by side."""
    from matplotlib.figure import Figure

    keys = {k for rec in records for k in rec}
    val_metrics = sorted(k for k in keys if k.startswith("val_") and k != "val_loss")
    panels: list[tuple[str, list[str]]] = []
    losses = [k for k in ("train_loss", "val_loss") if k in keys]
    if losses:
        panels.append(("loss", losses))
    if val_metrics:
        panels.append(("validation metrics", val_metrics))
    if "lr" in keys:
        panels.append(("learning rate", ["lr"]))
    panels = [(t, [k for k in ks if _series(records, k)[1]]) for t, ks in panels]
    panels = [(t, ks) for t, ks in panels if ks]
    if not panels:
        return None
    xlabel = "epoch" if "epoch" in keys else ("step" if "step" in keys else "record")
    fig = Figure(figsize=(4.2 * len(panels), 3.3))
    for i, (title, ks) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k in ks:
            xs, ys = _series(records, k)
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=k)
        if title == "learning rate":
            ys = _series(records, "lr")[1]
            if min(ys) > 0 and max(ys) / min(ys) > 10:
                ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if len(ks) > 1 or title != "learning rate":
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _confusion_figure(classes: Sequence[str], matrix: Sequence[Sequence[float]]) -> Any:
    """Heat map coloured by row-normalised rate (so rare classes show), annotated with counts."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    n = len(classes)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = min(14.0, max(4.5, 0.55 * n + 2.0))
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if n <= 40:
        labels = [str(c) for c in classes]
        long_labels = max(map(len, labels)) > 2
        ax.set_xticks(range(n), labels, fontsize=8)
        if long_labels:
            ax.tick_params(axis="x", labelrotation=45)
            for tick in ax.get_xticklabels():
                tick.set_horizontalalignment("right")
        ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = "white" if rates[i, j] > 0.5 else "#1d1d1f"
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- HTML sections


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _header_html(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return _note("comparison.json not found: task, data and split are not recorded.")
    items = [("task", comparison.get("task", "-")), ("data", comparison.get("data", "-"))]
    split = comparison.get("split")
    if isinstance(split, dict) and split:
        sizes = (f"{k} {_fmt_int(v)}" if _number(v) is not None else f"{k}: {v}" for k, v in split.items())
        items.append(("split", " · ".join(sizes)))
    items.append(("primary metric", _primary(comparison)))
    dl = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in items)
    summary = ""
    if comparison.get("rows"):
        summary = f'<p class="summary">{_esc(comparison_summary(comparison))}</p>'
    return f'<dl class="meta">{dl}</dl>{summary}'


def _comparison_html(comparison: dict[str, Any] | None) -> str:
    if not comparison or not comparison.get("rows"):
        return _note("No comparison rows recorded.")
    rows = _rows(comparison)
    metrics = _metric_names(comparison, rows)
    primary = _primary(comparison)
    best = _best(rows, primary)
    best_name = best[0]["name"] if best else None
    head = "".join(
        f'<th class="num">{_esc(h)}</th>' if i >= 2 else f"<th>{_esc(h)}</th>"
        for i, h in enumerate(["name", "kind", *metrics, "train seconds", "feature dim", "params"])
    )
    body = []
    for row in rows:
        cells = [f"<td>{_esc(row['name'])}</td>", f"<td>{_esc(row.get('kind', '-'))}</td>"]
        for m in metrics:
            text = _esc(_fmt_metric(row.get("metrics", {}).get(m)))
            if m == primary and best is not None and _number(row.get("metrics", {}).get(m)) == best[1]:
                text = f"<strong>{text}</strong>"
            cells.append(f'<td class="num">{text}</td>')
        cells += [
            f'<td class="num">{_esc(_fmt_seconds(row.get("train_seconds")))}</td>',
            f'<td class="num">{_esc(_fmt_int(row.get("feature_dim")))}</td>',
            f'<td class="num">{_esc(_fmt_int(row.get("params")))}</td>',
        ]
        kind = _esc(str(row.get("kind", "")).replace(" ", "-"))
        body.append(f'<tr class="{kind}">{"".join(cells)}</tr>')
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    caption = _note(f"Best {primary} in bold ({best_name}). Learned models first.")
    if best_name is None:
        caption = _note(f"No row reports {primary}. Learned models first.")
    settings = [(row["name"], row["settings"]) for row in rows if row.get("settings")]
    if settings:
        items = "".join(
            f"<dt>{_esc(name)}</dt><dd><code>{_esc(json.dumps(s, sort_keys=True, default=str))}</code></dd>"
            for name, s in settings
        )
        table += f'<details><summary>Row settings</summary><dl class="meta">{items}</dl></details>'
    return table + caption + "".join(_note(line) for line in skipped_lines(comparison))


def skipped_lines(comparison: dict[str, Any]) -> list[str]:
    """One line per baseline the run left out, with the reason (``comparison.json``'s ``skipped``)."""
    skipped = comparison.get("skipped") if isinstance(comparison, dict) else None
    if not isinstance(skipped, list):
        return []
    return [f"{entry.get('name', '?')} baseline skipped: {entry.get('reason', 'no reason recorded')}"
            for entry in skipped if isinstance(entry, dict)]


def _curves_html(records: list[dict[str, Any]] | None) -> str:
    if not records:
        return _note("metrics.jsonl not found or empty: no training curves (baselines-only run?).")
    fig = _curves_figure(records)
    if fig is None:
        return _note("metrics.jsonl holds no plottable values.")
    return _png(fig, "training curves")


def _confusion_html(confusion: Any, path: Path) -> str:
    if confusion is None:
        return _note("confusion.json not found.")
    if not isinstance(confusion, dict) or "matrix" not in confusion:
        raise runfiles.damaged(path, "expected an object with 'classes' and 'matrix'")
    matrix = confusion["matrix"]
    if not isinstance(matrix, list) or not all(isinstance(r, list) and len(r) == len(matrix) for r in matrix):
        raise runfiles.damaged(path, "'matrix' must be a square list of lists")
    classes = confusion.get("classes") or [str(i) for i in range(len(matrix))]
    if len(classes) != len(matrix):
        raise runfiles.damaged(path, f"{len(classes)} classes but the matrix is {len(matrix)}x{len(matrix)}")
    if not matrix:
        return _note("confusion.json holds an empty matrix.")
    try:
        fig = _confusion_figure([str(c) for c in classes], matrix)
    except (TypeError, ValueError):
        raise runfiles.damaged(path, "'matrix' must hold numbers only") from None
    title = confusion.get("model")
    prefix = f"<p>Model: {_esc(title)}; split: {_esc(confusion.get('split', 'test'))}.</p>" if title else ""
    return prefix + _png(fig, "confusion matrix")


def _config_html(text: str | None) -> str:
    if text is None:
        return _note("config.yaml not found.")
    return f"<pre>{_esc(text)}</pre>"


def _provenance_html(provenance: Any, path: Path) -> str:
    if provenance is None:
        return _note("provenance.json not found.")
    if not isinstance(provenance, dict):
        raise runfiles.damaged(path, "expected a JSON object")
    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)

    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(text(v))}</td></tr>" for k, v in provenance.items())
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
        f"<tr><td>{_esc(p.get('layer'))}</td><td class=\"num\">{_esc(_fmt_metric(p.get('trained')))}</td>"
        f"<td class=\"num\">{_esc(_fmt_metric(p.get('random')))}</td></tr>" for p in probes
    )
    if not cells:
        return link
    head = '<tr><th>layer</th><th class="num">probe (trained)</th><th class="num">probe (random init)</th></tr>'
    return link + f"<table><thead>{head}</thead><tbody>{cells}</tbody></table>"


def _section(heading: str, body: str, anchor: str) -> str:
    return f'<section id="{_esc(anchor)}"><h2>{_esc(heading)}</h2>{body}</section>'


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` complete or not at all, durably (readers never see half a page)."""
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
        _section("Overview", _header_html(comparison), "overview"),
        _section("Model comparison", _comparison_html(comparison), "comparison"),
        _section("Training curves", _curves_html(records), "curves"),
        _section("Confusion matrix", _confusion_html(confusion, run_dir / "confusion.json"), "confusion"),
        _section("Config", _config_html(config_text), "config"),
        _section("Provenance", _provenance_html(provenance, run_dir / "provenance.json"), "provenance"),
    ]
    if (run_dir / "inspect" / REPORT_NAME).is_file():
        sections.append(_section("Inspection: what every layer learned", _inspect_link_html(run_dir), "inspect"))
    for i, (heading, body) in enumerate(extra_sections):
        sections.append(_section(heading, body, f"extra-{i}"))
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n<p class=\"note\">Run directory: {_esc(run_dir.name)}</p>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    out = run_dir / REPORT_NAME
    _atomic_write_text(out, page)
    return out
