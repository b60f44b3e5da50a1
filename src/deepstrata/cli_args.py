"""What every verb's parser shares: short errors, checked numbers, and messages in flag names.

* ``Parser`` prints a bad command line as three lines (a short usage, the error naming
  the flag, where the full help is) instead of argparse's usage of every option, and
  names an unknown option with the closest real one. Exit status 2, as argparse.
* ``number(key)`` is the ``type=`` of a numeric flag: it parses with the rule of the
  config key the flag sets (``config.NUMBERS``), so ``--lr nan`` is refused by its flag
  before anything runs, by the same rule that refuses ``train.lr: .nan`` in a YAML file.
* ``task_only`` marks the ``fit`` flags that apply to some tasks only; ``misapplied``
  names the first such flag a command line sets for another task.
* ``in_flag_names`` rewrites the config keys of a validation message (``text.dim``) as
  the flags that set them (``--dim``), and ``for_verb`` leaves out a hint that points to
  an option the running verb does not have.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import re
import sys
from pathlib import Path

from deepstrata.config import NUMBERS, Number
from deepstrata.config_numbers import is_number
from deepstrata.errors import ConfigError, DeepstrataError

SECTIONS = ("data", "model", "train", "text", "recommend")

# What ``--format`` takes for an image source: ``data.images.FORMATS``, written out here so that
# building the parser does not import the data loaders (and torch); a test keeps the two equal.
IMAGE_FORMATS = ("digits", "folder", "idx", "cifar")
_KEY = re.compile(r"\b(" + "|".join(SECTIONS) + r")\.([a-z_]+)\b")
_FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


# What argparse takes for a negative number rather than an option: also -1e-3, -inf, -nan
# (so `--min-rating -1e3` is a value, and `--lr -inf` is refused as a value, by its rule).
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors fit in three lines; sub-parsers are of this class too."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> None:  # type: ignore[override]
        message = re.sub(r"^argument ([^:]+): ", lambda m: f"{m.group(1).split('/')[0]}: ", message)
        self.exit(2, f"{self.short_usage()}\n{self.prog}: error: {message}\nsee '{self.prog} --help'\n")

    def short_usage(self) -> str:
        words = [f"usage: {self.prog}"]
        for action in self._actions:
            if not action.option_strings:
                name = action.metavar or action.dest.upper()
                words.append({"*": f"[{name} ...]", "?": f"[{name}]", "+": f"{name} [{name} ...]"}.get(
                    action.nargs, name))
            elif action.required:
                words.append(f"{action.option_strings[0]} {action.metavar or action.dest.upper()}")
        return " ".join(words + ["[options]"])

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            target = verb_parser(self, parsed) or self
            target.error(target.unknown(extras))
        return parsed

    def unknown(self, extras: list[str]) -> str:
        """Name the first argument the verb does not take, and its closest option if one is close."""
        first = extras[0]
        if not first.startswith("-"):
            return f"unexpected argument {first!r}" + (f" (and {len(extras) - 1} more)" if len(extras) > 1 else "")
        name = first.split("=", 1)[0]
        options = [o for action in self._actions for o in action.option_strings]
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
        return f"{name}: not an option of {self.prog}" + (f" (did you mean {close[0]}?)" if close else "")


def verb_parser(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> Parser | None:
    """The sub-parser of the verb ``parsed`` was parsed with (None if there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(getattr(parsed, action.dest, None))
    return None


def number(rule: str | Number):
    """A ``type=`` for a numeric flag, checked by a config key's rule (``"train.lr"``) or by ``rule`` itself."""
    checked = NUMBERS[rule] if isinstance(rule, str) else rule

    def parse(text: str):
        try:
            value = int(text) if checked.kind is int else float(text)
        except ValueError:
            shown = text if is_number(text) else repr(text)
            raise argparse.ArgumentTypeError(f"got {shown}, expected {checked.expected()}") from None
        try:
            return checked.check("", value, shown=text)
        except ConfigError:
            raise argparse.ArgumentTypeError(f"got {text}, expected {checked.expected()}") from None

    parse.__name__ = checked.kind.__name__
    parse.rule = checked  # type: ignore[attr-defined]
    return parse


POSITIVE_COUNT = Number(int, low=1, low_open=False)

# --- fit flags that apply to some tasks only ---------------------------------------------------

_TASK_ONLY: dict[str, tuple[str, ...]] = {}
_DATA_OF = {"image": "image data", "text": "text data", "recommend": "interaction logs (--task recommend)"}
_NOT_TO = {"image": "images", "text": "text", "recommend": "an interaction log"}
# (the family the data was read as, the family the flag belongs to) -> how to say which was meant
_TASK_HINTS = {("image", "text"): "add --task text if --data holds texts",
               ("image", "recommend"): "add --task recommend if --data is an interaction log"}


def task_only(action: argparse.Action, *tasks: str) -> argparse.Action:
    """Mark a ``fit`` flag as applying to ``tasks`` only (image, text, recommend); returns the action."""
    _TASK_ONLY[action.dest] = tasks
    return action


def misapplied(parser: argparse.ArgumentParser, args: argparse.Namespace, task: str) -> DeepstrataError | None:
    """An error naming the first flag ``args`` sets that does not apply to a ``task`` run, or None."""
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}
    for dest, tasks in _TASK_ONLY.items():
        if task in tasks or getattr(args, dest, None) is None:
            continue
        hint = next((text for (detected, wanted), text in _TASK_HINTS.items()
                     if detected == task and (wanted in tasks if wanted == "text" else tasks == (wanted,))), None)
        return ConfigError(f"{flags.get(dest, dest)} applies to {' and '.join(_DATA_OF[t] for t in tasks)}, "
                           f"not to {_NOT_TO[task]}", hint=hint)
    return None


