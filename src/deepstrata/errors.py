"""User-facing errors.

Anything a user can cause with a bad file, path, key or value raises a subclass of
``DeepstrataError``. The CLI prints ``deepstrata: error: <message>`` on one line and
exits with status 2 — no traceback — so messages must name the file, line, column or
key and say what was expected.
"""


class DeepstrataError(Exception):
    """Base class: a problem with the user's input, reported in one line.

    ``hint`` is the part of the line that tells what to do (``name it with --user-column``);
    it is kept apart so that the CLI can leave out a hint naming an option the running
    verb does not have (``update`` reads a log with the run's columns: no ``--user-column``).
    A tuple of alternatives (``("--resume to continue it", "another --out")``) reads
    "use A, B or C", and the CLI keeps those the verb has.
    """

    exit_code = 2

    def __init__(self, message: str = "", *, hint: str | tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.with_hint(self.hint)

    def with_hint(self, hint: str | tuple[str, ...] | None) -> str:
        """The line with ``hint`` (this error's, or a part of its alternatives) after the message."""
        if isinstance(hint, tuple):
            hint = ("use " + (" or ".join(hint) if len(hint) < 3 else f"{', '.join(hint[:-1])} or {hint[-1]}")
                    if hint else None)
        return f"{self.message}; {hint}" if hint else self.message


class DataError(DeepstrataError):
    """A data source is missing, empty, malformed or of the wrong kind."""


class ConfigError(DeepstrataError):
    """An unknown config key, or a value of the wrong type or range.

    ``origin`` is the config file the bad value came from (``None``: a keyword or a flag),
    so that the CLI names a flag's value by its flag and a file's value by its key.
    """

    def __init__(self, message: str = "", *, hint: str | tuple[str, ...] | None = None,
                 origin: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.origin = origin


class RunError(DeepstrataError):
    """A run directory is missing, incomplete, or would be overwritten."""


class TrainingError(DeepstrataError):
    """Training cannot go on (e.g. the loss is no longer a finite number); the last checkpoint is kept."""


class Interrupted(DeepstrataError):
    """A run stopped on SIGTERM or SIGINT after writing a checkpoint; ``exit_code`` is 128 + the signal.

    143 for SIGTERM (SLURM preemption, Kubernetes eviction, ``kill``), 130 for SIGINT
    (Ctrl-C): the statuses a shell reports for a process those signals end.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)
