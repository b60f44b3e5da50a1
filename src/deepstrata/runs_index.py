"""``DIR/index.html``: the runs table of a folder as one self-contained page, with overlaid curves.

The page is built from the same kit as the run report (``report_html``: stylesheet, escaping,
figures as inline PNGs), so it opens anywhere with nothing fetched; sorting by a column is a
few lines of inline JavaScript. Each run's row links to its ``report.html`` by a relative
path, so the folder can be moved or copied as a whole.

``index.html`` is deepstrata's own file in the folder, recognised by ``OWN_MARK`` (an HTML
comment at its top): an ``index.html`` without it is someone else's page and is never
replaced. The page is written atomically (``engine.checkpoint.atomic_write_bytes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepstrata.errors import RunError
from deepstrata.report_figures import series
from deepstrata.report_html import CSS, esc, figure_img, note_html, section_html
from deepstrata.runs_table import COLUMNS, cell, list_runs, sort_rows

INDEX = "index.html"
OWN_MARK = "<!-- deepstrata runs index -->"
"""The first line of every index page deepstrata writes: what lets it replace its own page and no other."""

SORT_JS = """
document.querySelectorAll("th[data-col]").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var dir = th.dataset.dir === "asc" ? "desc" : "asc";
    table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = dir;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y), c;
      if (x === "" || y === "") { c = (x === "") - (y === ""); return c; }
      c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return dir === "asc" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""
EXTRA_CSS = ("th[data-col] { cursor: pointer; } th[data-dir=asc]::after { content: ' \\25B2'; } "
             "th[data-dir=desc]::after { content: ' \\25BC'; } td.why { color: #a33; font-size: .85rem; } "
             "body { max-width: 1500px; } div.wide { overflow-x: auto; } #runs { font-size: .85rem; } "
             "#runs th, #runs td { padding: .3rem .4rem; } "
             "td.why { overflow-wrap: anywhere; } td.why:not([data-v='']) { min-width: 16rem; }")
"""The index page's additions to the report's stylesheet: sort arrows; a wider page for 18 columns, the table
scrolling inside its own box when the window is narrower still (never the whole page sideways), and a note's
long path (a resume command) wrapped instead of widening the table."""


def _table(rows: list[dict[str, Any]]) -> str:
    numeric = {"epochs", "lr", "batch_size", "seed", "test", "baseline_test", "margin", "train_seconds"}
    head = "".join(f'<th data-col="{esc(c)}"{" class=num" if c in numeric else ""}>{esc(c)}</th>' for c in COLUMNS)
    lines = []
    for row in rows:
        cells = []
        for column in COLUMNS:
            value = row.get(column)
            sort_value = "" if value is None else str(value)
            text = esc(cell(row, column))
            if column == "name" and row.get("report"):
                text = f'<a href="{esc(row["report"])}">{text}</a>'
            css = ' class="num"' if column in numeric else ""
            cells.append(f'<td{css} data-v="{esc(sort_value)}">{text}</td>')
        cells.append(f'<td class="why" data-v="{esc(row.get("note") or "")}">{esc(row.get("note") or "")}</td>')
        lines.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="wide"><table id="runs"><thead><tr>{head}<th data-col="note">note</th></tr></thead>'
            f"<tbody>{''.join(lines)}</tbody></table></div>")


def _histories(folder: Path, rows: list[dict[str, Any]]) -> dict[str, list[dict]]:
    """Each readable run's ``metrics.jsonl``; a run whose file is missing or damaged is left out of the plots."""
    from deepstrata import runfiles
    from deepstrata.errors import DeepstrataError

    found = {}
    for row in rows:
        if row["status"] in ("damaged", "foreign", "empty"):
            continue
        path = Path(row["path"]) / "metrics.jsonl"
        try:
            records = runfiles.read_jsonl(path) if path.is_file() else []
        except DeepstrataError:
            continue
        if records:
            found[row["name"]] = records
    return found


def curves_html(histories: dict[str, list[dict]]) -> str:
    """One plot per validation metric (``val_*`` in ``metrics.jsonl``), every run a line on it."""
    if not histories:
        return note_html("No run has validation curves (metrics.jsonl) yet.")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    metrics = sorted({k for records in histories.values() for rec in records for k in rec if k.startswith("val_")})
    figures = []
    for metric in metrics:
        fig = Figure(figsize=(5.2, 3.4))
        ax = fig.add_subplot(1, 1, 1)
        for name, records in histories.items():
            xs, ys = series(records, metric)
            if ys:
                ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=name)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: tick 1, not 0.945 …
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        figures.append(figure_img(fig, f"{metric} of every run by epoch"))
    return "".join(figures)


def page(folder: Path, rows: list[dict[str, Any]]) -> str:
    """The whole page as HTML text: title, the sortable table, the overlaid curves."""
    body = section_html("Runs", note_html("Click a column's header to sort by it; a run's name opens its report.")
                        + _table(rows), "runs") \
        + section_html("Validation curves", curves_html(_histories(folder, rows)), "curves")
    return (f"{OWN_MARK}\n<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>runs in {esc(folder.name or folder)}</title><style>{CSS}{EXTRA_CSS}</style></head><body>"
            f"<h1>Runs in {esc(folder)}</h1><p class=\"summary\">{len(rows)} directories</p>{body}"
            f"<script>{SORT_JS}</script></body></html>\n")


def write_index(folder: str | Path = "runs", *, sort: str | None = None) -> Path:
    """Write ``folder/index.html`` (atomically) and return its path; refuse a page deepstrata did not write."""
    from deepstrata.engine.checkpoint import atomic_write_bytes

    folder = Path(folder)
    rows = list_runs(folder)
    if sort:
        rows = sort_rows(rows, sort)
    target = folder / INDEX
    if target.exists():
        try:
            ours = target.is_file() and target.read_bytes()[:200].decode("utf-8", "replace").startswith(OWN_MARK)
        except OSError:
            ours = False
        if not ours:
            raise RunError(f"{target}: exists and was not written by deepstrata; refusing to replace it — move it "
                           "away or remove it")
    atomic_write_bytes(target, page(folder, rows).encode("utf-8"))
    return target
