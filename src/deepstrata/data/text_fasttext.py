"""fastText training files: one ``__label__<class> text`` per line.

The fastText form is how many text classification sets are shipped (and how fastText
itself trains), so a ``.txt`` given for training is read as one. Kept apart from
``read_texts`` (plain lines to predict or embed): a line without a label is an error
naming it, not a text.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from deepstrata.data.text_dataset import TextDataset, decode_bytes, natural_key
from deepstrata.errors import DataError

_FASTTEXT = re.compile(r"__label__(\S+)\s?")


def read_fasttext(path: str | Path, *, encoding: str = "utf-8") -> TextDataset:
    """Lines ``__label__<class> text`` (the first label of a line is used)."""
    path = Path(path)
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: empty file; expected lines '__label__<class> <text>'")
    text = decode_bytes(data, encoding, path)
    texts: list[str] = []
    raw: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        match = _FASTTEXT.match(line)
        if match is None:
            raise DataError(f"{path}: line {number}: expected '__label__<class> <text>' (fastText form); a .txt of "
                            f"plain lines is for predict and embed, not for training")
        raw.append(match.group(1))
        texts.append(_FASTTEXT.sub("", line.rstrip("\r")).strip())
    classes = sorted(set(raw), key=natural_key)
    lookup = {name: i for i, name in enumerate(classes)}
    return TextDataset(texts=texts, labels=np.array([lookup[v] for v in raw], dtype=np.int64), classes=classes)
