"""An image run's export plan: float pixels in [0, 1] in, class probabilities out, as ``run.predict`` computes.

``predict`` decodes a file to uint8 ``[C, H, W]`` (the run's recorded preprocessing, or a
squash to the input size), divides by 255, lets the model normalise with the training
split's mean and std (buffers inside it), averages test-time-augmented views if the run
trained with them, and reports the softmax. Everything after the division is tensor work
and goes into the wrapper; decoding and resizing a file is the consumer's, and the
contract says exactly how. Probabilities rather than logits: they are what ``predict``
reports and what the tolerance is stated on.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deepstrata.errors import DataError
from deepstrata.export.plan import Dim, ExportPlan, TensorSpec
from deepstrata.families.image.task import flip_mode, tta_views

BATCH_SIZES = (8, 3)


class ImageProbabilities(nn.Module):
    """``images [N, C, H, W]`` float32 in [0, 1] -> ``probabilities [N, classes]``: the model (which normalises
    its input), test-time augmentation when the run used it, softmax."""

    def __init__(self, model: nn.Module, *, tta: bool, mirror: bool) -> None:
        super().__init__()
        self.model, self.tta, self.mirror = model, tta, mirror

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.tta:
            logits = sum(weight * self.model(view) for weight, view in tta_views(images, self.mirror))
        else:
            logits = self.model(images)
        return torch.softmax(logits.float(), dim=1)


def export_plan(run) -> ExportPlan:
    channels, height, width = run.info["spec"]["in_shape"]
    train = run.config.train
    mirror = flip_mode(train.flip, channels) != "none"
    model = run.load_model().eval()
    wrapper = ImageProbabilities(model, tta=train.tta, mirror=mirror).eval()
    images, source = _real_images(run, sum(BATCH_SIZES))
    batches = [(images[:BATCH_SIZES[0]],), (images[BATCH_SIZES[0]:],)]
    preprocess = (run.info.get("data") or {}).get("preprocess")
    return ExportPlan(
        module=wrapper,
        inputs=[TensorSpec("images", "float32", ("batch", channels, height, width),
                           "decoded pixels / 255, NCHW, unnormalised (the model applies mean and std)")],
        outputs=[TensorSpec("probabilities", "float32", ("batch", len(run.classes)),
                            "softmax over the classes, in the order of 'classes'")],
        dims=[Dim("batch")],
        batches=batches,
        batch_source=source,
        contract={
            "image": {
                "layout": "NCHW", "channels": channels, "height": height, "width": width,
                "mode": "L (grey)" if channels == 1 else "RGB",
                "scale": "uint8 pixel values divided by 255 (float32 in [0, 1])",
                "preprocess": preprocess,
                "resize": _resize(preprocess, height, width),
            },
            "normalisation": {
                "mean": [round(v, 8) for v in model.mean.flatten().tolist()],
                "std": [round(v, 8) for v in model.std.flatten().tolist()],
                "applied": "inside the exported model, (x - mean) / std per channel: do not apply it again",
            },
            "test_time_augmentation": {"used": bool(train.tta), "mirror": bool(train.tta and mirror),
                                       "applied": "inside the exported model" if train.tta else None},
            "classes": run.classes,
        },
    )


def _resize(preprocess: dict | None, height: int, width: int) -> str:
    """How ``predict`` brings an image file to the input, for a consumer to repeat."""
    if preprocess is not None:
        from deepstrata.data.image_preprocess import Preprocess

        return (f"EXIF orientation applied; {Preprocess.from_record(preprocess).describe()} to {width}x{height} "
                "(Pillow bilinear, aspect kept); then converted to the mode above")
    return (f"converted to the mode above, then resized to {width}x{height} (Pillow bilinear, aspect not kept), "
            "as predict does for this run's files")


def _real_images(run, count: int) -> tuple[torch.Tensor, str]:
    """``count`` images of the run's own data as the wrapper takes them, and what they are.

    A folder source decodes a few files spread over it (decoding the whole folder, as
    ``inspect`` does, is what a shard set or a named data set needs but a folder does not);
    other sources take the held-out sample ``inspect`` uses. A source that cannot be read any
    more (moved, deleted) gives seeded random pixels, and the line says so.
    """
    from deepstrata.data.images import list_image_files, load_image_files
    from deepstrata.data.shards import is_shard_dir
    from deepstrata.families.image.verbs import own_shards, run_preprocess

    channels, height, width = run.info["spec"]["in_shape"]
    source = run.config.data.source
    try:
        if Path(source).is_dir() and not is_shard_dir(source) and not own_shards(run, source):
            found = list_image_files(source)
            picked = [found[i * len(found) // count] for i in range(min(count, len(found)))]
            images = load_image_files(picked, channels, (height, width), run_preprocess(run)).float().div_(255.0)
            what = f"{len(picked)} image files of {source}"
        else:
            sample = run.family.inspect_sample(run, None, samples=count, seed=0, data_dir=None)
            images, what = sample.inputs, f"{len(sample.labels)} held-out images of {source}"
    except (DataError, OSError) as err:
        images, what = None, f"random pixels ({str(err).splitlines()[0][:120]})"
    if images is None or len(images) < count:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand((count, channels, height, width), generator=generator)
        what = what if what.startswith("random") else f"random pixels ({what}: too few)"
    return images.contiguous(), what
