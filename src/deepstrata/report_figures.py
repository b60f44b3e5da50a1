"""The run report's two plots: training curves from ``metrics.jsonl`` and the confusion-matrix heat map.

Drawing is kept apart from the page so that the page code stays about layout and the
plotting about what each figure shows. Both are inline SVG from ``report_svg`` (no
matplotlib: a fit writes its report at the end of every run, and matplotlib's import alone
takes 0.6 s on two cores).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from deepstrata.report_svg import heat_map, line_chart
from deepstrata.report_table import finite_number


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(x, y) of the records that hold a finite number under ``key``; x is epoch, else step, else index."""
    xs, ys = [], []
    for i, rec in enumerate(records):
        y = finite_number(rec.get(key))
        if y is None:
            continue
        x = finite_number(rec.get("epoch"))
        if x is None:
            x = finite_number(rec.get("step"))
        xs.append(x if x is not None else float(i))
        ys.append(y)
    return xs, ys


def curves_figure(records: Sequence[dict[str, Any]]) -> str | None:
    """Loss (train and val), every other val_* metric, and the learning rate, side by side (SVG markup)."""
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
    panels = [(t, [k for k in ks if series(records, k)[1]]) for t, ks in panels]
    panels = [(t, ks) for t, ks in panels if ks]
    if not panels:
        return None
    xlabel = "epoch" if "epoch" in keys else ("step" if "step" in keys else "record")
    charts = []
    for title, ks in panels:
        lines = [(k, *series(records, k)) for k in ks]
        ys = [y for _, _, values in lines for y in values]
        log_y = title == "learning rate" and min(ys) > 0 and max(ys) / min(ys) > 10
        charts.append(line_chart(title, lines, xlabel, log_y=log_y, legend=len(ks) > 1 or title != "learning rate"))
    return f'<div class="charts">{"".join(charts)}</div>'


def confusion_figure(classes: Sequence[str], matrix: Sequence[Sequence[float]]) -> str:
    """Heat map coloured by row-normalised rate (so rare classes show), annotated with counts (SVG markup).

    Raises ``ValueError`` or ``TypeError`` when a cell is not a number.
    """
    counts = [[float(value) for value in row] for row in matrix]
    if not all(math.isfinite(value) for row in counts for value in row):
        raise ValueError("the matrix holds a value that is not a finite number")
    totals = [sum(row) for row in counts]
    rates = [[value / total if total > 0 else 0.0 for value in row] for row, total in zip(counts, totals)]
    return heat_map(classes, counts, rates, xlabel="predicted", ylabel="true", scale_label="fraction of true class")
