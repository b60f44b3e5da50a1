"""Throughput of the text encoders: training tokens/s and ``embed`` texts/s, on IMDB reviews.

Speed does not depend on what the weights have learned, so this times freshly built
models on real reviews (``--texts`` of them, from the aclImdb archive), with the same
code paths ``fit`` and ``embed`` use: length-bucketed padded batches, the one loop's
step (forward, backward, AdamW), and length-sorted inference batches.

    python benchmarks/text_throughput.py --texts 512 --max-length 256

Training uses ``TrainConfig``'s default seed 0; the rows are kept in
``benchmarks/results/text_throughput_<date>_<machine>_seed0_<N>texts.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from deepstrata.config import TrainConfig  # noqa: E402
from deepstrata.data.text import load_text  # noqa: E402
from deepstrata.data.tokenizer import TextTokenizer  # noqa: E402
from deepstrata.engine.loop import train  # noqa: E402
from deepstrata.families.text.tasks import TextClassificationTask, pooled_features  # noqa: E402
from results_io import result_path, write_results  # noqa: E402


def encoders(texts: list[str], max_length: int, pretrained: str | None):
    from deepstrata.models.transformer import TransformerClassifier

    bpe = TextTokenizer.train_bpe(texts, 16000, max_length)
    yield "transformer", TransformerClassifier(bpe.vocab_size, 2, max_length=max_length), bpe
    try:
        from deepstrata.models.minilm import MiniLMClassifier, pretrained_dir

        folder = pretrained_dir(pretrained)
    except Exception as err:  # the extra is optional: report and go on
        print(f"minilm skipped: {err}", file=sys.stderr)
        return
    wordpiece = TextTokenizer.from_file(folder / "tokenizer.json", max_length, "wordpiece")
    yield "minilm", MiniLMClassifier.pretrained(2, path=pretrained), wordpiece


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--texts", type=int, default=512, help="reviews to time (half positive, half negative)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pretrained-path")
    parser.add_argument("--out", default=None, help="raw output JSON (default: "
                        "benchmarks/results/text_throughput_<date>_<machine>_seed0_<N>texts.json)")
    args = parser.parse_args()

    data = load_text(Path(args.data_root) / "imdb" / "aclImdb_labeled.tar.xz", max_per_class=args.texts // 2)
    texts, labels = data.texts, data.labels
    device = torch.device(args.device)
    results = []
    for name, model, tokenizer in encoders(texts, args.max_length, args.pretrained_path):
        encoded = tokenizer.encode(texts)
        tokens = int(encoded.lengths.sum())
        task = TextClassificationTask(encoded.ids, labels, encoded.ids[:32], labels[:32], pad_id=tokenizer.pad_id)
        config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=1e-4, device=args.device)
        result = train(model, task, config, None, quiet=True)
        train_rate = tokens / result.train_seconds
        model.to(device)
        pooled_features(model, encoded.ids[:64], device)  # warm-up
        t0 = time.perf_counter()
        tokenized = tokenizer.encode(texts).ids
        pooled_features(model, tokenized, device, batch_size=128)
        embed_seconds = time.perf_counter() - t0
        row = {"model": name, "texts": len(texts), "mean_tokens": round(tokens / len(texts), 1),
               "max_length": args.max_length, "params": sum(p.numel() for p in model.parameters()),
               "train_tokens_per_second": round(train_rate), "train_seconds": round(result.train_seconds, 1),
               "embed_texts_per_second": round(len(texts) / embed_seconds, 1),
               "device": args.device, "torch_threads": torch.get_num_threads(), "load": os.getloadavg()[0],
               "date": time.strftime("%Y-%m-%d")}
        results.append(row)
        print(json.dumps(row), flush=True)
    write_results(Path(args.out) if args.out else result_path("text_throughput", 0, f"{args.texts}texts"),
                  results, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