# --- config keys in flag names ---------------------------------------------------------------

# Config keys that a flag of another name sets (the rest are set by the flag of their field's name).
ALIASES = {"data.source": ("data",), "model.name": ("model",), "transfer.source": ("transfer_from",), "text.format": ("text_format",),
           "text.dim": ("dim", "width"), "text.layers": ("layers",), "recommend.dim": ("dim", "width"),
           "recommend.blocks": ("layers",), "recommend.interactions_format": ("format",)}


def in_flag_names(message: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                  values_from_file: bool) -> str:
    """``message`` with each config key a flag of ``parser`` sets written as that flag.

    A key is renamed when the command line set its flag, or, when no config file (``--config``
    or a resumed run's) gave values, whenever the verb has a flag for it. A keyword's name
    that starts the message (``shard_size: …``, as the API names it) becomes its flag too.
    """
    flags = {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}

    def rename(match: re.Match) -> str:
        key = match.group(0)
        dests = [d for d in ALIASES.get(key, (match.group(2),)) if d in flags]
        given = [d for d in dests if getattr(args, d, None) is not None]
        if given:
            return flags[given[0]]
        if dests and not values_from_file:
            return flags[dests[0]]
        return key

    lead = re.match(r"(\w+): ", message)  # a keyword's name (shard_size: …) at the start
    if lead and lead.group(1) in flags:
        message = flags[lead.group(1)] + message[lead.end(1):]
    return _KEY.sub(rename, message)


def for_verb(err: DeepstrataError, parser: argparse.ArgumentParser | None) -> str:
    """The line for ``err``, without the hint (or the alternatives of it) naming an option ``parser``'s verb lacks."""
    if parser is None or not err.hint:
        return str(err)
    options = {o for action in parser._actions for o in action.option_strings}

    def offered(text: str) -> bool:
        return set(_FLAG.findall(text)) <= options

    if isinstance(err.hint, tuple):
        return err.with_hint(tuple(alternative for alternative in err.hint if offered(alternative)))
    return str(err) if offered(err.hint) else err.with_hint(None)


def os_error_line(err: OSError) -> str:
    """``PATH: reason`` for an OSError (``reason`` alone when the error names no path).

    A "Not a directory" names the part of the path that is a file (``--out notes.csv/run``).
    """
    reason = err.strerror or str(err)
    if err.filename is None:
        return f"{reason} (DEEPSTRATA_DEBUG=1 shows where)"
    path = os.fsdecode(err.filename) if isinstance(err.filename, (str, bytes, os.PathLike)) else str(err.filename)
    if err.errno == errno.ENOTDIR:
        for parent in [Path(path), *Path(path).parents]:
            if parent.exists() and not parent.is_dir():
                reason = f"{reason} ({parent} is a file)"
                break
    if err.filename2 is not None:
        path = f"{path} -> {os.fsdecode(err.filename2)}"
    return f"{path}: {reason}"


def warn(message: str) -> None:
    print(f"deepstrata: warning: {message}", file=sys.stderr)
