"""CLI verbs ``inspect`` and ``features``: doors to ``deepstrata.inspect``, no logic of their own."""

from __future__ import annotations

import argparse
import json

from deepstrata.cli_args import POSITIVE_COUNT, number
from deepstrata.config import DEVICES


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="see what every layer of a run learned (probes, CKA, maps, pictures)",
        description="Read a held-out sample through each named layer of a run's model and through the same "
        "architecture at random initialisation; write RUN/inspect/report.html (linear probes by depth, linear CKA, "
        "PCA/t-SNE maps, first-layer filters, activation maps, top-activating crops) and RUN/inspect/summary.json, "
        "and print the probe table.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--data", metavar="SOURCE", help="data source (default: the run's own validation + test splits)")
    p.add_argument("--data-dir", metavar="DIR", help="cache for named data sets")
    p.add_argument("--layers", metavar="NAMES", help="comma-separated layer names, e.g. stem,stage1 (default: all)")
    p.add_argument("--samples", type=number(POSITIVE_COUNT), default=2000, metavar="N", help="held-out examples to sample (default 2000)")
    p.add_argument("--seed", type=number("train.seed"), default=0, help="seed of the sample, probe split and random-init control")
    p.add_argument("--no-tsne", dest="tsne", action="store_false", help="PCA maps only (t-SNE is the slow part)")
    p.add_argument("--maximize", action="store_true", help="add activation maximisation for the channels shown")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where to run the model (default cpu)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")

    p = sub.add_parser(
        "features", help="extract one named layer's pooled features to a .npy file",
        description="Write the pooled features [N, D] of one named layer for every example of a data source "
        "(images in the source's order: training files, then official test files).",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--layer", required=True, metavar="NAME", help="layer name, e.g. stage2")
    p.add_argument("--data", metavar="SOURCE", help="data source (default: the run's own)")
    p.add_argument("--data-dir", metavar="DIR", help="cache for named data sets")
    p.add_argument("--out", required=True, metavar="FILE.npy", help="where to write the features")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where to run the model (default cpu)")


def inspect(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    result = load(args.run, device=args.device).inspect(args.data, layers=args.layers, samples=args.samples,
                                                        seed=args.seed, data_dir=args.data_dir, tsne=args.tsne,
                                                        maximize=args.maximize)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print(result.table())
        print(f"report: {result.report_path}")
    return 0


def features(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    print(load(args.run, device=args.device).write_features(args.data, args.layer, args.out, data_dir=args.data_dir))
    return 0


VERBS = {"inspect": inspect, "features": features}
