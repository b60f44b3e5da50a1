"""``ImageFamily``: what the fit pipeline and a finished run ask of images (see ``families.base``)."""

from __future__ import annotations

import sys

from deepstrata import runfiles
from deepstrata.families.base import Built, Family, FitContext, Prepared
from deepstrata.families.image import fit as image_fit
from deepstrata.model_names import IMAGE_MODELS

MODELS = IMAGE_MODELS
# Pixels an image sent to ``deepstrata serve`` may have: a few kilobytes of PNG can declare gigapixels.
MAX_DECODE_PIXELS = 50_000_000


class ImageFamily(Family):
    name = "image"
    task = image_fit.TASK
    models = MODELS
    expects = ("images (a named image set such as digits or mnist, an image folder, IDX files, CIFAR batches "
               "or shards)")
    wrong_kinds = ("a table", "an interaction log")
    # measured on digits, seeds 0-7 (BENCHMARKS.md, "Fast by default"): accuracy kept, training shorter
    plateau_measured = True
    # channels-last measured on the CNN (0.74-0.77x the fp32 step time on 2 CPU cores, BENCHMARKS.md "Fast by
    # default"); the other two are convolutional networks of the same kind. The MLP flattens its input.
    convolutional_models = ("cnn", "whitened-cnn", "efficientnet-lite0")
    # Below this side, auto keeps NCHW: on digits (8x8) channels-last saved about 1 s of a 19 s command but ended
    # below 99.0% test accuracy on 3 of 8 seeds, NCHW on none (BENCHMARKS.md): the demo keeps what was measured.
    channels_last_min_side = 16

    def claims(self, data) -> bool:
        return False  # the default: what no other family claims is read as images

    # --- fit ----------------------------------------------------------------------------
    def resolve_config(self, data, model, config, overrides: dict):
        from deepstrata.families.image.config import resolve_image_config

        return resolve_image_config(config, data=data, model=model, **overrides)

    def input_side(self, prepared: Prepared) -> int | None:
        return image_fit.input_side(prepared)

    def read(self, cfg, data) -> Prepared:
        return image_fit.read(cfg)

    def describe(self, cfg, prepared: Prepared, load_seconds: float) -> list[str]:
        return image_fit.describe(prepared, load_seconds)

    def build(self, cfg, prepared: Prepared, fit: FitContext) -> Built:
        return image_fit.build(cfg, prepared, fit)

    def write_records(self, cfg, prepared: Prepared, built: Built, fit: FitContext) -> None:
        image_fit.write_records(cfg, built, fit)

    def score(self, cfg, prepared: Prepared, built: Built, result, fit: FitContext) -> list[dict]:
        return image_fit.score(cfg, prepared, built, result, fit)

    def baselines(self, cfg, prepared: Prepared, built: Built, fit: FitContext) -> tuple[list[dict], dict]:
        def say(message: str) -> None:
            if not fit.quiet:
                print(message, file=sys.stderr)

        return image_fit.baselines(cfg, prepared, built, say), {}

    def comparison(self, cfg, prepared: Prepared, rows: list[dict]) -> dict:
        return image_fit.comparison(cfg, prepared, rows)

    # --- a finished run -----------------------------------------------------------------
    def check_info(self, info: dict, path) -> None:
        if len(runfiles.string_list(info, "classes", path)) < 2:
            raise runfiles.damaged(path, "'classes' must name at least 2 classes")
        shape = runfiles.field(info["spec"], "in_shape", list, path, where="spec.")
        if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
            raise runfiles.damaged(path, f"spec.in_shape is {shape!r}, expected [channels, height, width]")

    def predict(self, run, inputs):
        from deepstrata.families.image.verbs import predict

        return predict(run, inputs)

    def predict_inputs(self, run, paths: list[str], file, column) -> list:
        from deepstrata.errors import DeepstrataError

        if not paths:
            raise DeepstrataError("predict: give image files or folders")
        return paths

    serve_inputs = "images"

    def decode_input(self, run, raw, name: str):
        """Image bytes as ``predict`` decodes a file: uint8 ``[C, H, W]``, gray or RGB as the model takes."""
        import torch

        from deepstrata.data.image_files import decode_image, describe_error, probe_image
        from deepstrata.errors import DataError
        from deepstrata.families.image.verbs import run_preprocess

        probed = probe_image(raw)
        if isinstance(probed, str):  # Pillow names the in-memory file object: a name the sender never saw
            raise DataError(f"{name}: unreadable image ({probed.split(' <_io.')[0]})")
        if probed[1][0] * probed[1][1] > MAX_DECODE_PIXELS:
            raise DataError(f"{name}: {probed[1][0]}x{probed[1][1]} pixels, more than the {MAX_DECODE_PIXELS:,} "
                            "an image may have to be decoded")
        channels, height, width = run.info["spec"]["in_shape"]
        try:
            pixels = decode_image(raw, channels, (height, width), run_preprocess(run))
        except Exception as exc:  # any decoder failure is a bad image, reported by name
            raise DataError(f"{name}: unreadable image ({describe_error(exc)})") from None
        return torch.tensor(pixels).permute(2, 0, 1).contiguous()  # a copy: Pillow's array is read-only

    def predict_decoded(self, run, decoded: list, names: list[str]) -> list:
        import torch

        from deepstrata.families.image.verbs import logits
        from deepstrata.families.prediction import Prediction

        best, index = torch.softmax(logits(run, torch.stack(decoded)), dim=1).max(dim=1)
        return [Prediction(n, run.classes[i], float(p)) for n, i, p in zip(names, index.tolist(), best.tolist())]

    def embed_decoded(self, run, decoded: list):
        import torch

        return run.embed(torch.stack(decoded))

    def render_predictions(self, predictions: list, as_json: bool) -> str:
        import json

        if as_json:
            return json.dumps([p.to_dict() for p in predictions], indent=2)
        width = max(len(p.path) for p in predictions)
        return "\n".join(f"{p.path:<{width}}  {p.label}  {p.probability:.4f}" for p in predictions)

    def update(self, run, data, out, epochs, quiet, replay=None):
        from deepstrata.families.image.update import update_run
        from deepstrata.families.updating import options

        path, _ = update_run(run, options(data, out, epochs, replay, quiet))
        return path

    def curve_scratch(self, options: dict, spec: dict):
        from deepstrata.families.image.transfer import curve_scratch

        return curve_scratch(options, spec)

    def export(self, run):
        from deepstrata.families.image.export import export_plan

        return export_plan(run)

    def evaluate(self, run, data, data_dir):
        from deepstrata.families.image.verbs import evaluate

        return evaluate(run, data, data_dir)

    def inspect_sample(self, run, data, *, samples: int, seed: int, data_dir):
        from deepstrata.families.image.inspect import load_image_sample

        return load_image_sample(run, data, samples=samples, seed=seed, data_dir=data_dir)

    def inspect_views(self, result, model, control, sample, names, *, maximize: bool, seed: int, token,
                      batch_size: int) -> None:
        from deepstrata.families.image.inspect import image_views

        image_views(result, model, sample, names, maximize=maximize, seed=seed, batch_size=batch_size)

    def embed_source(self, run, data, layer: str, *, rows, column, data_dir, batch_size: int):
        from deepstrata.families.image.embed import embed_source

        return embed_source(run, data, layer, rows=rows, column=column, data_dir=data_dir, batch_size=batch_size)

    def embed_query(self, run, query, layer: str, *, rows: str, batch_size: int):
        from deepstrata.families.image.embed import embed_query

        return embed_query(run, query, layer, rows=rows, batch_size=batch_size)

    def features(self, run, x, layer: str, *, data_dir, batch_size: int):
        from deepstrata.families.image.inspect import features

        return features(run, x, layer, data_dir=data_dir, batch_size=batch_size)
