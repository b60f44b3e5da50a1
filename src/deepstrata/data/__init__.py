"""Readers that turn raw files into tensors plus a description of what they hold."""
