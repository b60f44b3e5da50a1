"""``TextFamily``: what the fit pipeline and a finished run ask of texts (see ``families.base``)."""

from __future__ import annotations

from pathlib import Path

from deepstrata import runfiles
from deepstrata.families.base import Built, Family, FitContext, Prepared
from deepstrata.model_names import TEXT_MODELS

TASK = "text-classification"
MODELS = TEXT_MODELS
TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")


class TextFamily(Family):
    name = "text"
    task = TASK
    models = MODELS
    expects = ("labelled texts (a .csv/.tsv/.jsonl/.parquet table, a fastText .txt, or a folder or archive of "
               "class sub-folders of .txt files)")
    wrong_kinds = ("an image data set", "an image file", "an interaction log")

    def claims(self, data) -> bool:
        """A table or text file, an aclImdb folder or archive, or a text data object."""
        if data is not None and not isinstance(data, (str, Path)):
            return getattr(data, "task", "text") == "text"
        if isinstance(data, (str, Path)):
            lowered = Path(data).name.lower()
            return lowered.endswith(TEXT_SUFFIXES) or "aclimdb" in lowered
        return False

    # --- fit ----------------------------------------------------------------------------
    def resolve_config(self, data, model, config, overrides: dict):
        from deepstrata.families.text.config import resolve_text_config
        from deepstrata.families.text.fit import check_config

        cfg = resolve_text_config(data, model, config, overrides)
        check_config(cfg)  # refused before anything is read or written
        return cfg

    def read(self, cfg, data) -> Prepared:
        from deepstrata.families.text.fit import read

        return read(cfg, data)

    def describe(self, cfg, prepared: Prepared, load_seconds: float) -> list[str]:
        from deepstrata.families.text.fit import describe

        return describe(cfg, prepared, load_seconds)

    def check_world(self, cfg, prepared: Prepared, world_size: int) -> None:
        from deepstrata.families.text.fit import check_world

        check_world(cfg, world_size)

    def build(self, cfg, prepared: Prepared, fit: FitContext) -> Built:
        from deepstrata.families.text.fit import build

        return build(cfg, prepared, fit)

    def write_records(self, cfg, prepared: Prepared, built: Built, fit: FitContext) -> None:
        from deepstrata.families.text.fit import write_records

        write_records(cfg, built, fit)

    def score(self, cfg, prepared: Prepared, built: Built, result, fit: FitContext) -> list[dict]:
        from deepstrata.families.text.fit import score

        return score(cfg, prepared, built, result, fit)

    def baselines(self, cfg, prepared: Prepared, built: Built, fit: FitContext) -> tuple[list[dict], dict]:
        from deepstrata.families.text.fit import baselines

        rows, skipped = baselines(cfg, prepared, fit)
        return rows, ({"skipped": skipped} if skipped else {})

    def comparison(self, cfg, prepared: Prepared, rows: list[dict]) -> dict:
        from deepstrata.families.text.fit import comparison

        return comparison(cfg, prepared, rows)

    def report_sections(self, cfg, prepared: Prepared, built: Built, rows: list[dict]) -> list[tuple[str, str]]:
        from deepstrata.families.text.fit import report_sections

        return report_sections(prepared, built, rows)

    # --- a finished run -----------------------------------------------------------------
    def check_info(self, info: dict, path) -> None:
        if len(runfiles.string_list(info, "classes", path)) < 2:
            raise runfiles.damaged(path, "'classes' must name at least 2 classes")
        text = runfiles.field(info, "text", dict, path)
        runfiles.field(text, "tokenizer", str, path, where="text.")
        runfiles.field(text, "max_length", int, path, where="text.")

    def predict(self, run, inputs):
        from deepstrata.families.text.verbs import predict_texts

        return predict_texts(run, inputs)

    serve_inputs = "texts"

    def decode_input(self, run, raw, name: str):
        """A text and its token ids (the run's tokenizer, read once per ``Run``), as ``predict`` tokenizes it."""
        from deepstrata.errors import DataError
        from deepstrata.families.text.verbs import run_tokenizer

        if not isinstance(raw, str):
            raise DataError(f"{name}: expected a string, got {type(raw).__name__}")
        if getattr(run, "_tokenizer", None) is None:
            run._tokenizer = run_tokenizer(run)
        return raw, run._tokenizer.encode([raw]).ids[0]

    def predict_decoded(self, run, decoded: list, names: list[str]) -> list:
        import torch

        from deepstrata.families.text.tasks import predict_logits
        from deepstrata.families.text.verbs import TextPrediction

        probs = torch.softmax(predict_logits(run.model, [ids for _, ids in decoded], run.device), dim=1)
        classes = run.classes
        out = []
        for (text, _), row in zip(decoded, probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            out.append(TextPrediction(text, classes[best], row[best], dict(zip(classes, row))))
        return out

    def embed_decoded(self, run, decoded: list):
        return run.embed([text for text, _ in decoded])

    def update(self, run, data, out, epochs, quiet, replay=None):
        from deepstrata.families.text.update import update_run
        from deepstrata.families.updating import options

        path, _ = update_run(run, options(data, out, epochs, replay, quiet))
        return path

    def curve_scratch(self, options: dict, spec: dict):
        from deepstrata.families.text.transfer import curve_scratch

        return curve_scratch(options, spec)

    def export(self, run):
        from deepstrata.families.text.export import export_plan

        return export_plan(run)

    def evaluate(self, run, data, data_dir):
        from deepstrata.families.text.verbs import evaluate_text

        if data is not None:
            self.check_source(run, data, "evaluate")
        return evaluate_text(run, data)

    def predict_inputs(self, run, paths: list[str], file, column) -> list:
        """Texts: the PATH arguments are texts themselves; ``--file`` adds a file's texts."""
        from deepstrata.errors import DataError
        from deepstrata.families.text.verbs import read_input_texts

        texts = list(paths)
        if file:
            texts += read_input_texts(file, run, column)
        if not texts:
            raise DataError("predict: give texts as arguments or --file FILE")
        return texts

    def render_predictions(self, predictions: list, as_json: bool) -> str:
        import json

        if as_json:
            return json.dumps([p.to_dict() for p in predictions], indent=2, ensure_ascii=False)
        lines = []
        for p in predictions:
            shown = " ".join(p.text.split())
            lines.append(f"{p.label}\t{p.probability:.4f}\t{shown[:80] + ('…' if len(shown) > 80 else '')}")
        return "\n".join(lines)

    def embed_file(self, run, data, out, per_token: bool, column) -> str:
        from deepstrata.families.text.verbs import read_input_texts, save_text_features

        texts = read_input_texts(data, run, column)
        features = self.embed(run, texts, per_token)
        if per_token:
            path = features.save(out)
            return (f"{path}: {features.vectors.shape[0]} token vectors of {features.vectors.shape[1]} for "
                    f"{len(texts)} texts")
        path = save_text_features(features, out)
        return f"{path}: {features.shape[0]} vectors of {features.shape[1]}"

    def embed(self, run, texts, per_token: bool):
        from deepstrata.families.text.verbs import embed_texts

        return embed_texts(run, texts, per_token)

    def embed_source(self, run, data, layer: str, *, rows, column, data_dir, batch_size: int):
        from deepstrata.families.text.embed import embed_source

        return embed_source(run, data, layer, rows=rows, column=column, data_dir=data_dir, batch_size=batch_size)

    def embed_query(self, run, query, layer: str, *, rows: str, batch_size: int):
        from deepstrata.families.text.embed import embed_query

        return embed_query(run, query, layer, rows=rows, batch_size=batch_size)

    def inspect_sample(self, run, data, *, samples: int, seed: int, data_dir):
        from deepstrata.families.text.inspect import load_text_sample

        return load_text_sample(run, data, samples=samples, seed=seed)

    def inspect_views(self, result, model, control, sample, names, *, maximize: bool, seed: int, token,
                      batch_size: int) -> None:
        from deepstrata.families.text.inspect import text_views

        text_views(result, model, sample, names, token=token)

    def features(self, run, x, layer: str, *, data_dir, batch_size: int):
        from deepstrata.families.text.inspect import text_inputs
        from deepstrata.inspect.taps import extract

        if isinstance(x, (str, Path)):
            self.check_source(run, x, "features")
        x, mask = text_inputs(run, x)
        return extract(run.model, x, [layer], mask=mask, trim=True, batch_size=batch_size).pooled[layer], None
