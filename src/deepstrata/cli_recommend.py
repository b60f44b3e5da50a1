"""CLI verbs for recommendation runs: ``recommend``, ``similar``, ``update``, and the ``fit`` flags.

Each verb parses its arguments and makes one API call on a ``Run``; errors are
``DeepstrataError``s that ``cli.main`` prints on one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from deepstrata.cli_args import POSITIVE_COUNT, number, task_only
from deepstrata.config import SPLITS
from deepstrata.config_numbers import Number

REPLAY = Number(float, low=0.0, low_open=False, high=1.0, high_open=False)  # [0, 1]


def add_fit_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``fit --task recommend`` (dests match ``RecommendConfig`` fields)."""
    group = p.add_argument_group("recommendation options", "interaction logs (--task recommend, --model sasrec|mf); "
                                 "--dim, --layers, --heads and --dropout of the text options size these models too")
    group.add_argument("--user-column", metavar="NAME", help="user id column (default: user_id, userId, user …)")
    group.add_argument("--item-column", metavar="NAME", help="item id column (default: item_id, movieId, item …)")
    group.add_argument("--rating-column", metavar="NAME", help="explicit rating column (default: rating, when "
                       "--min-rating is given)")
    group.add_argument("--min-rating", type=number("recommend.min_rating"), metavar="R",
                       help="ratings >= R are interactions, the rest are not (default: every row is one)")
    group.add_argument("--time-column", metavar="NAME",
                       help="event time column, numbers or ISO dates "
                       "(default: timestamp, ts, time …; else file order)")
    group.add_argument("--split", choices=SPLITS,
                       help="leave-last-out per user by time (default) or a global temporal cut")
    group.add_argument("--max-seq-len", type=number("recommend.max_seq_len"), metavar="N",
                       help="history length the sequence model reads (default 50)")
    group.add_argument("--negatives", type=number("recommend.negatives"), metavar="N",
                       help="sampled negatives per batch instead of the full softmax (default 0: full softmax)")
    group.add_argument("--update-epochs", type=number("recommend.update_epochs"), metavar="N",
                       help="epochs that `update` trains (default 10)")
    for action in group._group_actions:
        task_only(action, "recommend")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="top items for a user from a recommendation run",
                       description="List the items a recommendation run scores highest for a user, excluding what "
                       "the user already has. An unknown user gets the most popular items.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--user", required=True, metavar="ID", help="user id as in the interaction log")
    p.add_argument("-k", type=number(POSITIVE_COUNT), default=10, help="how many items (default 10)")
    p.add_argument("--json", action="store_true", help='print {"user", "items": [{"item", "score", "title"}], '
                   '"fallback"}')

    p = sub.add_parser("similar", help="nearest items in a run's learned embedding space",
                       description="List the items whose learned embeddings are closest (cosine) to an item's.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--item", required=True, metavar="ID", help="item id as in the interaction log")
    p.add_argument("-k", type=number(POSITIVE_COUNT), default=10, help="how many items (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("update", help="continue training a run on new data (new classes, users or items too)",
                       description="Continue training a run's kept model on new data, without retraining from zero. "
                       "An image or text run takes new labelled examples, classes it has never seen included (the "
                       "head grows; old classes keep their rows), with a share of its old training data replayed; "
                       "a text run keeps its tokenizer (new words map to what it does for unknown ones). A "
                       "recommendation run takes new interactions (new users and items included). Prints accuracy "
                       "(or ranking metrics) on the test splits before and after.")
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--data", required=True, metavar="SOURCE",
                   help="the new data: images or texts of the run's kind, or interactions with the run's log columns")
    p.add_argument("--out", metavar="DIR", help="write the updated run here (default: replace RUN when done)")
    p.add_argument("--epochs", type=number(POSITIVE_COUNT),
                   help="epochs to train (default: the run's own epochs; a recommender's recommend.update_epochs)")
    p.add_argument("--replay", type=number(REPLAY), metavar="F",
                   help="image and text runs: share of the old training data mixed in, per class (default 0.5)")
    p.add_argument("--json", action="store_true", help="print the update record as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _print_items(items: list[dict]) -> None:
    width = max((len(entry["item"]) for entry in items), default=4)
    for rank, entry in enumerate(items, 1):
        title = f"  {entry['title']}" if entry.get("title") else ""
        print(f"{rank:>3}. {entry['item']:<{width}}  {entry['score']:>9.4f}{title}")


def recommend(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    result = load(args.run).recommend(args.user, args.k)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if result["fallback"]:
        print(f"user {result['user']} is not in this run's log: showing the most popular items")
    else:
        print(f"top {len(result['items'])} for user {result['user']} (items they have are excluded):")
    _print_items(result["items"])
    return 0


def similar(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    result = load(args.run).similar(args.item, args.k)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    title = f" ({result['title']})" if result.get("title") else ""
    print(f"items nearest to {result['item']}{title} (cosine of learned embeddings):")
    _print_items(result["items"])
    return 0


def update(args: argparse.Namespace) -> int:
    from deepstrata.run import load

    updated = load(args.run).update(args.data, args.out, epochs=args.epochs, replay=args.replay, quiet=args.quiet)
    path, record = updated.path, updated.info["updates"][-1]  # the update just made, as model.json records it
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    print("\n".join(updated.update_summary(record)))
    print(f"run directory: {path}", file=sys.stdout)
    return 0


VERBS = {"recommend": recommend, "similar": similar, "update": update}
