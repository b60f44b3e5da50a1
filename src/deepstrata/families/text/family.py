"""``TextFamily``: what the fit pipeline and a finished run ask of texts (see ``families.base``)."""

from __future__ import annotations

from pathlib import Path

from deepstrata import runfiles
from deepstrata.families.base import Family

TASK = "text-classification"
MODELS = ("transformer", "minilm")
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

    # --- a finished run -----------------------------------------------------------------
    def check_info(self, info: dict, path) -> None:
        if len(runfiles.string_list(info, "classes", path)) < 2:
            raise runfiles.damaged(path, "'classes' must name at least 2 classes")
        text = runfiles.field(info, "text", dict, path)
        runfiles.field(text, "tokenizer", str, path, where="text.")
        runfiles.field(text, "max_length", int, path, where="text.")

    def predict(self, run, inputs):
        from deepstrata.families.text.classification import predict_texts

        return predict_texts(run, inputs)

    def evaluate(self, run, data, data_dir):
        from deepstrata.families.text.classification import evaluate_text

        if data is not None:
            self.check_source(run, data, "evaluate")
        return evaluate_text(run, data)

    def embed(self, run, texts, per_token: bool):
        from deepstrata.families.text.classification import embed_texts

        return embed_texts(run, texts, per_token)

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
