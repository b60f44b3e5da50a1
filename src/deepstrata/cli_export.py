"""CLI verb ``export``: a door to ``Run.export``, no logic of its own."""

from __future__ import annotations

import argparse

FORMATS = ("onnx", "pt2")  # export.formats.FORMATS, written out so that building the parser imports no torch


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a run's model as ONNX or torch.export (pt2), verified, with its input contract",
        description="Write the run's model as a file another runtime executes: ONNX (torch's dynamo exporter; run "
        "by onnxruntime; the [export] extra) or pt2 (torch.export; run by torch.export.load), with a dynamic batch "
        "dimension, and beside it NAME.contract.json: input names, shapes and dtypes, the preprocessing and "
        "normalisation predict applies, class names (text runs: the tokenizer, as NAME.tokenizer.json, max "
        "length and pad id; recommendation runs: the user and item ids). Image and text exports output class "
        "probabilities, recommendation exports a score per item. Before the command returns, real examples of "
        "the run's data in two batch sizes go through PyTorch and through the exported file; the largest "
        "difference is printed, and beyond the tolerance (1e-4 on probabilities) nothing is written.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or pt2")
    p.add_argument("--out", metavar="FILE", help="the model file, ending in .onnx or .pt2 (default: "
                   "RUN/export/model.onnx or RUN/export/model.pt2)")
    p.add_argument("--overwrite", action="store_true", help="replace files deepstrata did not write (a file an "
                   "earlier export wrote is always replaced)")


def export(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    print(load(args.run).export(args.format, args.out, overwrite=args.overwrite).line())
    return 0


VERBS = {"export": export}
