"""The examples an inspection looks at: held out from training, sampled, labelled.

Probes must be scored on examples the network never fitted, so on the run's own source
the sample is drawn from its validation and test splits (rebuilt from the run's seed);
on another source from its official test split, else from all of it. The sample is a
fixed random subset (seeded), and what it is gets stated in the report.

Each task reads its data here, into one shape (``InspectData``), so the rest of the
inspection does not care whether the inputs are images, token ids or item ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from deepstrata.errors import ConfigError, DataError, RunError

IMAGE_TASK = "image-classification"
TEXT_TASK = "text-classification"
RECOMMEND_TASK = "recommendation"
TASKS = (IMAGE_TASK, TEXT_TASK, RECOMMEND_TASK)


@dataclass
class InspectData:
    """Model inputs (a tensor or a tuple passed as ``model(*inputs)``), labels, and what they are.

    ``labels`` index ``classes``; they colour the projections and, when ``probe`` is true
    (labels that are the task's classes), are what the probes predict. ``mask`` ``[N, T]``
    marks real tokens of token-sequence inputs; ``trim`` says padding is on the right and
    may be cut per batch. ``images`` (float ``[N, C, H, W]`` in [0, 1]) is set for image
    tasks and enables the pictures; ``extra`` holds what a task's own views need.
    """

    inputs: torch.Tensor | tuple[torch.Tensor, ...]
    labels: np.ndarray
    classes: list[str]
    description: str
    pool_size: int
    mask: torch.Tensor | None = None
    images: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    probe: bool = True
    label_name: str = "class"
    trim: bool = False
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """A seeded random subset of ``range(n)`` of at most ``size`` rows, in the original order."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _image_source(run, data: str | None, data_dir: str | None):
    """The run's source (or ``data``) read and shaped to the model's input."""
    from deepstrata.data.images import load_images
    from deepstrata.run import _match_shape

    source = data or run.config.data.source
    same = source == run.config.data.source
    channels, height, width = run.info["spec"]["in_shape"]
    dataset = load_images(
        source, format=run.config.data.format if same else None, image_size=height if height == width else None,
        skip_bad=run.config.data.skip_bad, data_dir=data_dir or run.config.data.data_dir,
    )
    return source, same, dataset, (channels, height, width), _match_shape


def _open_run_shards(run, source: str):
    """A shard directory opened and checked against the model's input shape."""
    from deepstrata.data.shards import open_shards

    shards = open_shards(source)
    shape = tuple(run.info["spec"]["in_shape"])
    if tuple(shards.image_shape) != shape:
        raise DataError(f"{source}: shards hold {'x'.join(map(str, shards.image_shape))} images; this run's model "
                        f"takes {'x'.join(map(str, shape))}")
    return shards


def load_shard_sample(run, source: str, *, samples: int, seed: int) -> InspectData:
    """Up to ``samples`` images drawn from a shard directory's validation and test splits (read by id, not whole)."""
    shards = _open_run_shards(run, source)
    parts = [shards.splits[name] for name in ("val", "test")]
    pool = sum(part.count for part in parts)
    if pool < 4:
        raise DataError(f"{source}: {pool} held-out examples in the shards; inspection needs at least 4")
    rows = sample_rows(pool, samples, seed)
    images = np.empty((len(rows), *shards.image_shape), dtype=np.uint8)
    labels = np.empty(len(rows), dtype=np.int64)
    offset = 0
    for part in parts:
        mine = (rows >= offset) & (rows < offset + part.count)
        if mine.any():
            block_images = np.empty((int(mine.sum()), *shards.image_shape), dtype=np.uint8)
            block_labels = np.empty(int(mine.sum()), dtype=np.int64)
            part.gather(rows[mine] - offset, block_images, block_labels)
            images[mine], labels[mine] = block_images, block_labels
        offset += part.count
    x = torch.from_numpy(images).float().div_(255.0)
    description = (f"shards {source} of {shards.source}: {len(rows)} of {pool} images of the validation + test "
                   "splits (not used to fit the weights)" + (f", sampled with seed {seed}" if len(rows) < pool else ""))
    return InspectData(inputs=x, labels=labels, classes=list(shards.classes), description=description,
                       pool_size=pool, images=x, notes=list(shards.notes))


def shard_image_chunks(run, source: str, size: int = 4096) -> Iterator[torch.Tensor]:
    """Every image of a shard directory (train, then val, then test split) as uint8 chunks of at most ``size``."""
    shards = _open_run_shards(run, source)
    for name in ("train", "val", "test"):
        for images, _ in shards.splits[name].chunks(size):
            yield torch.from_numpy(np.ascontiguousarray(images))


def load_image_sample(run, data: str | None = None, *, samples: int = 2000, seed: int = 0,
                      data_dir: str | None = None) -> InspectData:
    """Up to ``samples`` held-out images of ``data`` (default: the run's own source) with their labels."""
    from deepstrata.data.shards import is_shard_dir
    from deepstrata.data.split import split_dataset

    if is_shard_dir(data or run.config.data.source):
        return load_shard_sample(run, data or run.config.data.source, samples=samples, seed=seed)
    source, same, dataset, (c, h, w), match = _image_source(run, data, data_dir)
    if same:
        splits = split_dataset(dataset, seed=run.config.train.seed, val_fraction=run.config.data.val_fraction,
                               test_fraction=run.config.data.test_fraction)
        x = torch.cat([splits.val_x, splits.test_x])
        y = torch.cat([splits.val_y, splits.test_y])
        which = ("validation split + official test split" if splits.test_is_official
                 else "validation + test splits") + " of the run (not used to fit the weights)"
    elif dataset.test_x is not None:
        x, y, which = dataset.test_x, dataset.test_y, "official test split"
    else:
        x, y, which = dataset.x, dataset.y, "all examples (this source has no test split)"
    if len(y) < 4:
        raise DataError(f"{source}: {len(y)} held-out examples; inspection needs at least 4")
    rows = sample_rows(len(y), samples, seed)
    images = match(x[torch.from_numpy(rows)], c, h, w, source).float().div_(255.0)
    labels = y[torch.from_numpy(rows)].numpy()
    description = (f"{dataset.source or source}: {len(rows)} of {len(y)} images of the {which}"
                   + (f", sampled with seed {seed}" if len(rows) < len(y) else ""))
    return InspectData(inputs=images, labels=labels, classes=list(dataset.classes), description=description,
                       pool_size=len(y), images=images, notes=list(dataset.notes))


def load_image_all(run, data: str | None = None, *, data_dir: str | None = None) -> tuple[torch.Tensor, str]:
    """Every image of a source as the model takes it (training part, then the official test part)."""
    source, _, dataset, (c, h, w), match = _image_source(run, data, data_dir)
    parts = [dataset.x] + ([dataset.test_x] if dataset.test_x is not None else [])
    x = match(torch.cat(parts), c, h, w, source)
    order = "all images" + (", training files then the official test files" if len(parts) > 1 else "")
    return x, f"{dataset.source or source}: {order}"


def image_tensor(run, x: torch.Tensor) -> torch.Tensor:
    """Check that a user's image tensor fits the model: ``[N, C, H, W]`` (or one ``[C, H, W]``), uint8 or float."""
    shape = tuple(run.info["spec"]["in_shape"])
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise DataError(f"features: expected images [N, {', '.join(map(str, shape))}], got {list(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise DataError(f"features: expected uint8 (0-255) or float (0-1) images, got {x.dtype}")
    return x


def check_samples(samples: int) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 20:
        raise ConfigError(f"--samples: got {samples!r}, expected an integer of at least 20")
    return samples


def load_sample(run, data: str | None, *, samples: int, seed: int, data_dir: str | None) -> InspectData:
    """The held-out sample for ``run``'s task (images, texts, or a recommender's users)."""
    from deepstrata.run import check_source

    if data is not None:
        check_source(run, data, "inspect")
    if run.task == IMAGE_TASK:
        return load_image_sample(run, data, samples=samples, seed=seed, data_dir=data_dir)
    if run.task == TEXT_TASK:
        from deepstrata.inspect.text import load_text_sample

        return load_text_sample(run, data, samples=samples, seed=seed)
    if run.task == RECOMMEND_TASK:
        from deepstrata.inspect.recommend import load_user_sample

        return load_user_sample(run, data, samples=samples, seed=seed)
    raise RunError(f"{run.path}: inspect reads runs of tasks {', '.join(TASKS)}; this run is {run.task!r}")
