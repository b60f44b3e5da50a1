"""The ``shard`` verb: write a data set as shards that ``fit --data DIR`` streams.

One API call (``data.shards.write_shards``, or ``verify_shards`` with ``--verify``);
errors are ``DeepstrataError``s that ``cli.main`` prints on one line (exit status 2).
"""

from __future__ import annotations

import argparse
import sys

from deepstrata.cli_args import IMAGE_FORMATS as FORMATS
from deepstrata.cli_args import number
from deepstrata.config import DataConfig, TrainConfig
from deepstrata.errors import ConfigError

# ``data.shards.DEFAULT_SHARD_SIZE``, written out so that building the parser does not import torch
# (a test keeps the two equal).
DEFAULT_SHARD_SIZE = "256MB"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    defaults = DataConfig()
    p = sub.add_parser(
        "shard", help="write an image data set as shards that fit streams (data larger than memory)",
        description="Split SOURCE exactly as `fit` would (same seed and fractions) and write train/val/test as "
        "shards of fixed-shape uint8 arrays (.npy) with an index.json manifest; `deepstrata fit --data DIR` then "
        "streams them with a shuffle buffer, in bounded memory. Image folders are decoded chunk by chunk; other "
        "formats are loaded first. `--verify DIR` checks every shard's checksum instead.",
    )
    p.add_argument("--data", metavar="SOURCE", help="what fit --data takes: 'digits', 'mnist', 'cifar10', an image "
                   "folder (one sub-folder per class), an IDX directory, CIFAR-10 batches")
    p.add_argument("--out", metavar="DIR", help="directory for the shards and index.json")
    p.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE, metavar="SIZE",
                   help=f"bytes per shard: 256MB, 1GB, 500kB, 64MiB ... (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--format", choices=FORMATS, help="override the detected kind of SOURCE")
    p.add_argument("--data-dir", metavar="DIR", help="cache for named data sets")
    p.add_argument("--image-size", type=number("data.image_size"), metavar="PX", help="resize folder images to PX x PX "
                   "(default: their most common size)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (counted in the manifest)")
    p.add_argument("--seed", type=number("train.seed"), default=TrainConfig().seed,
                   help=f"seed of the split and the shuffle before writing (default {TrainConfig().seed}, as fit)")
    p.add_argument("--val-fraction", type=number("data.val_fraction"), default=defaults.val_fraction,
                   help=f"validation fraction (default {defaults.val_fraction}, as fit)")
    p.add_argument("--test-fraction", type=number("data.test_fraction"), default=defaults.test_fraction,
                   help=f"test fraction when SOURCE has no official test split (default {defaults.test_fraction})")
    p.add_argument("--overwrite", action="store_true", help="replace the shards in an existing --out")
    p.add_argument("--verify", metavar="DIR", help="check the sha256 of every shard in DIR against its index.json")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def shard(args: argparse.Namespace) -> int:
    from deepstrata.data.shards import verify_shards, write_shards

    if args.verify:
        if args.data or args.out:
            raise ConfigError("shard: --verify DIR checks existing shards; leave out --data and --out")
        checked = verify_shards(args.verify)
        print(f"{args.verify}: {checked} shard files, every sha256 matches index.json")
        return 0
    if not args.data or not args.out:
        raise ConfigError("shard: --data SOURCE and --out DIR are required (or --verify DIR)")
    say = (lambda _message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    shards = write_shards(
        args.data, args.out, args.shard_size, seed=args.seed, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction, format=args.format, image_size=args.image_size,
        skip_bad=args.skip_bad, data_dir=args.data_dir, overwrite=args.overwrite, progress=say,
    )
    if not args.quiet:
        shape = "x".join(map(str, shards.image_shape))
        parts = " / ".join(f"{name} {s.count} in {len(s.shards)}" for name, s in shards.splits.items())
        print(f"{shards.root}: {shape} images, {len(shards.classes)} classes; {parts} shard(s); "
              f"manifest {shards.root / 'index.json'}")
        print(f"train with: deepstrata fit --data {shards.root}")
    return 0


VERBS = {"shard": shard}
