"""Run by the text distributed tests, as one process or under torchrun with 2 gloo processes.

Learns a BPE tokenizer and trains a tiny Transformer (dropout 0: dropout masks are drawn
per process, so only a model without dropout can match one process exactly) on a small
synthetic corpus through the engine, with no run directory so that each rank keeps the
weights it trained itself, and writes each rank's final weights, validation metrics and
tokenizer to OUT. With more arguments it runs the dropout resume check instead
(``dropout_main``).

45 training texts in batches of 8: the last batch (5) does not split evenly over 2
processes; 7 validation texts do not either.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from deepstrata.config import TrainConfig
from deepstrata.data.tokenizer import TextTokenizer
from deepstrata.engine import distributed
from deepstrata.engine.checkpoint import save_weights
from deepstrata.engine.loop import train
from deepstrata.models.transformer import TransformerClassifier
from deepstrata.families.text.tasks import TextClassificationTask

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # run as a script by torchrun: find `tests`
from tests.engine.test_loop import CrashingTask  # noqa: E402

TOPICS = (("goal", "match", "striker", "league", "coach", "score"),
          ("stock", "market", "shares", "profit", "bank", "trade"),
          ("chip", "software", "robot", "science", "laptop", "data"))
FILLER = ("the", "a", "of", "and", "in", "on", "today", "new", "big", "after", "week", "said")


def corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` short texts of 3 topics (labels ``i % 3``), 3 to 12 words each, a few topic words among fillers."""
    rng = np.random.default_rng(seed)
    texts, labels = [], np.arange(n) % 3
    for label in labels:
        words = [rng.choice(TOPICS[label]) if rng.random() < 0.4 else rng.choice(FILLER)
                 for _ in range(int(rng.integers(3, 13)))]
        texts.append(" ".join(words))
    return texts, labels


def main(out: Path) -> None:
    texts, labels = corpus(52)
    train_texts, val_texts = texts[:45], texts[45:]
    tokenizer = TextTokenizer.train_bpe(train_texts, 300, 16)
    train_ids, val_ids = tokenizer.encode(train_texts).ids, tokenizer.encode(val_texts).ids
    torch.manual_seed(0)
    model = TransformerClassifier(tokenizer.vocab_size, 3, dim=16, layers=1, heads=2, max_length=16, dropout=0.0)
    task = TextClassificationTask(train_ids, labels[:45], val_ids, labels[45:], label_smoothing=0.1)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, grad_clip=1.0, device="cpu", seed=0)
    result = train(model, task, cfg, None, quiet=True)
    env = distributed.current()
    metrics = task.validate(model, torch.device("cpu"))
    save_weights(out / f"rank{env.rank}.safetensors", model)
    (out / f"rank{env.rank}.json").write_text(json.dumps({
        "world_size": env.world_size, "best_epoch": result.best_epoch, "steps": result.steps,
        "history": result.history, "tokenizer": hashlib.sha256(tokenizer.tokenizer.to_str().encode()).hexdigest(),
        **metrics,
    }))
    distributed.teardown()


def dropout_main(out: Path, run_dir: Path, crash_after: int, resume: bool) -> None:
    """Dropout 0.3, checkpoints every 4 steps into ``run_dir``; optionally crash or resume.

    Writes each rank's next random draw after training, to show the ranks draw differently.
    """
    texts, labels = corpus(52)
    tokenizer = TextTokenizer.train_bpe(texts[:45], 300, 16)
    train_ids, val_ids = tokenizer.encode(texts[:45]).ids, tokenizer.encode(texts[45:]).ids
    torch.manual_seed(0)
    model = TransformerClassifier(tokenizer.vocab_size, 3, dim=16, layers=1, heads=2, max_length=16, dropout=0.3)
    task = TextClassificationTask(train_ids, labels[:45], val_ids, labels[45:], label_smoothing=0.1)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, device="cpu", seed=0, checkpoint_every=4)
    train(model, CrashingTask(task, crash_after) if crash_after else task, cfg, run_dir, resume=resume, quiet=True)
    rank = distributed.current().rank
    (out / f"draw{rank}.txt").write_text(repr(torch.rand(3).tolist()))
    distributed.teardown()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if len(sys.argv) > 2:  # dropout mode: OUT RUN_DIR CRASH_AFTER RESUME
        dropout_main(out, Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "resume")
    else:
        main(out)
