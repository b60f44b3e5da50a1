"""What a task family is: the one interface images, texts and recommendation each implement.

A family is everything that differs between kinds of data; everything that does not —
the order of a fit, the run directory, the process group, checkpoints, the comparison and
the report — is written once, in ``deepstrata.pipeline`` (fit) and ``deepstrata.run``
(verbs on a finished run). Each family lives in one folder (``families/image/``,
``families/text/``, ``families/recommend/``) and is named in one registry line
(``families/__init__.py``).

How a fit calls a family, in order (``pipeline.fit``):

1. ``resolve_config(data, model, config, overrides)`` — defaults, the YAML file, the flags.
2. ``read(cfg, data)`` — read and split the data; returns ``Prepared``; ``describe`` says what was read.
3. ``check_world(cfg, prepared, world_size)`` — refuse what cannot run on this many processes.
4. ``build(cfg, prepared, fit)`` — model, loop ``Task`` and ``model.json`` record; ``Built``.
5. ``write_records(cfg, prepared, built, fit)`` — model.json, provenance.json and any family file.
6. the one training loop (``engine.loop.train``), then on rank 0:
7. ``score(cfg, prepared, built, result, fit)`` — the learned row(s) on the test split.
8. ``baselines(cfg, prepared, built, fit)`` — hand-engineered rows; ``comparison(...)``; ``report_sections(...)``.

Verbs on a finished run (``Run.predict`` …) call the family's method of the same name. A
verb a family does not have answers, through ``refuse``, with the run's kind and what the
verb expects — the message users saw before families existed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from deepstrata.errors import ConfigError, DataError, RunError

# What each verb that belongs to some families only expects, for the refusal on the others.
VERB_EXPECTS = {
    "predict": "an image or text run (it labels images or texts); for a recommendation run use "
               "`deepstrata recommend RUN --user ID` or `deepstrata similar RUN --item ID`",
    "embed --per-token": "a text run (one vector per token, written as .npz or .parquet); other runs embed one "
                         "vector per example as .parquet or .npy",
    "embed and search": "an image, text or recommendation run",
    "export": "an image, text or recommendation run",
    "recommend and similar": "a recommendation run (fit --task recommend on an interaction log)",
    "update": "an image, text or recommendation run",
}


@dataclass
class Prepared:
    """The data of a fit, read and split: what the pipeline needs to know of it, and the family's own part."""

    source: str                      # as recorded in comparison.json's "data"
    train_size: int                  # training examples, for the automatic batch size and epochs
    guarded_paths: tuple             # paths --overwrite must never delete (the input data)
    own: Any = None                  # the family's splits, dataset, log ...
    cfg: Any = None                  # the config with what reading learned (a table's columns), if it changed


def with_train(cfg, **changes):
    """``cfg`` with ``changes`` made to its ``train`` part (how each ``auto`` setting is made concrete)."""
    return replace(cfg, train=replace(cfg.train, **changes))


@dataclass
class FitContext:
    """Where a fit stands once its run directory and process group are set up."""

    run_dir: Path
    resuming: bool
    resume_asked: bool
    device: Any                      # torch.device of this rank
    env: Any                         # engine.distributed.DistEnv
    quiet: bool
    precision_reason: str = "as asked"   # why the run trains in cfg.train.precision (see devices.resolve_precision)


@dataclass
class Built:
    """The model a fit trains, the loop ``Task`` that feeds it, and what model.json records."""

    net: Any
    task: Any
    info: dict
    model_line: str                  # the "model: ..." line the fit prints
    description: str                 # the progress bar's label
    own: dict = field(default_factory=dict)   # family state kept from build to score (encoded texts ...)


