"""The text family: labelled texts (tables, fastText files, folders, aclImdb archives) → a text classifier."""

from deepstrata.families.text.family import TextFamily

__all__ = ["TextFamily"]
