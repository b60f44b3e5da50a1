"""``embed`` and ``search`` for image runs: one vector per image, with its id and class.

Ids say where an image is: for an image folder its path relative to the folder (as
``list_image_files`` lists it, the order ``predict`` uses), its class the class
sub-folder it sits in (``<class>/…`` or ``train|test/<class>/…``; none for loose files);
for the in-memory formats (digits, named sets, IDX, CIFAR) ``train/<i>`` and ``test/<i>``
(the official split; plain ``<i>`` when there is none); for shards ``<split>/<i>``.
A folder is decoded chunk by chunk with the run's recorded preprocessing — the same
decoding a search query goes through, so an image's own vector is found at cosine 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from deepstrata.embeddings import EmbeddedRows
from deepstrata.errors import ConfigError, DataError
from deepstrata.inspect.layer_vectors import layer_vectors

CHUNK = 1024


def check_options(run, rows, column) -> None:
    """Refuse the options of other families' runs by name."""
    if rows not in (None, "examples"):
        raise ConfigError(f"--rows: {run.path} is {run.kind}; its rows are its examples (users and items are "
                          "rows of a recommendation run)")
    if column is not None:
        raise ConfigError(f"--text-column: {run.path} is {run.kind}; only text runs read a text column")


def _in_shape(run) -> tuple[int, int, int]:
    channels, height, width = run.info["spec"]["in_shape"]
    return channels, height, width


def folder_label(relative: str) -> str | None:
    """The class of an image from its path in the folder: ``<class>/x`` or ``train|test/<class>/x``."""
    parts = relative.split("/")
    if len(parts) >= 3 and parts[0].lower() in ("train", "test"):
        return parts[1]
    return parts[0] if len(parts) >= 2 else None


def _folder(run, root: Path, layer: str, batch_size: int) -> EmbeddedRows:
    from deepstrata.data.images import list_image_files, load_image_files
    from deepstrata.families.image.verbs import run_preprocess

    files = list_image_files(root)
    ids = [Path(os.path.relpath(f, root)).as_posix() for f in files]
    channels, height, width = _in_shape(run)
    preprocess = run_preprocess(run)
    parts = []
    for start in range(0, len(files), CHUNK):
        images = load_image_files(files[start:start + CHUNK], channels, (height, width), preprocess=preprocess)
        parts.append(layer_vectors(run.model, images, layer, batch_size=batch_size))
    return EmbeddedRows(np.concatenate(parts), ids, [folder_label(i) for i in ids], layer,
                        source=f"{root}: {len(files)} image files")


def _shards(run, source: str, layer: str, batch_size: int) -> EmbeddedRows:
    from deepstrata.families.image.inspect import open_run_shards

    shards = open_run_shards(run, source)
    parts, ids, labels = [], [], []
    for name in ("train", "val", "test"):
        seen = 0
        for images, y in shards.splits[name].chunks(4096):
            parts.append(layer_vectors(run.model, torch.from_numpy(np.ascontiguousarray(images)), layer,
                                       batch_size=batch_size))
            ids += [f"{name}/{seen + i}" for i in range(len(y))]
            labels += [shards.classes[int(c)] for c in y]
            seen += len(y)
    return EmbeddedRows(np.concatenate(parts), ids, labels, layer, source=f"shards {source}")


def _loaded(run, source: str, layer: str, data_dir, batch_size: int) -> EmbeddedRows:
    from deepstrata.data.images import load_images
    from deepstrata.families.image.verbs import match_shape, run_preprocess

    same = source == run.config.data.source
    channels, height, width = _in_shape(run)
    dataset = load_images(source, format=run.config.data.format if same else None,
                          image_size=height if height == width else None, skip_bad=run.config.data.skip_bad,
                          data_dir=data_dir or run.config.data.data_dir, preprocess=run_preprocess(run))
    splits = [("train", dataset.x, dataset.y)]
    if dataset.test_x is not None:
        splits.append(("test", dataset.test_x, dataset.test_y))
    parts, ids, labels = [], [], []
    for name, x, y in splits:
        parts.append(layer_vectors(run.model, match_shape(x, channels, height, width, source), layer,
                                   batch_size=batch_size))
        ids += [f"{name}/{i}" if len(splits) > 1 else str(i) for i in range(len(y))]
        labels += [dataset.classes[int(c)] for c in y.tolist()]
    return EmbeddedRows(np.concatenate(parts), ids, labels, layer, source=dataset.source or source)


def embed_source(run, data, layer: str, *, rows=None, column=None, data_dir=None,
                 batch_size: int = 256) -> EmbeddedRows:
    """Every image of ``data`` (a source; default the run's own; or a tensor ``[N, C, H, W]``) at ``layer``."""
    from deepstrata.data.images import detect_format
    from deepstrata.data.shards import is_shard_dir
    from deepstrata.families.image.inspect import image_tensor

    check_options(run, rows, column)
    if data is not None and not isinstance(data, (str, Path)):
        x = image_tensor(run, data)
        return EmbeddedRows(layer_vectors(run.model, x, layer, batch_size=batch_size),
                            [str(i) for i in range(len(x))], [None] * len(x), layer, source="tensor")
    source = str(data) if data is not None else run.config.data.source
    if data is not None:
        run.family.check_source(run, source, "embed")
    if is_shard_dir(source):
        return _shards(run, source, layer, batch_size)
    path = Path(source).expanduser()
    if path.is_dir() and detect_format(path) == "folder":
        return _folder(run, path, layer, batch_size)
    return _loaded(run, source, layer, data_dir, batch_size)


def embed_query(run, query, layer: str, *, rows: str, batch_size: int = 256) -> np.ndarray:
    """The vector ``[1, D]`` of one image file, decoded as ``embed`` decodes a folder's files."""
    from deepstrata.data.images import IMAGE_EXTENSIONS, load_image_files
    from deepstrata.families.image.verbs import run_preprocess

    path = Path(str(query)).expanduser()
    if not path.is_file() or not path.name.lower().endswith(IMAGE_EXTENSIONS):
        raise DataError(f"--query {query}: no such image file; {run.path} is {run.kind}, and search --query takes "
                        f"an image file ({', '.join(IMAGE_EXTENSIONS)})")
    channels, height, width = _in_shape(run)
    image = load_image_files([path], channels, (height, width), preprocess=run_preprocess(run))
    return layer_vectors(run.model, image, layer, batch_size=batch_size)