class Family(ABC):
    """Base of every task family. The abstract methods every family implements (a family missing one cannot
    be created); the verbs some families lack refuse with a message naming the run's kind."""

    name: str = ""                   # the --task value: "image", "text", "recommend"
    task: str = ""                   # the task recorded in model.json, config.yaml, comparison.json
    models: tuple[str, ...] = ()
    expects: str = ""                # the data its runs take, for messages
    wrong_kinds: tuple[str, ...] = ()  # kinds of source (``data.kinds.source_kind``) its verbs refuse by name

    # --- choosing the family ------------------------------------------------------------
    def claims(self, data) -> bool:
        """Whether ``data`` (a path, a name or a data object) is plainly of this family, by its form alone.

        Asked after an explicit ``--task`` and the model's family (``families.detect``)."""
        return False

    # --- fit ----------------------------------------------------------------------------
    @abstractmethod
    def resolve_config(self, data, model, config, overrides: dict):
        """The ``RunConfig`` of a fit: the family's defaults, then ``config`` (object, YAML path or a resumed
        run's), then ``overrides``; options of other families are refused by name."""

    @abstractmethod
    def read(self, cfg, data) -> Prepared:
        """Read and split ``data`` (or ``cfg.data.source``) into ``Prepared``; nothing is written yet."""

    def describe(self, cfg, prepared: Prepared, load_seconds: float) -> list[str]:
        """The lines a fit prints about its data once the run directory is ready ("data: ...", "note: ...")."""
        return []

    def check_world(self, cfg, prepared: Prepared, world_size: int) -> None:
        """Refuse, before anything is written, what this family cannot do on ``world_size`` processes."""

    # Whether ``train.plateau: auto`` may end this family's runs early (engine.plateau): only where the rule
    # was measured to keep the accuracy of the full budget; elsewhere auto means off.
    plateau_measured: bool = False

    def resolve_plateau(self, cfg):
        """``cfg`` with ``plateau: auto`` turned off for a family the rule was not measured on."""
        if cfg.train.plateau != "auto" or self.plateau_measured:
            return cfg
        return with_train(cfg, plateau="off")

    # Set where bf16 was measured to lose accuracy (or was not measured) for this family: under
    # ``--precision auto`` its runs then train in fp32 on any hardware, and this says why.
    auto_keeps_fp32: str = ""

    def resolve_precision(self, cfg, device):
        """(``cfg`` with ``train.precision`` concrete, why): ``auto`` resolved for ``device`` and this family."""
        from deepstrata.engine.devices import resolve_precision

        precision, reason = resolve_precision(str(cfg.train.precision), device)
        if cfg.train.precision == "auto" and precision != "32" and self.auto_keeps_fp32:
            precision, reason = "32", f"auto: fp32 for {self.name} runs ({self.auto_keeps_fp32})"
        if precision == cfg.train.precision:
            return cfg, reason
        return with_train(cfg, precision=precision), reason

    # The models whose convolutions run faster channels-last (NHWC): ``train.channels_last: auto`` turns the
    # format on for them (measured on the CPU: benchmarks/cpu_train_options.py) and off for everything else;
    # inputs whose shorter side (``input_side``) is under ``channels_last_min_side`` keep NCHW.
    convolutional_models: tuple[str, ...] = ()
    channels_last_min_side: int = 0

    def input_side(self, prepared: Prepared) -> int | None:
        """The shorter side of the images a fit trains on, where the family has images and knows it."""
        return None

    def resolve_channels_last(self, cfg, device, prepared: Prepared | None = None):
        """(``cfg`` with ``train.channels_last`` true or false, why, or "as asked" when it was not ``auto``)."""
        if cfg.train.channels_last != "auto":
            return cfg, "as asked"
        convolutional = cfg.model.name in self.convolutional_models
        side = self.input_side(prepared) if prepared is not None and convolutional else None
        if side is not None and side < self.channels_last_min_side:
            return with_train(cfg, channels_last=False), (f"auto: NCHW for {side}-pixel inputs (channels-last only "
                                                          f"from {self.channels_last_min_side} pixels)")
        on = convolutional and device.type in ("cpu", "cuda")
        reason = (f"auto: {cfg.model.name} is convolutional, and {device.type} convolutions run faster in NHWC" if on
                  else "auto: only convolutional image models on a CPU or CUDA GPU use it")
        return with_train(cfg, channels_last=on), reason

    @abstractmethod
    def build(self, cfg, prepared: Prepared, fit: FitContext) -> Built:
        """The model (seeded), the loop ``Task`` that feeds it, and the model.json record."""

    @abstractmethod
    def write_records(self, cfg, prepared: Prepared, built: Built, fit: FitContext) -> None:
        """model.json, provenance.json and any file of the family's own (rank 0, before and after training)."""

    @abstractmethod
    def score(self, cfg, prepared: Prepared, built: Built, result, fit: FitContext) -> list[dict]:
        """The learned model's comparison row(s) on the test split, after training (rank 0)."""

    def baselines(self, cfg, prepared: Prepared, built: Built, fit: FitContext) -> tuple[list[dict], dict]:
        """Baseline rows, and extra comparison.json fields (e.g. ``skipped``)."""
        return [], {}

    @abstractmethod
    def comparison(self, cfg, prepared: Prepared, rows: list[dict]) -> dict:
        """comparison.json's fields: task, data, split, primary_metric and ``rows``, in that order."""

    def report_sections(self, cfg, prepared: Prepared, built: Built, rows: list[dict]) -> list[tuple[str, str]]:
        return []

    def curve_scratch(self, options: dict, spec: dict) -> tuple[str, dict, tuple[str, ...] | None]:
        """For ``transfer --curve``: the model and options of the "scratch" fit beside a transfer whose model
        spec is ``spec`` (the same architecture, randomly initialised), and the names of the baseline rows that
        count as the hand-engineered baseline (None: every one)."""
        raise ConfigError(f"transfer --curve: {self.name} runs have no transfer")

    # --- a finished run -----------------------------------------------------------------
    def check_info(self, info: dict, path: Path) -> None:
        """Check the model.json fields this family's verbs rely on (``runfiles.damaged`` if not)."""

    def check_source(self, run, source, verb: str) -> None:
        """Refuse a data source plainly of another kind than the run's, before reading it.

        A classification run given a table of another task, or an image run given texts, would
        otherwise fail deep in a reader with a message that does not say the run is the problem.
        """
        from deepstrata.data.kinds import source_kind

        kind = source_kind(source)
        if kind in self.wrong_kinds:
            raise DataError(f"{source}: {kind}, but {run.path} is {run.kind}; {verb} --data expects {self.expects}")

    def refuse(self, run, verb: str, expects: str | None = None):
        plural = " and " in verb or "," in verb
        raise RunError(f"{run.path}: {run.kind}; {verb} {'expect' if plural else 'expects'} "
                       f"{expects or VERB_EXPECTS[verb]}")

    def predict(self, run, inputs):
        self.refuse(run, "predict")

    def predict_inputs(self, run, paths: list[str], file, column) -> list:
        """What ``deepstrata predict`` labels: its PATH arguments and ``--file`` (texts), as ``predict`` takes them."""
        self.refuse(run, "predict")

    # --- predict in two steps, for ``deepstrata serve``'s micro-batching ----------------
    serve_inputs: str = ""           # the request field inputs come in ("images", "texts"); "": no /predict

    def decode_input(self, run, raw, name: str):
        """One raw input (image bytes, a text) as ``predict_decoded`` takes it, or a one-line ``DataError``
        naming ``name``. Asked per request, before any batching, so that a bad input fails its own request
        alone and never the batch it would have been gathered into (``transformers.Pipeline.preprocess``)."""
        self.refuse(run, "predict")

    def predict_decoded(self, run, decoded: list, names: list[str]) -> list:
        """What ``predict`` answers (objects with ``to_dict``) for inputs ``decode_input`` made, gathered from
        many requests into one forward pass, in order; ``names`` fill their path or text."""
        self.refuse(run, "predict")

    def embed_decoded(self, run, decoded: list):
        """``[N, D]`` vectors of ``features`` (the vector the head classifies) for inputs ``decode_input``
        made, as ``Run.embed`` of in-memory inputs gives them."""
        self.refuse(run, "embed and search")

    def render_predictions(self, predictions: list, as_json: bool) -> str:
        """How ``deepstrata predict`` prints an answer: aligned lines, or JSON."""
        import json

        return json.dumps([p.to_dict() for p in predictions], indent=2, ensure_ascii=False)

    @abstractmethod
    def evaluate(self, run, data, data_dir):
        """Metrics of the run's kept model on ``data`` (default: the run's own test split), saying which split."""

    def embed(self, run, texts, per_token: bool):
        """Text runs' per-token (or legacy list-of-texts) embedding; one vector per example is ``embed_source``."""
        self.refuse(run, "embed --per-token")

    def embed_file(self, run, data, out, per_token: bool, column) -> str:
        """``embed`` of a file's texts, written to ``out``; the line ``deepstrata embed`` prints."""
        self.refuse(run, "embed --per-token")

    def embed_source(self, run, data, layer: str, *, rows, column, data_dir, batch_size: int):
        """An ``embeddings.EmbeddedRows``: one vector of ``layer`` per example of ``data`` (default: the run's own
        source; or in-memory inputs), each with its id and label; ``layer`` is checked by
        ``inspect.layer_vectors.check_layer`` (``features``: the vector the head classifies). ``rows`` picks
        users or items (recommendation runs); ``column`` is a table's text column (text runs)."""
        self.refuse(run, "embed and search")

    def embed_query(self, run, query, layer: str, *, rows: str, batch_size: int):
        """The vector ``[1, D]`` of one search query (an image file, a text, an item or user id), embedded as
        ``embed_source`` embeds the index's rows."""
        self.refuse(run, "embed and search")

    def recommend(self, run, user, k: int):
        self.refuse(run, "recommend and similar")

    def similar(self, run, item, k: int):
        self.refuse(run, "recommend and similar")

    def update(self, run, data, out, epochs, quiet, replay=None):
        """Continue the run's kept model on new data into ``out`` (default: the run, replaced once done); the
        new run's path. ``replay``: the share of the old training data mixed in (classification runs)."""
        self.refuse(run, "update")

    def update_summary(self, record: dict) -> list[str]:
        """What ``deepstrata update`` prints for the record an ``update`` left in model.json's ``updates``."""
        from deepstrata.families.updating import summary_lines

        return summary_lines(record)

    def export(self, run):
        """An ``export.plan.ExportPlan``: a CPU wrapper module taking exactly what the export's contract says,
        real batches of the run's data (two sizes) to verify the export on, and the family's contract part."""
        self.refuse(run, "export")

    # --- inspect and features (deepstrata.inspect asks the family for its data and views) ---
    @abstractmethod
    def inspect_sample(self, run, data, *, samples: int, seed: int, data_dir):
        """An ``inspect.data.InspectData`` sample of the run's data for probes, CKA and maps."""

    def inspect_views(self, result, model, control, sample, names, *, maximize: bool, seed: int, token,
                      batch_size: int) -> None:
        """Add the family's own views (pictures, attention, neighbours ...) to an ``InspectionResult``;
        ``control`` is the same architecture at random initialisation."""

    @abstractmethod
    def features(self, run, x, layer: str, *, data_dir, batch_size: int):
        """``(values [N, D], ids or None)``: pooled features of ``layer`` for ``x`` (inputs or a data source)."""
