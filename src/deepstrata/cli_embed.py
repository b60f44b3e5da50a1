"""CLI verbs ``embed`` and ``search``: doors to ``Run.write_embeddings`` and ``Run.search``, no logic of their own."""

from __future__ import annotations

import argparse
import json

from deepstrata.cli_args import POSITIVE_COUNT, number


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="write one vector per example (image, text, user or item) with its id and label",
        description="Write one vector per example of a data source (default: the run's own) as .parquet (columns "
        "id, label, vector; the run, layer and dimension in the file's metadata) or .npy (the matrix; ids, labels "
        "and metadata in NAME.ids.json). Ids: file paths in an image folder, train/I and test/I for named sets, "
        "line numbers of a .txt, a table's id column or row numbers, user or item ids. Text runs also write one "
        "vector per token (--per-token, .npz or .parquet).",
    )
    p.add_argument("run", metavar="RUN", help="a run directory")
    p.add_argument("--data", metavar="SOURCE", help="images, texts (a .txt of one text per line, a table, a folder) "
                   "or, for a recommendation run, its own log (default: the run's own source)")
    p.add_argument("--out", metavar="PATH", required=True, help="output file: .parquet or .npy (text runs: also .npz)")
    p.add_argument("--layer", metavar="NAME", help="the layer to read, e.g. stage1 (default: features, the vector "
                   "the head classifies: the layer before the head, pooled as the head pools it)")
    p.add_argument("--rows", choices=("items", "users"), help="recommendation runs: one vector per item (default: "
                   "the item table) or per user")
    p.add_argument("--data-dir", metavar="DIR", help="cache for named data sets")
    p.add_argument("--per-token", action="store_true", help="text runs: one vector per token instead of per text")
    p.add_argument("--text-column", metavar="NAME", help="text runs: column of --data holding the text "
                   "(default: the run's)")

    p = sub.add_parser(
        "search", help="the examples of an embedding index nearest to a query (cosine)",
        description="Embed a query with the run, at the layer of an index written by `deepstrata embed`, and "
        "print the K nearest rows by cosine similarity (exact search: one matrix product). The query is an image "
        "file (image runs), a text (text runs), or an item id - a user id if the index holds users - "
        "(recommendation runs).",
    )
    p.add_argument("run", metavar="RUN", help="the run that wrote the index")
    p.add_argument("--index", metavar="FILE", required=True, help="a .parquet or .npy written by `deepstrata embed`")
    p.add_argument("--query", metavar="Q", required=True, help="an image file, a text, or an item/user id")
    p.add_argument("-k", type=number(POSITIVE_COUNT), default=10, metavar="K", help="neighbours to print (default 10)")
    p.add_argument("--layer", metavar="NAME", help="refuse unless the index holds this layer (default: the index's)")
    p.add_argument("--json", action="store_true", help='print {"query": ..., "results": [{"id", "label", "score"}]}')


def embed(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    print(load(args.run).write_embeddings(args.data, args.out, per_token=args.per_token, text_column=args.text_column,
                                          layer=args.layer, rows=args.rows, data_dir=args.data_dir))
    return 0


def format_results(result: dict) -> str:
    """Aligned lines: rank, score, id, label."""
    rows = result["results"]
    if not rows:
        return "no results"
    width = max(len(str(r["id"])) for r in rows)
    return "\n".join(f"{rank:>3}  {r['score']:.4f}  {str(r['id']):<{width}}  {r['label'] if r['label'] is not None else '-'}"
                     for rank, r in enumerate(rows, 1))


def search(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    result = load(args.run).search(args.index, args.query, args.k, layer=args.layer)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_results(result))
    return 0


VERBS = {"embed": embed, "search": search}
