"""The few-label learning curve: transfer vs the same architecture from scratch vs the hand-engineered baseline.

``deepstrata transfer --from S --data D --curve 1,5,10,50,all`` answers the question
transfer exists for — how many labels does reusing a network save? — on the user's own
data. At each budget of labelled examples per class it fits, on the same few-label
split (``data.labels_per_class``; the test split always whole):

* ``transfer`` — the fit from S (the mode and layers asked for);
* ``scratch`` — the same architecture, randomly initialised (images: at the data's own
  size; texts: MiniLM's architecture and vocabulary at BERT's random initialisation, or a
  Transformer source's shape with its own BPE);
* ``baseline`` — the family's hand-engineered baselines, fitted beside the scratch fit
  on the same examples (the best of them on the test split is the row's figure; for texts
  TF-IDF + logistic regression — the frozen-MiniLM row is learned features, not a baseline
  of this kind).

The family says what its scratch fit and its hand-engineered baselines are
(``Family.curve_scratch``); the rest of the curve is the same for every family.

Small budgets are noisy, so budgets up to ``SMALL`` labels per class are repeated over
``seeds`` seeds (the split, the examples drawn and the initialisation all change) and
reported as mean ± std; larger ones run once. The directory ``--out`` is an ordinary run —
the transfer at the largest budget, first seed — holding ``curve.json``, a plot in its
report and the other fits under ``curve-runs/`` (deepstrata's own: ``--overwrite``
removes them with the run).

Transfer does not always win (a CNN from scratch can match frozen features on small,
aligned gray images): the curve reports what it measured, row by row.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from deepstrata.errors import ConfigError

SMALL = 10
CURVE_FILE = "curve.json"
RUNS_DIR = "curve-runs"


def parse_budgets(text: str) -> list[int | None]:
    """``"1,5,10,50,all"`` as ``[1, 5, 10, 50, None]`` (None: every label), increasing, each once."""
    budgets: list[int | None] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == "all":
            budgets.append(None)
        elif part.isdigit() and int(part) > 0:
            budgets.append(int(part))
        else:
            raise ConfigError(f"--curve: {part!r} is not a number of labels per class; expected e.g. 1,5,10,50,all")
    numbers = [b for b in budgets if b is not None]
    if numbers != sorted(set(numbers)) or budgets.count(None) > 1 or (None in budgets and budgets[-1] is not None):
        raise ConfigError(f"--curve: {text!r}; expected increasing budgets, each once, 'all' last")
    return budgets


def _label(budget: int | None) -> str:
    return "all" if budget is None else str(budget)


def _accuracies(run_dir: Path, baseline_names: tuple[str, ...] | None = None) -> tuple[float, float | None]:
    """The learned row's test accuracy, and the best baseline's among ``baseline_names`` (None: every baseline;
    the second value is None when the fit ran none)."""
    comparison = json.loads((run_dir / "comparison.json").read_text(encoding="utf-8"))
    learned = next(row for row in comparison["rows"] if row.get("kind") == "learned")
    baselines = [row["metrics"]["accuracy"] for row in comparison["rows"] if row.get("kind") == "baseline"
                 and (baseline_names is None or row.get("name") in baseline_names)]
    return learned["metrics"]["accuracy"], (max(baselines) if baselines else None)


def _summary(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,  # sample std, as BENCHMARKS.md
            "seeds": len(values), "values": [round(v, 4) for v in values]}


def learning_curve(source, data, budgets: list[int | None], *, out, seeds: int = 3, seed: int = 0,
                   overwrite: bool = False, quiet: bool = False, **fit_options):
    """Run the curve (see the module docstring); returns the ``Run`` in ``out`` with ``curve.json`` beside it."""
    from deepstrata import pipeline
    from deepstrata.engine.checkpoint import atomic_write_json
    from deepstrata.run import Run

    if out is None:
        raise ConfigError("--curve needs --out DIR (the run that holds the curve)")
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--curve-seeds: got {seeds!r}, expected a positive number of seeds")
    out = Path(out)

    def say(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr)

    largest = budgets[-1]
    say(f"curve: the run at {_label(largest)} labels per class, seed {seed} (it holds the curve)")
    main = pipeline.fit(data, transfer_from=str(source), labels_per_class=largest, seed=seed, out=out,
                        overwrite=overwrite, quiet=True, baselines=False, **fit_options)
    family = main.info["spec"]["family"]
    scratch_model, scratch_options, baseline_names = main.family.curve_scratch(fit_options, main.info["spec"])
    rows = []
    for budget in budgets:
        repeats = seeds if budget is not None and budget <= SMALL else 1
        found: dict[str, list[float]] = {"transfer": [], "scratch": [], "baseline": []}
        for k in range(repeats):
            name = f"{_label(budget)}-seed{seed + k}"
            transferred = out if (budget == largest and k == 0) else out / RUNS_DIR / f"{name}-transfer"
            if transferred != out:
                pipeline.fit(data, transfer_from=str(source), labels_per_class=budget, seed=seed + k, out=transferred,
                             overwrite=True, quiet=True, baselines=False, **fit_options)
            scratch = out / RUNS_DIR / f"{name}-scratch"
            pipeline.fit(data, model=scratch_model, labels_per_class=budget, seed=seed + k, out=scratch,
                         overwrite=True, quiet=True, baselines=True, **scratch_options)
            found["transfer"].append(_accuracies(transferred)[0])
            learned, baseline = _accuracies(scratch, baseline_names)
            found["scratch"].append(learned)
            if baseline is not None:
                found["baseline"].append(baseline)
        row = {"labels_per_class": _label(budget) if budget is None else budget,
               **{kind: _summary(values) for kind, values in found.items() if values}}
        rows.append(row)
        say("curve: " + _row_line(row))
    curve = {"source": str(source), "data": str(data), "family": family, "mode": main.config.transfer.mode,
             "seeds_for_small_budgets": seeds, "small_budget": SMALL, "rows": rows,
             "runs": RUNS_DIR + "/", "metric": "test accuracy"}
    atomic_write_json(out / CURVE_FILE, curve)
    from deepstrata.report import write_report

    write_report(out, extra_sections=[("Few-label learning curve", curve_html(curve))])
    if not quiet:
        print(format_curve(curve))
        print(f"curve: {out / CURVE_FILE}")
        print(f"report: {out / 'report.html'}")
    return Run(out)


def _cell(entry: dict | None) -> str:
    if not entry:
        return "-"
    return f"{entry['mean']:.3f}" + (f" ± {entry['std']:.3f} ({entry['seeds']} seeds)" if entry["seeds"] > 1 else "")


def _row_line(row: dict) -> str:
    return (f"{row['labels_per_class']} per class: transfer {_cell(row.get('transfer'))}, scratch "
            f"{_cell(row.get('scratch'))}, baseline {_cell(row.get('baseline'))}")


def format_curve(curve: dict) -> str:
    head = f"{'labels/class':>12}  {'transfer':>26}  {'scratch':>26}  {'baseline':>26}"
    lines = [head] + [f"{str(row['labels_per_class']):>12}  {_cell(row.get('transfer')):>26}  "
                      f"{_cell(row.get('scratch')):>26}  {_cell(row.get('baseline')):>26}" for row in curve["rows"]]
    return "\n".join(lines)


def curve_figure(curve: dict):
    """Test accuracy against labels per class (log scale), one line per kind, ± std as bars."""
    from matplotlib.figure import Figure

    rows = curve["rows"]
    most = max((r["labels_per_class"] for r in rows if r["labels_per_class"] != "all"), default=1)
    xs = [most * 4 if r["labels_per_class"] == "all" else r["labels_per_class"] for r in rows]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for kind in ("transfer", "scratch", "baseline"):
        points = [(x, r[kind]) for x, r in zip(xs, rows) if kind in r]
        if points:
            ax.errorbar([x for x, _ in points], [e["mean"] for _, e in points], yerr=[e["std"] for _, e in points],
                        marker="o", capsize=3, label=kind)
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(r["labels_per_class"]) for r in rows])
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curve_html(curve: dict) -> str:
    from deepstrata.report_html import esc, figure_img

    cells = "".join(
        f"<tr><td>{esc(row['labels_per_class'])}</td>"
        + "".join(f'<td class="num">{esc(_cell(row.get(kind)))}</td>' for kind in ("transfer", "scratch", "baseline"))
        + "</tr>" for row in curve["rows"])
    table = ('<table><thead><tr><th>labels per class</th><th class="num">transfer</th><th class="num">scratch</th>'
             f'<th class="num">baseline</th></tr></thead><tbody>{cells}</tbody></table>')
    intro = (f"<p>Test accuracy of transfer from {esc(curve['source'])} ({esc(curve['mode'])}) against the same "
             f"architecture from scratch and the best hand-engineered baseline, on the same few-label splits; "
             f"budgets up to {curve['small_budget']} per class over {curve['seeds_for_small_budgets']} seeds "
             f"(mean ± std). The fits are in <code>{esc(curve['runs'])}</code>; the numbers in "
             f"<code>{CURVE_FILE}</code>.</p>")
    return intro + figure_img(curve_figure(curve), "learning curve") + table
