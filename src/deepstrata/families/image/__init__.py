"""The image family: image sets in memory (digits, MNIST, CIFAR, folders, IDX) and shard directories streamed."""

from deepstrata.families.image.family import ImageFamily

__all__ = ["ImageFamily"]
