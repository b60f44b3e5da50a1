"""The run report's two plots: training curves from ``metrics.jsonl`` and the confusion-matrix heat map.

Drawing is kept apart from the page so that the page code stays about layout and the
plotting about matplotlib: figures are built on a bare ``matplotlib.figure.Figure``
(no pyplot, no global state, safe in any thread or headless job) and handed back for
``report_html.figure_img`` to embed. matplotlib is imported inside each function so that
importing the report costs nothing until a page is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def curves_figure(records: Sequence[dict[str, Any]]) -> Any | None:
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
    panels = [(t, [k for k in ks if series(records, k)[1]]) for t, ks in panels]
    panels = [(t, ks) for t, ks in panels if ks]
    if not panels:
        return None
    xlabel = "epoch" if "epoch" in keys else ("step" if "step" in keys else "record")
    fig = Figure(figsize=(4.2 * len(panels), 3.3))
    for i, (title, ks) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for k in ks:
            xs, ys = series(records, k)
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=k)
        if title == "learning rate":
            ys = series(records, "lr")[1]
            if min(ys) > 0 and max(ys) / min(ys) > 10:
                ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if len(ks) > 1 or title != "learning rate":
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(classes: Sequence[str], matrix: Sequence[Sequence[float]]) -> Any:
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
