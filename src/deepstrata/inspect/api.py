"""``inspect_run``: what every named layer of a run learned, measured and pictured.

One call reads a held-out sample through the trained model and through the same
architecture at random initialisation, then measures (layer-wise linear probes, linear
CKA between layers), maps (PCA / t-SNE per layer) and shows what only its family has:
for image models pictures (first-layer filters, activation maps, top-activating crops,
optionally activation maximisation), for text models attention maps and nearest tokens,
for recommenders the item space. The numbers and the matplotlib figures come back as an
``InspectionResult``; with ``write=True`` they also land in ``RUN/inspect/report.html``
and ``RUN/inspect/summary.json``, and the run's own report gains a link.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepstrata.errors import ConfigError
from deepstrata.inspect import data as inspect_data
from deepstrata.inspect.cka import cka_matrix, paired_cka
from deepstrata.inspect.neighbours import NeighbourTable
from deepstrata.inspect.probes import (ProbeResult, ProbeSettings, chance_accuracy, layer_probes, probe_accuracy,
                                       probe_split, random_control)
from deepstrata.inspect.projections import ProjectionSettings, projections
from deepstrata.inspect.taps import extract, layer_names, parse_layers, per_example_layers

INSPECT_DIR = "inspect"
CKA_SAMPLES = 1000


@dataclass
class InspectionResult:
    """Everything ``inspect_run`` found: numbers, settings, timings and figures (matplotlib ``Figure``).

    ``figures`` maps a name (``"probes"``, ``"cka"``, ``"projections"``; images:
    ``"filters"``, ``"maps/<layer>"``, ``"patches/<layer>"``, ``"maximize"``; text:
    ``"attention"``; recommenders: ``"items"``) to a figure; ``tables`` holds nearest
    neighbours (tokens, items); ``summary()`` is what ``summary.json`` holds.
    """

    run: str
    task: str
    family: str
    data: str
    samples: int
    layers: list[str]
    shapes: dict[str, list[int]]
    probes: list[ProbeResult]
    input_probe: dict[str, Any] | None
    chance: float
    probe_split: dict[str, int]
    cka_layers: list[str]
    cka: np.ndarray
    cka_samples: int
    cka_vs_init: dict[str, float]
    settings: dict[str, Any]
    seconds: dict[str, float]
    figures: dict[str, Any] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    tables: list[NeighbourTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compactness: dict[str, Any] | None = None   # raw input vs embedding: inspect.compactness
    report_path: Path | None = None
    summary_path: Path | None = None

    def probe(self, layer: str) -> ProbeResult:
        for result in self.probes:
            if result.layer == layer:
                return result
        raise KeyError(layer)

    def summary(self) -> dict[str, Any]:
        """The JSON-able summary: probes per layer (trained vs random init), CKA, sample, settings, timings."""
        return {
            "run": self.run,
            "task": self.task,
            "family": self.family,
            "data": self.data,
            "samples": self.samples,
            "probe_split": self.probe_split,
            "chance": _finite(self.chance),
            "input_probe": self.input_probe,
            "probes": [p.to_dict() for p in self.probes],
            "shapes": self.shapes,
            "cka": {"layers": self.cka_layers, "matrix": _finite(self.cka), "samples": self.cka_samples},
            "cka_trained_vs_init": {k: _finite(v) for k, v in self.cka_vs_init.items()},
            "settings": self.settings,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "neighbours": [table.to_dict() for table in self.tables],
            "compactness": self.compactness,
            "notes": self.notes,
        }

    def table(self) -> str:
        """The probe table as text, as ``deepstrata inspect`` prints it (CKA only when there are no probes)."""
        if not self.probes:
            lines = [f"{name}: {'x'.join(map(str, self.shapes.get(name, [])))}, CKA vs init "
                     f"{self.cka_vs_init.get(name, float('nan')):.2f}" for name in self.layers]
            lines += [*self.notes, f"data: {self.data}; inspected in {self.seconds.get('total', 0.0):.1f}s"]
            return "\n".join(lines)
        head = ["layer", "output", "dim", "trained", "random", "gain", "CKA vs init"]
        rows = []
        for p in self.probes:
            vs_init = self.cka_vs_init.get(p.layer, float("nan"))
            rows.append([p.layer, "x".join(map(str, self.shapes.get(p.layer, []))), str(p.dim), f"{p.trained:.3f}",
                         f"{p.random:.3f}", f"{p.trained - p.random:+.3f}",
                         f"{vs_init:.2f}" if np.isfinite(vs_init) else "-"])
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
        lines += ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in rows]
        extra = f"chance {self.chance:.3f}"
        if self.input_probe:
            extra = f"raw input ({self.input_probe['dim']}-d) {self.input_probe['accuracy']:.3f}; " + extra
        lines.append(f"linear probes, held-out accuracy (fit {self.probe_split['fit']}, scored on "
                     f"{self.probe_split['score']}); {extra}")
        if self.compactness:
            lines.append(compactness_line(self.compactness))
        lines.append(f"data: {self.data}; inspected in {self.seconds.get('total', 0.0):.1f}s")
        return "\n".join(lines)


def compactness_line(record: dict) -> str:
    """One line: each representation's size, bytes and accuracies, and the compression ratio."""
    parts = []
    for r in record["representations"]:
        accuracy = ("" if r["probe_accuracy"] is None else
                    f", probe {r['probe_accuracy']:.3f}, 1-NN {r['nn_accuracy']:.3f}")
        parts.append(f"{r['name']} {r['dim']}-d ({r['bytes_per_example']:,} B{accuracy})")
    return f"compactness: {' vs '.join(parts)}; {record['compression']:g}x fewer dimensions"


