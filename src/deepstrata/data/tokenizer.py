"""Tokenizers for text runs: byte-level BPE learned from the training split, or a pretrained one.

Byte-level BPE (GPT-2's scheme, through the ``tokenizers`` library) starts from the 256
byte values, so any Unicode string — accents, CJK, emoji, control characters — becomes
tokens with no unknown-token fallback; merges learned from the training texts alone then
shorten frequent words. Conventions every text model relies on: id 0 is padding, and each
text starts with a ``[CLS]`` token, so even an empty string has one token to classify.

Truncation keeps the first ``max_length`` tokens (special tokens included), or under
``head+tail`` the first quarter of them and the last three quarters (``head_tail``: Sun et
al. 2019 found the end of a long review tells its sentiment better than its middle); how
many texts were cut is counted and reported, because silently dropping part of long
reviews changes what a model can learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepstrata.engine.checkpoint import atomic_write_text
from deepstrata.errors import ConfigError, RunError

PAD, CLS = "[PAD]", "[CLS]"
SPECIAL_TOKENS = (PAD, CLS)


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ConfigError("text runs need the 'tokenizers' package: pip install tokenizers "
                          "(or pip install 'deepstrata[text]')") from None
    return tokenizers


@dataclass
class Encoded:
    """Token ids of a batch of texts: one int64 array per text, and how many were truncated."""

    ids: list[np.ndarray]
    truncated: int
    offsets: list[list[tuple[int, int]]] | None = None
    special: list[np.ndarray] | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(i) for i in self.ids], dtype=np.int64)


TRUNCATIONS = ("head", "head+tail")


def head_tail(length: int, max_length: int) -> np.ndarray:
    """The positions a ``length``-token text keeps under head+tail truncation to ``max_length``.

    All of them when it fits; otherwise the first ``max_length // 4`` and the last
    ``max_length - max_length // 4`` (at 512: 128 and 384, Sun et al.'s head-128 + tail-382
    with the two special tokens counted), so a leading ``[CLS]`` and a closing ``[SEP]`` stay.
    """
    if length <= max_length:
        return np.arange(length)
    head = max_length // 4
    return np.concatenate([np.arange(head), np.arange(length - (max_length - head), length)])


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with padding id 0, a leading ``[CLS]`` and a length limit.

    ``truncate`` is ``head`` (the library's own truncation: the first ``max_length``
    tokens) or ``head+tail`` (the whole text is encoded, then cut by ``head_tail``).
    """

    def __init__(self, tokenizer, max_length: int, kind: str, truncate: str = "head") -> None:
        if truncate not in TRUNCATIONS:
            raise ConfigError(f"text.truncate: got {truncate!r}, expected one of {', '.join(TRUNCATIONS)}")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.kind = kind
        self.truncate = truncate
        self.tokenizer.no_padding()
        if truncate == "head":
            self.tokenizer.enable_truncation(self.max_length)
        else:
            self.tokenizer.no_truncation()
        pad = tokenizer.token_to_id(PAD)
        if pad != 0:
            raise RunError(f"tokenizer: expected {PAD} to have id 0, got {pad}")
        self.pad_id = 0

    @classmethod
    def train_bpe(cls, texts: list[str], vocab_size: int, max_length: int, min_frequency: int = 2,
                  truncate: str = "head") -> "TextTokenizer":
        """Learn byte-level BPE merges from ``texts`` (the training split only) up to ``vocab_size`` tokens."""
        tk = _tokenizers()
        tokenizer = tk.Tokenizer(tk.models.BPE())
        tokenizer.normalizer = tk.normalizers.NFC()
        tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer, length=len(texts))
        tokenizer.post_processor = tk.processors.TemplateProcessing(
            single=f"{CLS} $A", special_tokens=[(CLS, tokenizer.token_to_id(CLS))],
        )
        return cls(tokenizer, max_length, "bpe", truncate)

    @classmethod
    def from_file(cls, path: str | Path, max_length: int, kind: str = "bpe", truncate: str = "head") -> "TextTokenizer":
        """Load a ``tokenizer.json`` (a run's own, or a pretrained encoder's)."""
        tk = _tokenizers()
        path = Path(path)
        if not path.is_file():
            raise RunError(f"{path}: tokenizer file not found")
        try:
            tokenizer = tk.Tokenizer.from_file(str(path))
        except Exception as err:  # the Rust side raises a bare Exception for a malformed file
            raise RunError(f"{path}: not a readable tokenizer.json ({str(err).splitlines()[0]})") from None
        return cls(tokenizer, max_length, kind, truncate)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.tokenizer.to_str())

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: list[str], *, with_offsets: bool = False) -> Encoded:
        """Ids (``[CLS]`` first, at most ``max_length``) of each text; offsets index the original string."""
        encodings = self.tokenizer.encode_batch(list(texts))
        if self.truncate == "head+tail":
            return self._head_tail(encodings, with_offsets)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        truncated = sum(1 for e in encodings if e.overflowing)
        if not with_offsets:
            return Encoded(ids=ids, truncated=truncated)
        return Encoded(
            ids=ids, truncated=truncated, offsets=[list(e.offsets) for e in encodings],
            special=[np.asarray(e.special_tokens_mask, dtype=bool) for e in encodings],
        )

    def _head_tail(self, encodings, with_offsets: bool) -> Encoded:
        kept = [head_tail(len(e.ids), self.max_length) for e in encodings]
        ids = [np.asarray(e.ids, dtype=np.int64)[keep] for e, keep in zip(encodings, kept)]
        truncated = sum(1 for e in encodings if len(e.ids) > self.max_length)
        if not with_offsets:
            return Encoded(ids=ids, truncated=truncated)
        return Encoded(
            ids=ids, truncated=truncated,
            offsets=[[e.offsets[i] for i in keep.tolist()] for e, keep in zip(encodings, kept)],
            special=[np.asarray(e.special_tokens_mask, dtype=bool)[keep] for e, keep in zip(encodings, kept)],
        )

    def token_strings(self, text: str, ids: np.ndarray, offsets: list[tuple[int, int]],
                      special: np.ndarray) -> list[str]:
        """What each token stands for: the special token's name, or its piece of ``text``.

        A byte-level token is shown as the bytes it holds (``" naïve"``); a token holding
        only part of a character's UTF-8 bytes (emoji, CJK) is shown in hex (``<0xF0><0x9F>``).
        A WordPiece token is its span of ``text``.
        """
        out = []
        for token_id, (start, end), is_special in zip(ids.tolist(), offsets, special.tolist()):
            token = self.tokenizer.id_to_token(int(token_id))
            if is_special or token is None:
                out.append(token or "")
            elif self.kind == "bpe":
                raw = bytes(_BYTE_OF[c] for c in token)
                try:
                    out.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    out.append("".join(f"<0x{b:02X}>" for b in raw))
            else:
                out.append(text[start:end])
        return out


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table that byte-level BPE tokens are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


_BYTE_OF = {char: byte for byte, char in _bytes_to_unicode().items()}


def pad_batch(ids: list[np.ndarray], pad_id: int = 0) -> np.ndarray:
    """Right-pad ids to the longest in the batch: ``[B, L]`` int64."""
    length = max((len(i) for i in ids), default=1)
    out = np.full((len(ids), max(length, 1)), pad_id, dtype=np.int64)
    for row, seq in enumerate(ids):
        out[row, : len(seq)] = seq
    return out
