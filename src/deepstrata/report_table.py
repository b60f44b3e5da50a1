"""Reading a run's comparison: rows checked and ordered, the one-sentence verdict, the terminal table.

``comparison.json`` is read by three readers — the HTML report, ``deepstrata compare`` and
``Run.comparison()`` — and all of them must agree on what a valid comparison is, which row
is best and in what order rows come (learned first, then baselines, best first within
each). That logic lives here, free of HTML and plotting, so the terminal path imports
neither matplotlib nor the page code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from deepstrata.errors import RunError

LOWER_IS_BETTER = ("loss", "rmse", "mse", "mae", "error", "perplexity")
"""Substrings of metric names for which smaller is better; every other metric is maximised."""

_KIND_ORDER = {"learned": 0, "baseline": 1}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (accuracy, ndcg@10) or worse (loss, rmse)."""
    name = metric.lower()
    return not any(part in name for part in LOWER_IS_BETTER)


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool); else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def comparison_rows(comparison: dict[str, Any]) -> list[dict[str, Any]]:
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
    primary = primary_metric(comparison)
    sign = 1.0 if higher_is_better(primary) else -1.0

    def key(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        i, row = item
        value = finite_number(row.get("metrics", {}).get(primary))
        score = -sign * value if value is not None else math.inf
        return (_KIND_ORDER.get(str(row.get("kind")), 2), score, i)

    return [row for _, row in sorted(enumerate(rows), key=key)]


def primary_metric(comparison: dict[str, Any]) -> str:
    """The primary metric's name: as recorded, else the first metric of the first row."""
    primary = comparison.get("primary_metric")
    if primary:
        return str(primary)
    for row in comparison.get("rows", []) or []:
        if isinstance(row, dict) and isinstance(row.get("metrics"), dict) and row["metrics"]:
            return str(next(iter(row["metrics"])))
    return "accuracy"


def metric_names(comparison: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    """Union of metric names over rows, the primary metric first, then in order of appearance."""
    seen = [str(name) for row in rows for name in row.get("metrics", {})]
    primary = primary_metric(comparison)
    names = [primary] if primary in seen or not seen else []
    for name in seen:
        if name not in names:
            names.append(name)
    return names


def best_row(rows: Iterable[dict[str, Any]], metric: str) -> tuple[dict[str, Any], float] | None:
    """The row with the best value of ``metric`` among ``rows``, and that value."""
    scored = [(row, v) for row in rows if (v := finite_number(row.get("metrics", {}).get(metric))) is not None]
    if not scored:
        return None
    pick = max if higher_is_better(metric) else min
    return pick(scored, key=lambda rv: rv[1])


def comparison_summary(comparison: dict[str, Any]) -> str:
    """One sentence: how the best learned row compares with the best baseline on the primary metric.

    Differences of metrics that live in [0, 1] (accuracy, F1, nDCG) are given in points
    (hundredths), the unit papers use; anything else as a plain difference.
    """
    rows = comparison_rows(comparison)
    metric = primary_metric(comparison)
    learned = best_row((r for r in rows if r.get("kind") == "learned"), metric)
    baseline = best_row((r for r in rows if r.get("kind") == "baseline"), metric)
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


def skipped_lines(comparison: dict[str, Any]) -> list[str]:
    """One line per baseline the run left out, with the reason (``comparison.json``'s ``skipped``)."""
    skipped = comparison.get("skipped") if isinstance(comparison, dict) else None
    if not isinstance(skipped, list):
        return []
    return [f"{entry.get('name', '?')} baseline skipped: {entry.get('reason', 'no reason recorded')}"
            for entry in skipped if isinstance(entry, dict)]


def fmt_metric(value: Any) -> str:
    """A metric cell: four decimals, ``-`` when missing or not finite."""
    v = finite_number(value)
    return "-" if v is None else f"{v:.4f}"


def fmt_seconds(value: Any) -> str:
    """A seconds cell: one decimal, ``-`` when missing."""
    v = finite_number(value)
    return "-" if v is None else f"{v:.1f}"


def fmt_int(value: Any) -> str:
    """A count cell (feature dim, params, split sizes): an integer, ``-`` when missing."""
    v = finite_number(value)
    return "-" if v is None else f"{int(v)}"


def format_comparison_table(comparison: dict[str, Any]) -> str:
    """A fixed-width text table of the comparison rows, learned first, then a summary sentence.

    ``comparison`` follows the comparison.json schema; metric columns are whatever metrics
    the rows report, so the same table serves classification, ranking and regression tasks.
    """
    rows = comparison_rows(comparison)
    metrics = metric_names(comparison, rows)
    header = ["model", "kind", *metrics, "train s", "feature dim", "params"]
    body = [
        [
            str(row["name"]),
            str(row.get("kind", "-")),
            *(fmt_metric(row.get("metrics", {}).get(m)) for m in metrics),
            fmt_seconds(row.get("train_seconds")),
            fmt_int(row.get("feature_dim")),
            fmt_int(row.get("params")),
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
