"""The model names each task takes, without importing torch.

``deepstrata.models.registry`` builds the models and re-exports these tuples; the CLI
reads them from here so that building its parser (``deepstrata --help``) stays torch-free.
"""

from __future__ import annotations

IMAGE_MODELS: tuple[str, ...] = ("cnn", "mlp", "whitened-cnn", "efficientnet-lite0")
TEXT_MODELS: tuple[str, ...] = ("transformer", "minilm")
RECOMMEND_MODELS: tuple[str, ...] = ("sasrec", "mf")

# Every name accepted by --model / ModelConfig.name.
MODEL_NAMES: tuple[str, ...] = IMAGE_MODELS + TEXT_MODELS + RECOMMEND_MODELS
