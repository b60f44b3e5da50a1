"""Run by the distributed tests, as one process or under torchrun with 2 gloo processes.

Trains a BatchNorm-free model on digits through the engine (BatchNorm statistics are
per-process under DDP, so only a model without it can match a single process exactly)
and writes each rank's final weights and validation metrics to OUT.
"""

import json
import sys
from pathlib import Path

import torch
from torch import nn

from deepstrata.config import TrainConfig
from deepstrata.data.images import load_images
from deepstrata.data.split import split_dataset
from deepstrata.engine import distributed
from deepstrata.engine.checkpoint import save_weights
from deepstrata.engine.loop import train
from deepstrata.families.image.task import ImageClassificationTask


def main(out: Path) -> None:
    splits = split_dataset(load_images("digits"), seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    # 7 validation examples: an odd count that 2 processes cannot split evenly.
    task = ImageClassificationTask(splits.train_x, splits.train_y, splits.val_x[:7], splits.val_y[:7],
                                   num_classes=10, label_smoothing=0.1)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3, device="cpu", seed=0)
    train(model, task, cfg, out / "run", quiet=True)
    env = distributed.current()
    metrics = task.validate(model, torch.device("cpu"))
    # Fewer validation examples than processes: rank 1 holds none and still takes part.
    lone = ImageClassificationTask(splits.train_x, splits.train_y, splits.val_x[7:8], splits.val_y[7:8],
                                   num_classes=10)
    metrics.update({f"lone_{k}": v for k, v in lone.validate(model, torch.device("cpu")).items()})
    save_weights(out / f"rank{env.rank}.safetensors", model)
    (out / f"rank{env.rank}.json").write_text(json.dumps({"world_size": env.world_size, **metrics}))
    distributed.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
