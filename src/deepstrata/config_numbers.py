"""The numeric rules of a run config: what type and range each number must meet, in one table.

A number is checked in two places — when a config section is built (from YAML or from
Python) and when the CLI flag that sets it is parsed (``cli_args.number``) — and both
must say the same thing in the same words. So each rule is a ``Number`` and every numeric
field of every section has its rule here, in ``NUMBERS``, keyed by its config name
(``train.lr``); the section dataclasses in ``deepstrata.config`` apply them with
``check_numbers``. ``deepstrata.config`` re-exports every name.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from deepstrata.errors import ConfigError


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


@dataclass(frozen=True)
class Number:
    """The type and range a numeric config field (and the flag that sets it) must meet.

    ``low``/``high`` bound the value (``None``: unbounded), excluded when ``*_open``;
    ``optional`` admits ``None`` (sized from the data, or unset). Floats must be finite:
    NaN or infinity would train to NaN.
    """

    kind: type = float
    low: float | None = 0.0
    low_open: bool = True
    high: float | None = None
    high_open: bool = True
    optional: bool = False
    note: str = ""

    def expected(self) -> str:
        integer = self.kind is int
        if self.low is None and self.high is None:
            text = "an integer" if integer else "a finite number"
        elif self.high is None:
            if (self.low == 0 and self.low_open) or (integer and self.low == 1 and not self.low_open):
                text = "a positive integer" if integer else "a finite positive number"
            else:
                text = f"{'an integer' if integer else 'a finite number'} {'>' if self.low_open else '>='} {_fmt(self.low)}"
        elif self.low is not None and not self.low_open and not self.high_open:
            text = f"{'an integer' if integer else 'a number'} from {_fmt(self.low)} to {_fmt(self.high)}"
        else:
            text = (f"{'an integer' if integer else 'a number'} {'>' if self.low_open else '>='} {_fmt(self.low)} "
                    f"and {'<' if self.high_open else '<='} {_fmt(self.high)}")
        return f"{text} ({self.note})" if self.note else text

    def check(self, key: str, value: Any, shown: str | None = None) -> Any:
        """``value`` if it is of the kind and in range (a numeric string for a float is read), else ConfigError.

        ``shown`` is how the message quotes the value (a flag's text as typed).
        """
        if value is None and self.optional:
            return None
        number = self._number(value)
        if number is None or not self._in_range(number):
            raise ConfigError(f"{key}: got {shown if shown is not None else repr(value)}, expected {self.expected()}")
        return number

    def _number(self, value: Any) -> int | float | None:
        if isinstance(value, bool):
            return None
        if self.kind is int:
            return int(value) if isinstance(value, numbers.Integral) else None
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                return None
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            return None
        return value if isinstance(value, (int, float)) else float(value)

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        return self.high is None or value < self.high or not self.high_open and value == self.high


POSITIVE_INT = Number(int, low=1, low_open=False)
COUNT = Number(int, low=0, low_open=False)
POSITIVE = Number(float)
NON_NEGATIVE = Number(float, low_open=False)
FRACTION = Number(float, low=0.0, low_open=False, high=1.0)  # [0, 1)
SEED_MAX = 2**32 - 1

# Every numeric field of every section, by its config key. Each config validates its own on
# construction, and each CLI flag that sets one parses with the same rule (``cli_args.number``).
NUMBERS: dict[str, Number] = {
    "data.image_size": Number(int, low=1, low_open=False, optional=True),
    "data.labels_per_class": Number(int, low=1, low_open=False, optional=True),
    "data.val_fraction": Number(float, low_open=False, high=1.0, note="0: no validation split"),
    "data.test_fraction": Number(float, high=1.0),
    "model.width": POSITIVE_INT,
    "model.depth": Number(int, low=1, low_open=False, optional=True),
    "train.epochs": Number(int, low=1, low_open=False, optional=True),
    "train.batch_size": Number(int, low=1, low_open=False, optional=True),
    "train.lr": POSITIVE,
    "train.weight_decay": NON_NEGATIVE,
    "train.warmup_fraction": FRACTION,
    "train.label_smoothing": FRACTION,
    "train.grad_clip": Number(float, low_open=False, note="0: no clipping"),
    "train.seed": Number(int, low=0, low_open=False, high=SEED_MAX, high_open=False),
    "train.devices": POSITIVE_INT,
    "train.patience": Number(int, low=0, low_open=False, note="0: never stop early"),
    "train.checkpoint_every": Number(int, low=0, low_open=False, note="0: by time only"),
    "train.checkpoint_seconds": Number(float, low=0, low_open=False, note="0: at every epoch's end"),
    "train.eval_batch_size": POSITIVE_INT,
    "train.threads": Number(int, low=1, low_open=False, optional=True),
    "train.momentum": FRACTION,
    "train.norm_lr_scale": POSITIVE,
    "train.lr_start": Number(float, low_open=False, high=1.0, high_open=False, note="a fraction of train.lr"),
    "train.lr_end": Number(float, low_open=False, high=1.0, high_open=False, note="a fraction of train.lr"),
    "train.translate": Number(int, low=0, low_open=False, optional=True),
    "recommend.min_rating": Number(float, low=None, optional=True),
    "recommend.temporal_val_fraction": Number(float, high=0.5),
    "recommend.temporal_test_fraction": Number(float, high=0.5),
    "recommend.dim": POSITIVE_INT,
    "recommend.blocks": POSITIVE_INT,
    "recommend.heads": POSITIVE_INT,
    "recommend.max_seq_len": POSITIVE_INT,
    "recommend.dropout": FRACTION,
    "recommend.negatives": Number(int, low=0, low_open=False, note="0: the full softmax"),
    "recommend.bpr_reg": NON_NEGATIVE,
    "recommend.update_epochs": POSITIVE_INT,
    "text.vocab_size": Number(int, low=300, low_open=False, note="256 bytes + specials"),
    "text.max_length": Number(int, low=2, low_open=False),
    "text.dim": POSITIVE_INT,
    "text.layers": POSITIVE_INT,
    "text.heads": POSITIVE_INT,
    "text.ff_mult": POSITIVE_INT,
    "text.dropout": FRACTION,
}


def check_numbers(config: Any, section: str) -> None:
    """Check (and normalise: numpy ints to int, numeric strings to float) each numeric field of ``section``."""
    prefix = f"{section}."
    for key, rule in NUMBERS.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            object.__setattr__(config, name, rule.check(key, getattr(config, name)))


def is_number(text: str) -> bool:
    """``text`` reads as a number (``float`` accepts it: ``1e-3``, ``nan``, ``inf`` too)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
