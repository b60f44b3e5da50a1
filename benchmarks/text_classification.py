"""Text classification on IMDB and AG News: from-scratch Transformer, MiniLM (frozen / fine-tuned), TF-IDF + LR.

Every learned row is one ``deepstrata.fit`` on the same split (``--seed``) as the TF-IDF
baseline, so the rows are directly comparable; each row's wall time covers the whole fit
(reading, tokenizer, training, scoring the test split, writing the run).

    python benchmarks/text_classification.py --data imdb --models tfidf,transformer
    python benchmarks/text_classification.py --data ag-news --models tfidf,transformer,minilm-frozen,minilm
    python benchmarks/text_classification.py --data imdb --per-class 1000 --models minilm-frozen   # a sample

Options for one model: ``--opt transformer:max_length=512 --opt minilm:epochs=2``; a variant
is named ``<model>-<tag>`` (``--models transformer-512 --opt transformer-512:max_length=512``).
Results go to ``--results`` (default
``benchmarks/results/text_classification_<date>_<machine>_seed<S>_<data>.json``, appended row
by row, so the several commands of one day and machine share a file) and a Markdown table on
stdout; run directories go under ``--runs`` (default: ``--out``, ``benchmarks/out/text``, not
kept in git).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import deepstrata as ds  # noqa: E402
from deepstrata.baselines.text_features import run_text_baseline  # noqa: E402
from deepstrata.data.text import load_text, split_text  # noqa: E402
from results_io import read_results, result_path, write_results  # noqa: E402

SOURCES = {"imdb": "imdb/aclImdb_labeled.tar.xz", "ag-news": "ag-news/test.csv"}
MODELS = {"transformer": {"model": "transformer"}, "minilm-frozen": {"model": "minilm", "freeze": True},
          "minilm": {"model": "minilm"}}


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def model_options(pairs: list[str]) -> dict[str, dict]:
    options: dict[str, dict] = {}
    for pair in pairs:
        name, _, setting = pair.partition(":")
        key, _, value = setting.partition("=")
        options.setdefault(name, {})[key.replace("-", "_")] = parse_value(value)
    return options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=tuple(SOURCES), required=True)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--models", default="tfidf,transformer,minilm-frozen,minilm")
    parser.add_argument("--per-class", type=int, help="keep the first N examples of each class (of each split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="32")
    parser.add_argument("--pretrained-path", help="folder with the MiniLM files (default: the installed package)")
    parser.add_argument("--opt", action="append", default=[], metavar="MODEL:KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "text"))
    parser.add_argument("--runs", help="where the run directories go (default: --out)")
    parser.add_argument("--results", type=Path, default=None, help="raw output JSON, appended (default: "
                        "benchmarks/results/text_classification_<date>_<machine>_seed<S>_<data>.json)")
    args = parser.parse_args()
    runs = Path(args.runs or args.out)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = model_options(args.opt)
    started = time.perf_counter()
    dataset = load_text(Path(args.data_root) / SOURCES[args.data], max_per_class=args.per_class)
    load_seconds = time.perf_counter() - started
    splits = split_text(dataset, seed=args.seed)
    machine = {"device": args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
               "load": os.getloadavg()[0]}
    print(f"{args.data}: train {len(splits.train_y)} / val {len(splits.val_y)} / test {len(splits.test_y)} "
          f"(read in {load_seconds:.1f}s); machine {machine}", file=sys.stderr)
    results_path = args.results or result_path("text_classification", args.seed, args.data)
    results = read_results(results_path) if results_path.is_file() else []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        if name == "tfidf":
            row = run_text_baseline(splits.train_texts, splits.train_y, splits.val_texts, splits.val_y,
                                    splits.test_texts, splits.test_y, len(splits.classes), seed=args.seed).row()
            row["settings"]["device"] = "cpu (scikit-learn, 1 thread)"
        else:
            base = name if name in MODELS else name.rsplit("-", 1)[0]
            settings = {**MODELS[base], **options.get(name, {})}
            model = settings.pop("model")
            if model == "minilm" and args.pretrained_path:
                settings.setdefault("pretrained_path", args.pretrained_path)
            run = ds.fit(dataset, model, out=runs / f"{args.data}-{name}", overwrite=True, baselines=False,
                         quiet=True, seed=args.seed, device=args.device, precision=args.precision, **settings)
            row = run.comparison()["rows"][0]
            row["settings"]["options"] = settings
        wall = time.perf_counter() - t0
        result = {"data": args.data, "model": name, "per_class": args.per_class, "test": len(splits.test_y),
                  "accuracy": row["metrics"]["accuracy"], "macro_f1": row["metrics"]["macro_f1"],
                  "wall_seconds": round(wall, 1), "train_seconds": row["train_seconds"], "params": row["params"],
                  "settings": row["settings"], "machine": machine,
                  "date": time.strftime("%Y-%m-%d"), "command": shlex.join(["python", *sys.argv])}
        results.append(result)
        write_results(results_path, results, args.seed)
        print(f"| {args.data} | {name} | {result['accuracy']:.4f} | {result['macro_f1']:.4f} | {wall:.0f} | "
              f"{row['settings'].get('train_tokens_per_second', '')} | {machine['gpu'] or 'cpu'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
