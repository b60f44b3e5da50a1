"""The recommendation family: interaction logs → a sequence or embedding recommender."""

from deepstrata.families.recommend.family import RecommendFamily

__all__ = ["RecommendFamily"]
