"""The run directory: everything a finished (or interrupted) run leaves behind.

```
RUN/
  config.yaml          resolved configuration
  model.json           model spec, classes, input shape: enough to rebuild the model
  provenance.json      versions, git commit, device, command, date
  metrics.jsonl        one JSON object per epoch
  checkpoints/         step-N/ directories behind an atomic `latest` pointer (resume), best.safetensors
  comparison.json      learned model vs hand-engineered baselines on the test split
  confusion.json       the learned model's confusion matrix on the test split
  report.html          one self-contained page
  .deepstrata-run.json the marker: format, version, status (running | failed | finished)
  .lock                while a fit uses the directory: its pid and host
```
How a fit creates, locks, replaces and finishes one is ``deepstrata.rundir``.
``Run`` reads such a directory; every verb after ``fit`` (evaluate, predict, compare,
inspect …) starts from one and asks the run's family (``deepstrata.families``) for what differs.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from deepstrata import runfiles
from deepstrata.config import RunConfig
from deepstrata.engine import checkpoint as ckpt
from deepstrata.engine import distributed
from deepstrata.errors import RunError
from deepstrata.models.registry import build_model
from deepstrata.records import MODEL_FILE


class Run:
    """A run directory opened for use: the trained model plus what was recorded about it."""

    def __init__(self, path: str | Path, *, device: str = "cpu") -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunError(f"{self.path}: run directory not found")
        info_path = self.path / MODEL_FILE
        if not info_path.is_file():
            raise RunError(f"{self.path}: not a deepstrata run directory ({MODEL_FILE} not found)")
        self.info = runfiles.read_json(info_path)
        self.family = _family_of(self.info, info_path)
        self._config: RunConfig | None = None
        self.device = distributed.rank_device(device)
        self._model: nn.Module | None = None

    @property
    def config(self) -> RunConfig:
        """The run's resolved ``config.yaml``, read when first needed; a missing or damaged one is a ``RunError``.

        Never a default in its place: a verb that needs the run's data source, split or
        preprocessing would otherwise answer for another run (``features`` of a text run once
        read the default source ``digits`` as one text).
        """
        if self._config is None:
            self._config = runfiles.read_config(self.path / "config.yaml")
            if self._config.task != self.task:
                raise runfiles.damaged(self.path / "config.yaml", f"task {self._config.task!r}, but model.json "
                                                                  f"says {self.task!r}")
        return self._config

    @property
    def task(self) -> str:
        return self.family.task

    @property
    def kind(self) -> str:
        """What the run is, for messages: 'an image-classification run (cnn)'."""
        family = self.info.get("spec", {}).get("family", "?")
        article = "an" if self.task[0] in "aeiou" else "a"
        return f"{article} {self.task} run ({family})"

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    def load_model(self) -> nn.Module:
        """A fresh copy of the model with its best weights (CPU, train mode): what ``update`` continues from."""
        info_path = self.path / MODEL_FILE
        try:
            model = build_model(self.info["spec"])
        except RunError as err:  # the registry's "model.json: unknown model family ..."
            raise runfiles.damaged(info_path, str(err).removeprefix(f"{MODEL_FILE}: ")) from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise runfiles.damaged(info_path, f"its model spec cannot be built ({type(err).__name__}: "
                                              f"{str(err).splitlines()[0] if str(err) else '-'})") from None
        weights = self.path / "checkpoints" / "best.safetensors"
        if not weights.is_file():
            raise RunError(f"{self.path}: no trained weights (checkpoints/best.safetensors not found); "
                           "did the run finish an epoch?")
        try:
            ckpt.load_weights(weights, model)
        except RunError as err:
            raise runfiles.rewrap(err, weights) from None
        return model

    @property
    def model(self) -> nn.Module:
        """The model with its best weights, built lazily and kept in eval mode."""
        if self._model is None:
            self._model = self.load_model().to(self.device).eval()
        return self._model

    def comparison(self) -> dict:
        """``comparison.json``, checked: an object whose ``rows`` are objects with a name and metrics."""
        from deepstrata.report import comparison_rows

        path = self.path / "comparison.json"
        if not path.is_file():
            raise RunError(f"{self.path}: no comparison.json; the run did not finish")
        comparison = runfiles.read_json(path)
        try:
            comparison_rows(comparison)
        except RunError as err:
            raise runfiles.damaged(path, str(err).removeprefix("comparison: ")) from None
        return comparison

    def history(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return runfiles.read_jsonl(path)

    def compare(self) -> str:
        """The comparison table as text, as ``deepstrata compare`` prints it."""
        from deepstrata.report import format_comparison_table

        return format_comparison_table(self.comparison())

    def recommend(self, user, k: int = 10) -> dict:
        """Top-``k`` unseen items for ``user`` (recommendation runs); unknown users get popular items."""
        return self.family.recommend(self, user, k)

    def similar(self, item, k: int = 10) -> dict:
        """The ``k`` items nearest to ``item`` in the learned embedding space (recommendation runs)."""
        return self.family.similar(self, item, k)

    def update(self, data, out: str | Path | None = None, *, epochs: int | None = None,
               replay: float | None = None, quiet: bool = True) -> "Run":
        """Continue training on new data; returns the updated run (``out``, or this run's path, replaced once done).

        A recommendation run takes new interactions (new users and items too); an image or
        text run new labelled examples, new classes too (the head grows, old rows kept), with
        ``replay`` (default ``families.updating.DEFAULT_REPLAY``) of its old training data mixed in.
        """
        return Run(self.family.update(self, data, out, epochs, quiet, replay=replay), device=str(self.device))

    def update_summary(self, record: dict | None = None) -> list[str]:
        """The lines ``deepstrata update`` prints for an update ``record`` (default: this run's last one)."""
        return self.family.update_summary(record if record is not None else self.info["updates"][-1])

    def embed(self, data=None, layer: str | None = None, *, per_token: bool = False, rows: str | None = None,
              text_column: str | None = None, data_dir: str | None = None, batch_size: int = 256):
        """One vector per example of ``data`` at ``layer``: an ``Embeddings`` (vectors, ids, labels, layer).

        ``data``: a data source (default: the run's own) — images (ids: file paths in a folder,
        ``train/i`` / ``test/i`` otherwise), texts (ids: line numbers, a table's ``id`` column or
        row numbers), or for a recommendation run its own log, whose ``rows`` are ``items``
        (default) or ``users``. ``layer``: a layer name, or None for ``features``, the vector the
        head classifies; an unknown name raises ``ConfigError`` listing the model's layers.

        In-memory inputs — a list of texts, a tensor of images ``[N, C, H, W]``, a list of user or
        item ids — have no ids of their own and give the matrix ``[N, D]``, as ``run.embed(texts)``
        always did; with ``per_token`` (text runs) one vector per token with the tokens (``TokenFeatures``).
        """
        from deepstrata.embeddings import EmbeddingMeta, Embeddings
        from deepstrata.inspect.layer_vectors import check_layer

        if per_token:
            return self.family.embed(self, data, True)
        layer = check_layer(self.model, layer)
        got = self.family.embed_source(self, data, layer, rows=rows, column=text_column, data_dir=data_dir,
                                       batch_size=batch_size)
        if data is not None and not isinstance(data, (str, Path)):
            return got.vectors
        meta = EmbeddingMeta(run=str(self.path.resolve()), weights=self.weights_fingerprint(), layer=got.layer,
                             dim=int(got.vectors.shape[1]), rows=got.rows, task=self.task)
        return Embeddings(got.vectors, got.ids, got.labels, meta, source=got.source)

    def weights_fingerprint(self) -> str:
        """Which weights the run's verbs use (sha256 of best.safetensors, 16 hex digits), read once per ``Run``."""
        if getattr(self, "_fingerprint", None) is None:
            from deepstrata.embeddings import weights_fingerprint

            self.model  # the weights are checked (present, loadable) before they are hashed
            self._fingerprint = weights_fingerprint(self.path)
        return self._fingerprint

    def search(self, index, query, k: int = 10, *, layer: str | None = None, batch_size: int = 256) -> dict:
        """The ``k`` rows of ``index`` nearest to ``query`` by cosine: ``{"query", "results": [{id, label, score}]}``.

        ``index``: an ``Embeddings`` or the file ``embed`` wrote (.parquet, or .npy with its .ids.json).
        ``query``: an image file (image runs), a text (text runs), an item id — or a user id when
        the index holds users — (recommendation runs), embedded by this run at the index's layer.
        An index made by another run, or by other weights of this one, is refused (``RunError``);
        so is a ``layer`` other than the index's. Exact search: one chunked matrix product.
        """
        from deepstrata.embeddings import Embeddings, load_embeddings
        from deepstrata.errors import ConfigError, DataError
        from deepstrata.inspect.layer_vectors import check_layer
        from deepstrata.vector_search import cosine_top_k

        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"-k: got {k!r}, expected a positive integer")
        emb = index if isinstance(index, Embeddings) else load_embeddings(index)
        where = f"the embeddings of {emb.source or 'a data source'}" if isinstance(index, Embeddings) else index
        if emb.meta.weights != self.weights_fingerprint():
            made = (f"other weights of this run ({emb.meta.weights}; now {self.weights_fingerprint()})"
                    if emb.meta.run == str(self.path.resolve()) else f"the run {emb.meta.run}, not by {self.path}")
            raise RunError(f"--index {where}: embedded by {made}; embed it with this run first "
                           f"(`deepstrata embed {self.path} --out FILE`)")
        if layer is not None and check_layer(self.model, layer) != emb.layer:
            raise ConfigError(f"--layer: {layer!r}, but {where} holds layer {emb.layer!r}; a query is embedded at "
                              "the index's layer (leave --layer out)")
        check_layer(self.model, emb.layer, option=f"--index {where}")
        vector = self.family.embed_query(self, query, emb.layer, rows=emb.meta.rows, batch_size=batch_size)
        if vector.shape[1] != emb.dim:
            raise DataError(f"--index {where}: {emb.dim}-d vectors, but the query embeds to {vector.shape[1]}-d "
                            f"at layer {emb.layer}")
        scores, found = cosine_top_k(emb.unit(), vector, k, index_is_unit=True)
        return {"query": query, "results": [{"id": emb.ids[i], "label": emb.labels[i], "score": round(float(v), 6)}
                                            for v, i in zip(scores[0].tolist(), found[0].tolist())]}

    def features(self, x, layer: str = "stage2", *, data_dir: str | None = None, with_ids: bool = False,
                 batch_size: int = 256):
        """Pooled features ``[N, D]`` of one named layer for ``x``: inputs, or a data source string.

        ``x``: for an image run a tensor of images or a data source (every image of it); for
        a text run a list of texts, or a file of texts (a ``str`` is always a file name); for a
        recommendation run user ids, or the run's own source for every user. A recommender's
        ``item_embedding`` is its item table: one row per item. A name the model does not have
        raises ``ConfigError`` listing the ones it has. ``with_ids`` returns ``(features, ids)``,
        the user or item id of each row (``None`` for images and texts).
        """
        from deepstrata.inspect.taps import parse_layers

        parse_layers(self.model, [layer])
        values, ids = self.family.features(self, x, layer, data_dir=data_dir, batch_size=batch_size)
        return (values, ids) if with_ids else values

    def write_features(self, x, layer: str, out: str | Path, *, data_dir: str | None = None) -> str:
        """``features`` of ``x`` (default: the run's own source) written to ``out`` (.npy, atomically); returns
        the line ``deepstrata features`` prints. A recommender's rows are users or items: their ids go to
        ``out`` with the suffix ``.ids.json``, one per row, in order."""
        from deepstrata.embeddings import write_matrix
        from deepstrata.errors import ConfigError

        out = Path(out)
        if out.suffix != ".npy":
            raise ConfigError(f"--out: {out}: expected a .npy file name")
        values, ids = self.features(self.config.data.source if x is None else x, layer=layer, data_dir=data_dir,
                                    with_ids=True)
        # a recommender's rows are users or items: say which, row by row
        id_file = write_matrix(out, values, None if ids is None else [str(i) for i in ids])
        line = f"{out}: {values.shape[0]} x {values.shape[1]} features of layer {layer}"
        return line + (f"; row ids in {id_file}" if id_file is not None else "")

    def write_embeddings(self, data: str | Path | None, out: str | Path, *, per_token: bool = False,
                         text_column: str | None = None, layer: str | None = None, rows: str | None = None,
                         data_dir: str | None = None) -> str:
        """``embed`` of ``data`` (default: the run's own source) written to ``out``; returns the printed line.

        ``.parquet`` (id, label, vector and metadata) or ``.npy`` (with ``.ids.json``), see
        ``deepstrata.embeddings``. Text runs also write per-token vectors (``per_token``:
        ``.npz``/``.parquet``) and per-text ``.npz``, as before.
        """
        from deepstrata.embeddings import SUFFIXES, sidecar
        from deepstrata.errors import ConfigError

        out = Path(out)
        if per_token or out.suffix.lower() == ".npz":
            if layer is not None or rows is not None:
                raise ConfigError(f"--out {out}: --layer and --rows apply to one vector per example (.parquet or "
                                  ".npy), not to per-token or .npz output")
            return self.family.embed_file(self, data, out, per_token, text_column)
        if out.suffix.lower() not in SUFFIXES:
            raise ConfigError(f"--out {out}: expected a .parquet or .npy file name")
        emb = self.embed(self.config.data.source if data is None else str(data), layer, rows=rows,
                         text_column=text_column, data_dir=data_dir)
        emb.save(out)
        where = out if out.suffix.lower() == ".parquet" else sidecar(out)
        return (f"{out}: {len(emb)} x {emb.dim} vectors of layer {emb.layer} ({emb.meta.rows}: {emb.source}); "
                f"ids and labels in {where}")

    def export(self, format: str, out: str | Path | None = None, *, overwrite: bool = False):
        """Write the model as ``format`` (``onnx`` or ``pt2``) to ``out`` (default ``RUN/export/model.onnx`` or
        ``.pt2``), with ``NAME.contract.json`` beside it (inputs, preprocessing, classes or ids) and a text run's
        tokenizer; verified against PyTorch on the run's own data before anything is written. Returns an
        ``export.api.Exported``; a file deepstrata did not write is replaced only with ``overwrite``."""
        from deepstrata.export.api import export_run

        return export_run(self, format, out, overwrite=overwrite)

    def inspect(self, data: str | None = None, **kwargs):
        """Probes, CKA, projections and pictures of every layer (see ``deepstrata.inspect.inspect_run``)."""
        from deepstrata.inspect.api import inspect_run

        return inspect_run(self, data, **kwargs)

    def predict(self, paths: str | Path | list[str | Path]) -> list:
        """Label and probability for each image file (or every image in a folder); for a text run, each string."""
        return self.family.predict(self, paths)

    def evaluate(self, data: str | None = None, *, data_dir: str | None = None) -> dict:
        """Accuracy and macro-F1 of the kept model on a data source (ranking metrics for a recommender).

        On the source the run was trained on, the run's own test split is used (rebuilt
        from its seed); on a source with an official test split, that split; otherwise
        every example. Class names are matched by name, and the answer says which split.
        """
        return self.family.evaluate(self, data, data_dir)


def _family_of(info: dict, path: Path):
    """The family of a run's ``model.json``, with the fields every verb relies on checked, so that a damaged
    file is named rather than met as a KeyError later."""
    from deepstrata import families

    task = info.get("task", families.get(families.DEFAULT).task) if isinstance(info, dict) else None
    family = families.for_task(task) if isinstance(task, str) else None
    if family is None:
        raise runfiles.damaged(path, f"unknown task {task!r}; expected one of {', '.join(families.tasks())}")
    spec = runfiles.field(info, "spec", dict, path)
    runfiles.field(spec, "family", str, path, where="spec.")
    family.check_info(info, path)
    return family


def load(path: str | Path, *, device: str = "cpu") -> Run:
    """Open a run directory written by ``fit``."""
    return Run(path, device=device)
