"""What inspect and features read and show of an image run: held-out images (shards too) and pictures.

Filters, activation maps, top-activating crops and (optionally) activation maximisation
are the image family's own views; probes, CKA and maps are ``deepstrata.inspect``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from deepstrata.errors import DataError
from deepstrata.inspect.data import InspectData, held_out_description, sample_rows
from deepstrata.inspect.taps import extract
from deepstrata.inspect.visuals import MaximizeSettings

VISUAL_CHANNELS = 6
TOP_K = 8
MAP_INPUTS = 4


def _image_source(run, data: str | None, data_dir: str | None):
    """The run's source (or ``data``) read and shaped to the model's input."""
    from deepstrata.data.images import load_images
    from deepstrata.families.image.verbs import match_shape as _match_shape
    from deepstrata.families.image.verbs import run_preprocess

    source = data or run.config.data.source
    same = source == run.config.data.source
    channels, height, width = run.info["spec"]["in_shape"]
    dataset = load_images(
        source, format=run.config.data.format if same else None, image_size=height if height == width else None,
        skip_bad=run.config.data.skip_bad, data_dir=data_dir or run.config.data.data_dir,
        preprocess=run_preprocess(run),
    )
    return source, same, dataset, (channels, height, width), _match_shape


def open_run_shards(run, source: str):
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
    shards = open_run_shards(run, source)
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
    shards = open_run_shards(run, source)
    for name in ("train", "val", "test"):
        for images, _ in shards.splits[name].chunks(size):
            yield torch.from_numpy(np.ascontiguousarray(images))


def load_image_sample(run, data: str | None = None, *, samples: int = 2000, seed: int = 0,
                      data_dir: str | None = None) -> InspectData:
    """Up to ``samples`` held-out images of ``data`` (default: the run's own source) with their labels."""
    from deepstrata.data.shards import is_shard_dir
    from deepstrata.data.split import split_dataset
    from deepstrata.families.image.verbs import own_shards

    if is_shard_dir(data or run.config.data.source):
        return load_shard_sample(run, data or run.config.data.source, samples=samples, seed=seed)
    own = own_shards(run, data or run.config.data.source)
    if own:  # a folder the fit streamed: its held-out images are in the run's shards
        return load_shard_sample(run, own, samples=samples, seed=seed)
    source, same, dataset, (c, h, w), match = _image_source(run, data, data_dir)
    if same:
        splits = split_dataset(dataset, seed=run.config.train.seed, val_fraction=run.config.data.val_fraction,
                               test_fraction=run.config.data.test_fraction)
        x = torch.cat([splits.val_x, splits.test_x])
        y = torch.cat([splits.val_y, splits.test_y])
        which = held_out_description(splits.test_is_official)
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


def image_views(result, model, sample, names: list[str], *, maximize: bool, seed: int,
                   batch_size: int) -> None:
    """Filters, activation maps, top crops (and optionally maximised inputs) of every non-head layer."""
    from deepstrata.inspect import visuals

    images = sample.images
    in_shape = tuple(images.shape[1:])
    first = visuals.first_layer_pictures(model, in_shape)
    if first is not None:
        kind, pictures = first
        title = f"{kind} ({len(pictures)} shown, largest norm first)"
        result.figures["filters"] = visuals.filters_figure(pictures, title)
        result.captions["filters"] = kind
    layers = [name for name in names if name != "head"]
    if not layers:
        return
    settings = MaximizeSettings(seed=seed)
    responses = visuals.channel_responses(model, images, layers, batch_size)
    show = _one_per_class(sample.labels, MAP_INPUTS)
    rows = []
    for name in layers:
        channels = visuals.selective_channels(responses[name], VISUAL_CHANNELS)
        spatial = responses[name].spatial
        field = visuals.receptive_field(model, name, in_shape) if spatial else None
        crops, values = visuals.top_patches(images, responses[name], channels, field, TOP_K)
        result.figures[f"patches/{name}"] = visuals.patches_figure(name, channels, crops, values,
                                                                    field.size if field else None)
        result.captions[f"patches/{name}"] = (
            f"channels {', '.join(map(str, channels))} (the most selective of {responses[name].value.shape[1]}); "
            + (f"receptive field {field.size}px, stride {field.jump}px" if field else "whole inputs (dense layer)"))
        maps = visuals.activation_maps(model, images[show], name, channels) if spatial else None
        if maps is not None:
            result.figures[f"maps/{name}"] = visuals.activation_maps_figure(name, images[show], channels, maps)
        if maximize:
            pictures, reached = visuals.maximize(model, name, channels, in_shape, settings)
            rows.append((name, channels, pictures, reached))
    if rows:
        result.figures["maximize"] = visuals.maximize_figure(rows)
        result.settings["maximize"] = {**settings.to_dict(), "text": settings.describe()}


def _one_per_class(labels: np.ndarray, count: int) -> list[int]:
    """Indices of up to ``count`` examples, each of a different class where possible."""
    picked: list[int] = []
    seen: set = set()
    for index, label in enumerate(labels.tolist()):
        if label not in seen:
            picked.append(index)
            seen.add(label)
        if len(picked) == count:
            return picked
    rest = [i for i in range(len(labels)) if i not in picked]
    return (picked + rest)[:count]


def features(run, x, layer: str, *, data_dir, batch_size: int) -> tuple[np.ndarray, None]:
    """Pooled features of ``layer`` for a tensor of images, or every image of a source (shards streamed)."""
    from deepstrata.data.shards import is_shard_dir

    model = run.model
    if isinstance(x, (str, Path)):
        run.family.check_source(run, x, "features")
        if is_shard_dir(x):  # streamed: never more than a chunk in memory
            return np.concatenate([extract(model, chunk, [layer], batch_size=batch_size).pooled[layer]
                                   for chunk in shard_image_chunks(run, str(x))]), None
        x, _ = load_image_all(run, str(x), data_dir=data_dir)
    else:
        x = image_tensor(run, x)
    return extract(model, x, [layer], batch_size=batch_size).pooled[layer], None
