"""User-facing errors.

Anything a user can cause with a bad file, path, key or value raises a subclass of
``DeepstrataError``. The CLI prints ``deepstrata: error: <message>`` on one line and
exits with status 2 — no traceback — so messages must name the file, line, column or
key and say what was expected.
"""


class DeepstrataError(Exception):
    """Base class: a problem with the user's input, reported in one line."""

    exit_code = 2


class DataError(DeepstrataError):
    """A data source is missing, empty, malformed or of the wrong kind."""


class ConfigError(DeepstrataError):
    """An unknown config key, or a value of the wrong type or range."""


class RunError(DeepstrataError):
    """A run directory is missing, incomplete, or would be overwritten."""
