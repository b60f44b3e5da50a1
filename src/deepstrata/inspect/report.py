"""The inspection page (``RUN/inspect/report.html``) and ``summary.json``.

Self-contained like the run's report (whose CSS and PNG embedding it reuses): every plot
is a base64 PNG drawn with matplotlib's Agg canvas, nothing is fetched when the page is
opened. The plots of the numbers (probes by depth, CKA, projections) are drawn here; the
pictures of image models come from ``visuals``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepstrata.engine.checkpoint import atomic_write_json, atomic_write_text
from deepstrata.report_html import CSS, esc, figure_img, note_html, section_html

REPORT_NAME = "report.html"
SUMMARY_NAME = "summary.json"


# ---------------------------------------------------------------- plots of the numbers


def probe_figure(result) -> Any:
    """Held-out probe accuracy against depth: trained model, random-init control, raw input, chance."""
    from matplotlib.figure import Figure

    probes = result.probes
    xs = np.arange(len(probes))
    fig = Figure(figsize=(max(6.5, 1.25 * len(probes) + 2.5), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, [p.trained for p in probes], marker="o", color="#3b6fb6", linewidth=2, label="trained model")
    ax.plot(xs, [p.random for p in probes], marker="s", color="#999999", linewidth=2, label="random init (control)")
    if result.input_probe:
        ax.axhline(result.input_probe["accuracy"], color="#2a9d5c", linestyle=":", linewidth=1.5,
                   label=f"raw input ({result.input_probe['dim']}-d)")
    ax.axhline(result.chance, color="#c0392b", linestyle="--", linewidth=1, label="chance (majority class)")
    for x, p in zip(xs, probes):
        ax.annotate(f"{p.trained:.2f}", (x, p.trained), textcoords="offset points", xytext=(0, 7), ha="center",
                    fontsize=8, color="#3b6fb6")
        ax.annotate(f"{p.random:.2f}", (x, p.random), textcoords="offset points", xytext=(0, -13), ha="center",
                    fontsize=8, color="#666666")
    ax.set_xticks(xs, [f"{p.layer}\n{p.dim}-d" for p in probes], fontsize=9)
    ax.set_xlim(-0.4, len(probes) - 0.6)
    ax.set_ylim(0.0, 1.08)
    ax.set_xlabel("layer (depth →), pooled feature dimension")
    ax.set_ylabel("probe accuracy (held-out)")
    split = result.probe_split
    ax.set_title(f"Linear probes by depth (fit on {split['fit']}, scored on {split['score']})",
                 fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def cka_figure(result) -> Any:
    """Linear CKA between every two layers (heat map), beside each layer's CKA with its random initialisation."""
    from matplotlib.figure import Figure

    names, matrix = result.cka_layers, np.asarray(result.cka, dtype=float)
    n = len(names)
    side = max(3.8, 0.8 * n + 1.8)
    fig = Figure(figsize=(side + 4.2, side))
    ax = fig.add_subplot(1, 2, 1)
    im = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="linear CKA")
    ax.set_xticks(range(n), names, fontsize=9, rotation=30, ha="right")
    ax.set_yticks(range(n), names, fontsize=9)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] < 0.6 else "black")
    ax.set_title("similarity between layers (trained)", fontsize=10)
    bx = fig.add_subplot(1, 2, 2)
    values = [result.cka_vs_init.get(name, float("nan")) for name in names]
    bx.bar(range(n), np.nan_to_num(values), color="#3b6fb6")
    for i, value in enumerate(values):
        if np.isfinite(value):
            bx.text(i, value + 0.02, f"{value:.2f}", ha="center", fontsize=8)
    bx.set_xticks(range(n), names, fontsize=9, rotation=30, ha="right")
    bx.set_ylim(0.0, 1.1)
    bx.set_ylabel("CKA(trained, random init)")
    bx.set_title("how far each layer moved from its initialisation\n(low = changed most)", fontsize=10)
    bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def projection_figure(maps: dict[str, dict[str, np.ndarray]], labels: np.ndarray, classes: Sequence[str],
                      legend: str = "class") -> Any:
    """Rows: methods (PCA, t-SNE …); columns: the keys of ``maps`` (layers, or models); points coloured by label."""
    from matplotlib.figure import Figure

    layers = list(maps)
    methods = list(next(iter(maps.values()))) if maps else []
    cell = 2.7
    fig = Figure(figsize=(cell * max(len(layers), 2) + 1.6, cell * len(methods) + 0.6))
    labels = np.asarray(labels)
    palette = "tab10" if len(classes) <= 10 else "tab20"
    from matplotlib import colormaps

    cmap = colormaps[palette]
    for row, method in enumerate(methods):
        for col, layer in enumerate(layers):
            ax = fig.add_subplot(len(methods), max(len(layers), 1), row * len(layers) + col + 1)
            xy = maps[layer][method]
            for k in np.unique(labels):
                chosen = labels == k
                ax.scatter(xy[chosen, 0], xy[chosen, 1], s=5, color=cmap(int(k) % cmap.N), alpha=0.75,
                           linewidths=0, label=str(classes[int(k)]) if int(k) < len(classes) else str(k))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(layer, fontsize=10)
            if col == 0:
                ax.set_ylabel({"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}.get(method, method), fontsize=10)
    if methods and len(classes) <= 20:
        handles, names = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="center right", fontsize=8, markerscale=2.5, title=legend, frameon=False)
        room = 0.35 + 0.075 * max(len(legend), *(len(str(c)) for c in classes))
        fig.tight_layout(rect=(0, 0, 1 - room / fig.get_figwidth(), 1))
    else:
        fig.tight_layout()
    return fig


# ---------------------------------------------------------------- HTML


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    th = "".join(f'<th class="num">{esc(h)}</th>' if i >= numeric_from else f"<th>{esc(h)}</th>"
                 for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{esc(c)}</td>' if i >= numeric_from else f"<td>{esc(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "-"


def _overview(result) -> str:
    total = result.seconds.get("total", sum(result.seconds.values()))
    items = [
        ("run", Path(result.run).name),
        ("task / model", f"{result.task} / {result.family}"),
        ("layers", ", ".join(f"{name} ({'x'.join(map(str, result.shapes.get(name, [])))})" for name in result.layers)),
        ("sample", result.data),
        ("probe split", f"fitted on {result.probe_split['fit']}, scored on {result.probe_split['score']} "
                        "(stratified by class)" if result.probes else "no probes (no class labels)"),
        ("time", f"{total:.1f} s on {result.settings.get('device', 'cpu')} (steps at the end)"),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    last = result.probes[-1] if result.probes else None
    body = f'<dl class="meta">{dl}</dl>'
    if last is None:
        deepest = result.layers[-1] if result.layers else None
        if deepest is not None and np.isfinite(result.cka_vs_init.get(deepest, float("nan"))):
            body += (f'<p class="summary">CKA between the trained {esc(deepest)} and its random initialisation: '
                     f"{result.cka_vs_init[deepest]:.2f} (1 = unchanged by training).</p>")
    else:
        first = result.probes[0]
        body += (f'<p class="summary">Probe accuracy rises from {first.trained:.3f} at {esc(first.layer)} to '
                 f"{last.trained:.3f} at {esc(last.layer)}; the random-init control reaches {last.random:.3f} "
                 f"there (chance {result.chance:.3f}).</p>" if last.trained >= first.trained else
                 f'<p class="summary">Probe accuracy does not rise with depth here: {first.trained:.3f} at '
                 f"{esc(first.layer)}, {last.trained:.3f} at {esc(last.layer)} (control {last.random:.3f}).</p>")
    for note in result.notes:
        body += note_html(note)
    return body


def _probes(result) -> str:
    rows = [[p.layer, "x".join(map(str, result.shapes.get(p.layer, []))), str(p.dim), _fmt(p.trained),
             _fmt(p.random), f"{p.trained - p.random:+.3f}", _fmt(result.cka_vs_init.get(p.layer, float("nan"))),
             "yes" if p.converged else "no"] for p in result.probes]
    table = _table(["layer", "output shape", "dim", "trained", "random init", "gain", "CKA vs init", "converged"],
                   rows, numeric_from=2)
    reference = ""
    if result.input_probe:
        reference = (f" The same probe on the raw input ({result.input_probe['dim']} values) scores "
                     f"{result.input_probe['accuracy']:.3f}.")
    caption = note_html(
        "Each layer's output is pooled to one vector per example (" + result.settings["pooling"] + "), then "
        + result.settings["probe"]["text"] + ". The control is the " + result.settings["control"] + "."
        + reference + " Alain & Bengio (2016) found separability rising monotonically with depth in trained networks."
    )
    return figure_img(result.figures["probes"], "linear probe accuracy by depth") + table + caption


def _compactness(result) -> str:
    record = result.compactness
    rows = [[r["name"], str(r["dim"]), f"{r['bytes_per_example']:,}",
             "-" if r["probe_accuracy"] is None else _fmt(r["probe_accuracy"]),
             "-" if r["nn_accuracy"] is None else _fmt(r["nn_accuracy"])] for r in record["representations"]]
    table = _table(["representation", "dim", "bytes / example", "linear probe", "1-NN (cosine)"], rows)
    return table + note_html(
        f"The embedding ({record['layer']}: what `deepstrata embed` writes by default) has "
        f"{record['compression']:g}x fewer dimensions than the raw input. Fitted on {record['split']['fit']} "
        f"examples, scored on {record['split']['score']}; {record['text']}.")


def _cka(result) -> str:
    return figure_img(result.figures["cka"], "linear CKA between layers") + note_html(
        f"Linear CKA (Kornblith et al., 2019) on {result.cka_samples} examples, {result.settings['cka']}. "
        "1 means the two layers represent the examples identically up to rotation and scale; neighbouring "
        "layers are usually most alike. Right: each trained layer against the same layer at random initialisation."
    )


def _projections(result) -> str:
    settings = result.settings["projection"]
    methods = ", ".join({"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}.get(m, m) for m in settings["methods"])
    return figure_img(result.figures["projections"], "2-D projections of each layer") + note_html(
        f"{methods} of each layer's standardised pooled features on a sample of at most {settings['sample']} "
        f"examples (seed {settings['seed']}; t-SNE perplexity {settings['perplexity']:g}, "
        f"{settings['tsne_iterations']} iterations), coloured by {settings.get('colour', 'class')}."
    )


def _neighbour_table(table) -> str:
    head = "<tr><th>#</th>" + "".join(f"<th>{esc(c)}</th>" for c in table.columns) + "</tr>"
    body = "".join(
        f"<tr><td>{r + 1}</td>" + "".join(
            f"<td><strong>{esc(label)}</strong><br><small>{esc(detail)}</small></td>" for label, detail in row)
        + "</tr>" for r, row in enumerate(table.rows))
    return (f"<h3>{esc(table.title)}</h3><p>Query: {esc(table.query)}</p>"
            f"<table><thead>{head}</thead><tbody>{body}</tbody></table>" + (note_html(table.note) if table.note else ""))


def _text(result) -> list[tuple[str, str, str]]:
    sections = []
    if "attention" in result.figures:
        sections.append(("Attention maps", figure_img(result.figures["attention"], "attention maps per block")
                         + note_html(result.captions["attention"]), "attention"))
    tables = [t for t in result.tables if t.section == "text"]
    if tables:
        sections.append(("Nearest tokens per layer", "".join(_neighbour_table(t) for t in tables), "tokens"))
    return sections


def _items(result) -> list[tuple[str, str, str]]:
    sections = []
    tables = [t for t in result.tables if t.section == "items"]
    if tables:
        sections.append(("Item space: nearest neighbours", "".join(_neighbour_table(t) for t in tables), "neighbours"))
    if "items" in result.figures:
        sections.append(("Item space: 2-D map", figure_img(result.figures["items"], "item space projection")
                         + note_html(result.captions["items"]), "items"))
    return sections


def _images(result) -> list[tuple[str, str, str]]:
    sections = []
    if "filters" in result.figures:
        sections.append(("First-layer filters", figure_img(result.figures["filters"], "first layer filters") + note_html(
            f"The {result.captions['filters']}; blue negative, red positive weights (per-filter scale for colour "
            "images). A trained first layer shows oriented edges, blobs and colour contrasts."), "filters"))
    maps = [k for k in result.figures if k.startswith("maps/")]
    if maps:
        body = "".join(figure_img(result.figures[k], f"activation maps of {k[5:]}") for k in maps)
        sections.append(("Activation maps", body + note_html(
            "A few inputs (one per class) and, for each layer, the maps of the channels shown in the next "
            "section; brighter is stronger, each channel on its own scale."), "maps"))
    patches = [k for k in result.figures if k.startswith("patches/")]
    if patches:
        body = "".join(figure_img(result.figures[k], f"top-activating crops of {k[8:]}") + note_html(result.captions[k])
                       for k in patches)
        sections.append(("Top-activating patches", body + note_html(
            "For each layer, the channels whose strongest response varies most across images, and the sample's "
            "crops that excite each one most (one crop per image, at the most active position, as large as the "
            "channel's receptive field and clamped to the image). Early layers respond to strokes and edges; "
            "later ones to larger parts and whole shapes."), "patches"))
    if "maximize" in result.figures:
        sections.append(("Activation maximisation", figure_img(result.figures["maximize"], "activation maximisation")
                         + note_html("Settings: " + result.settings["maximize"]["text"] + "."), "maximize"))
    elif patches:
        sections.append(("Activation maximisation", note_html(
            "Not computed; run `deepstrata inspect RUN --maximize` to add inputs optimised to excite each "
            "channel shown above."), "maximize"))
    return sections


def _timing(result) -> str:
    rows = [[name, f"{value:.2f}"] for name, value in result.seconds.items()]
    return _table(["step", "seconds"], rows) + note_html(
        f"{result.samples} examples inspected; sample size set with --samples.")


def render(result) -> str:
    """The whole page as a string."""
    sections = [
        section_html("Overview", _overview(result), "overview"),
        section_html("Linear probes by depth", _probes(result) if result.probes else note_html(
            "; ".join(n for n in result.notes if n.startswith("no probes")).capitalize() + "."), "probes"),
    ]
    if result.compactness:
        sections.append(section_html("Compactness: raw input vs embedding", _compactness(result), "compactness"))
    sections += [
        section_html("Similarity between layers (linear CKA)", _cka(result), "cka"),
        section_html("2-D projections of each layer", _projections(result), "projections"),
    ]
    for views in (_images, _text, _items):
        sections += [section_html(h, body, anchor) for h, body, anchor in views(result)]
    sections.append(section_html("Settings and timing", _timing(result), "timing"))
    title = f"Inspection of {Path(result.run).name}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n<p class=\"note\">What every named layer learned: "
        '<a href="../report.html">back to the run report</a></p>\n'
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def write_html(result, out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` atomically and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    atomic_write_text(path, render(result))
    return path


def write_summary(result, out_dir: Path) -> Path:
    path = Path(out_dir) / SUMMARY_NAME
    atomic_write_json(path, result.summary())
    return path
