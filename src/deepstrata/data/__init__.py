"""Readers that turn raw files into tensors plus a description of what they hold."""

from deepstrata.data.text import text_table  # noqa: E402  (ds.data.text_table)
