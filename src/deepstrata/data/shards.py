"""Image data sets larger than memory: shards of fixed-shape ``.npy`` arrays and a manifest.

Layout of a shard directory (``deepstrata shard --data SOURCE --out shards/``)::

    index.json                  the manifest: format marker, classes, image shape, split
                                counts, per-channel statistics, every shard with its count
                                and sha256 — written last
    train-00000.images.npy      uint8 [n, C, H, W], C-order, version-1.0 .npy header
    train-00000.labels.npy      int64 [n]
    ...  val-00000.*  test-00000.*

Why memory-mappable arrays and not WebDataset tar shards: deepstrata's image tasks work on
fixed-shape uint8 tensors, and every reader already decides one shape for the whole set.
A fixed-shape array costs nothing to decode (a training step copies bytes, where a tar of
JPEGs spends a CPU core per few thousand images decoding them on every epoch), example
``i`` of a shard is at a known byte offset (random access with ``np.load(mmap_mode="r")``
or one ``pread``, which makes resuming mid-epoch and sampling for baselines cheap), and a
shard is checkable from its header and size alone. Tars win for variable-size encoded
files (photos kept compressed, audio, text), which is not what these shards hold; the
price here is disk space, since pixels are stored decoded (CIFAR-size images: 3 KB each).

How a shard set is written (streaming, ``fit``'s split, atomic renames) is told in
``shard_writer``. This module is the public face: every public name of the shard modules
is importable from here — ``shard_format`` (names, markers, sizes), ``shard_sources``
(what is sharded), ``shard_writer`` (``write_shards``), ``shard_set`` (the opened shards
and their reads) and ``shard_reader`` (``open_shards``, ``is_shard_dir``, ``verify_shards``).
"""

from __future__ import annotations

from deepstrata.data.shard_format import (
    DEFAULT_SHARD_SIZE, FORMAT_VERSION, MANIFEST, SHARD_FORMAT, SPLIT_NAMES, parse_size,
)
from deepstrata.data.shard_reader import is_shard_dir, open_shards, verify_shards
from deepstrata.data.shard_set import Shard, ShardSet, SplitShards
from deepstrata.data.shard_sources import FolderSource, ShardSource, TensorSource, open_source, split_positions
from deepstrata.data.shard_writer import CHUNK_BYTES, LABEL_BYTES, write_shards

__all__ = [
    "CHUNK_BYTES", "DEFAULT_SHARD_SIZE", "FORMAT_VERSION", "FolderSource", "LABEL_BYTES", "MANIFEST",
    "SHARD_FORMAT", "SPLIT_NAMES", "Shard", "ShardSet", "ShardSource", "SplitShards", "TensorSource",
    "is_shard_dir", "open_shards", "open_source", "parse_size", "split_positions", "verify_shards",
    "write_shards",
]