def _finite(value):
    if isinstance(value, np.ndarray):
        return [_finite(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_finite(v) for v in value]
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def inspect_run(
    run,
    data: str | None = None,
    layers: str | list[str] | None = None,
    *,
    samples: int = 2000,
    seed: int = 0,
    data_dir: str | None = None,
    tsne: bool = True,
    maximize: bool = False,
    token: str | None = None,
    write: bool = True,
    batch_size: int = 256,
) -> InspectionResult:
    """Inspect ``run`` (a ``Run``; ``deepstrata.inspect.inspect_run`` also takes a run directory) on up to
    ``samples`` held-out examples.

    ``layers``: names (list or ``"stem,stage2"``), default every layer with one output
    per example; an unknown name raises ``ConfigError`` listing the real ones before any
    data is read. ``tsne=False`` keeps only PCA maps; ``maximize=True`` adds activation
    maximisation (image models); ``token`` picks the word whose nearest tokens a text
    model's report shows. With ``write``, writes ``RUN/inspect/report.html`` and
    ``summary.json`` and re-renders the run's report so that it links to them.
    """
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    model = run.model
    names = parse_layers(model, layers)
    samples = inspect_data.check_samples(samples)
    notes: list[str] = []

    clock = time.perf_counter()
    sample = inspect_data.load_sample(run, data, samples=samples, seed=seed, data_dir=data_dir)
    seconds["load data"] = time.perf_counter() - clock
    names, tables = per_example_layers(model, sample.inputs, names)
    if tables and layers is not None:
        usable = per_example_layers(model, sample.inputs, layer_names(model))[0]
        raise ConfigError(f"layer {', '.join(map(repr, tables))} is a table, not one output per example; "
                          f"per-example layers of this model: {', '.join(usable)}")
    if tables:
        notes.append(f"{', '.join(tables)}: a table (not one output per example), left out of probes, CKA and maps")
    notes += sample.notes

    clock = time.perf_counter()
    cka_n = min(len(sample), CKA_SAMPLES)
    common = {"mask": sample.mask, "batch_size": batch_size, "keep_flat": cka_n, "trim": sample.trim}
    trained = extract(model, sample.inputs, names, **common)
    control = random_control(model, seed)
    random = extract(control, sample.inputs, names, **common)
    seconds["features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    probe_settings = ProbeSettings(seed=seed)
    probes: list[ProbeResult] = []
    input_probe = compact = None
    chance = float("nan")
    split = {"fit": 0, "score": 0}
    if sample.probe:
        probes = layer_probes(trained.pooled, random.pooled, sample.labels, probe_settings)
        fit_idx, score_idx = probe_split(sample.labels, probe_settings.fit_fraction, probe_settings.seed)
        split = {"fit": int(len(fit_idx)), "score": int(len(score_idx))}
        if isinstance(sample.inputs, torch.Tensor) and sample.inputs.is_floating_point():
            pixels = sample.inputs.reshape(len(sample), -1).numpy()
            accuracy, _ = probe_accuracy(pixels, sample.labels, fit_idx, score_idx, probe_settings)
            input_probe = {"name": "raw input", "dim": int(pixels.shape[1]), "accuracy": round(accuracy, 6)}
        chance = chance_accuracy(sample.labels, probe_settings)
        compact = _compactness(model, sample, fit_idx, score_idx, probe_settings, input_probe, batch_size)
    else:
        notes.append(f"no probes: the examples carry no class labels (maps are coloured by {sample.label_name})")
    seconds["probes"] = time.perf_counter() - clock

    clock = time.perf_counter()
    cka_layers, matrix = cka_matrix(trained.flat)
    vs_init = paired_cka(trained.flat, random.flat)
    seconds["cka"] = time.perf_counter() - clock

    clock = time.perf_counter()
    projection_settings = ProjectionSettings(methods=("pca", "tsne") if tsne else ("pca",), seed=seed)
    projection_index, maps = projections(trained.pooled, projection_settings)
    seconds["projections"] = time.perf_counter() - clock

    result = InspectionResult(
        run=str(run.path), task=run.task, family=str(model.spec.get("family", type(model).__name__)),
        data=sample.description, samples=len(sample), layers=names,
        shapes={name: list(shape) for name, shape in trained.shapes.items()},
        probes=probes, input_probe=input_probe, chance=chance, probe_split=split,
        cka_layers=cka_layers, cka=matrix, cka_samples=cka_n, cka_vs_init=vs_init,
        settings={
            "probe": {**probe_settings.to_dict(), "text": probe_settings.describe()} if sample.probe else None,
            "control": f"same architecture, random initialisation (torch.manual_seed({seed})); "
                       "shares only the input normalisation statistics",
            "pooling": "4-D maps: spatial mean; 3-D token maps: mean over real tokens; 2-D: as is",
            "cka": "linear CKA on flattened activations (token maps pooled)",
            "projection": {**projection_settings.to_dict(), "colour": sample.label_name},
            "maximize": None,
            "device": f"{run.device} ({torch.get_num_threads()} torch threads)",
        },
        seconds=seconds, notes=notes, compactness=compact,
    )

    from deepstrata.inspect import report as inspect_report

    clock = time.perf_counter()
    if probes:
        result.figures["probes"] = inspect_report.probe_figure(result)
    result.figures["cka"] = inspect_report.cka_figure(result)
    result.figures["projections"] = inspect_report.projection_figure(
        maps, sample.labels[projection_index], sample.classes, legend=sample.label_name)
    seconds["summary plots"] = time.perf_counter() - clock
    clock = time.perf_counter()
    run.family.inspect_views(result, model, control, sample, names, maximize=maximize, seed=seed, token=token,
                             batch_size=batch_size)
    seconds[f"{run.task.split('-')[0]} views"] = time.perf_counter() - clock

    seconds["total"] = time.perf_counter() - started
    if write:
        clock = time.perf_counter()
        out = Path(run.path) / INSPECT_DIR
        result.report_path = inspect_report.write_html(result, out)
        result.summary_path = inspect_report.write_summary(result, out)
        from deepstrata.report import write_report

        write_report(run.path)
        seconds["write report"] = time.perf_counter() - clock
        seconds["total"] = time.perf_counter() - started
        inspect_report.write_summary(result, out)
    return result


def _compactness(model, sample, fit_idx, score_idx, settings: ProbeSettings, input_probe: dict | None,
                 batch_size: int) -> dict:
    """Raw input vs the default embedding (``features``) on the probes' own split (``inspect.compactness``)."""
    from deepstrata.inspect.compactness import compactness
    from deepstrata.inspect.layer_vectors import FEATURES, layer_vectors

    embedding = layer_vectors(model, sample.inputs, FEATURES, mask=sample.mask, trim=sample.trim,
                              batch_size=batch_size)
    inputs = sample.inputs[0] if isinstance(sample.inputs, tuple) else sample.inputs
    raw_dim = int(np.prod(inputs.shape[1:]))
    vector_space = isinstance(inputs, torch.Tensor) and inputs.is_floating_point()
    raw = inputs.reshape(len(inputs), -1).numpy() if vector_space else None
    return compactness(raw, raw_dim, embedding, sample.labels, layer=FEATURES, fit_idx=fit_idx, score_idx=score_idx,
                       settings=settings, raw_probe=input_probe["accuracy"] if input_probe else None,
                       raw_name="raw input" if vector_space else "raw input (token ids)")


def features(run, x, layer: str = "stage2", *, data_dir: str | None = None, batch_size: int = 256,
             with_ids: bool = False):
    """Pooled features ``[N, D]`` of one named layer of ``run`` (a ``Run``); see ``Run.features``."""
    return run.features(x, layer, data_dir=data_dir, with_ids=with_ids, batch_size=batch_size)
