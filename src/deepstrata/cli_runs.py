"""CLI verb ``runs``: a door to ``runs_table.runs`` and ``runs_index.write_index``, no logic of its own."""

from __future__ import annotations

import argparse
import json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs", help="list the run directories under a folder, side by side",
        description="One line per run directory under DIR (its direct children, and the runs inside a child "
        "folder that is not a run itself): family, data, model, epochs, lr, batch size, seed, the learned "
        "model's primary test metric, the best baseline and the margin, train seconds, status (finished, "
        "running, resumable: stopped with a checkpoint, interrupted, failed; damaged and foreign directories "
        "with a reason) and date. Reads only; --html also writes DIR/index.html.",
    )
    p.add_argument("dir", metavar="DIR", nargs="?", default="runs", help="folder of run directories (default runs/)")
    p.add_argument("--sort", metavar="METRIC", help="order by a column (test, margin, train_seconds, date, lr …) or "
                   "a test metric's name (accuracy: best first)")
    p.add_argument("--json", action="store_true", help="print a JSON list of rows")
    p.add_argument("--html", action="store_true", help="write DIR/index.html: the table (sortable), validation "
                   "curves overlaid per metric, links to each run's report; self-contained")


def runs(args: argparse.Namespace) -> int:
    if args.html:
        from deepstrata.runs_index import write_index

        print(f"index: {write_index(args.dir, sort=args.sort)}")
        return 0
    from deepstrata.runs_table import format_runs
    from deepstrata.runs_table import runs as list_runs

    rows = list_runs(args.dir, sort=args.sort)
    print(json.dumps(rows, indent=2) if args.json else format_runs(rows))
    return 0


VERBS = {"runs": runs}
