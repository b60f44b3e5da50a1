"""Byte-level BPE learned from the training split: round trip, Unicode, empty and long texts."""

from __future__ import annotations

import numpy as np
import pytest

from deepstrata.data.tokenizer import TextTokenizer, pad_batch
from deepstrata.errors import RunError


@pytest.fixture(scope="module")
def corpus(ag_news) -> list[str]:
    return ag_news.texts[:600]


@pytest.fixture(scope="module")
def tokenizer(corpus) -> TextTokenizer:
    return TextTokenizer.train_bpe(corpus, vocab_size=1000, max_length=48)


def test_vocabulary_is_learned_from_the_given_texts(tokenizer, corpus):
    assert tokenizer.vocab_size == 1000
    vocab = tokenizer.tokenizer.get_vocab()
    assert vocab["[PAD]"] == 0 and vocab["[CLS]"] == 1
    assert "Ġthe" in vocab  # a frequent word of the corpus became one token
    # A word absent from the training texts is spelled from smaller pieces, never an unknown token.
    unseen = "zyzzogeton"
    assert all(unseen not in text for text in corpus)
    ids = tokenizer.encode([unseen]).ids[0]
    assert len(ids) > 2 and tokenizer.tokenizer.decode(ids.tolist()).strip() == unseen


def test_save_load_round_trip(tokenizer, corpus, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = TextTokenizer.from_file(tmp_path / "tokenizer.json", max_length=48)
    before, after = tokenizer.encode(corpus[:50]), loaded.encode(corpus[:50])
    assert all(np.array_equal(a, b) for a, b in zip(before.ids, after.ids))
    with pytest.raises(RunError, match="tokenizer file not found"):
        TextTokenizer.from_file(tmp_path / "missing.json", max_length=48)
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RunError, match="not a readable tokenizer.json"):
        TextTokenizer.from_file(tmp_path / "broken.json", max_length=48)


def test_unicode_empty_and_long_texts(tokenizer):
    texts = ["", "naïve café 😀 日本語 \x00\t", "word " * 500, "short"]
    encoded = tokenizer.encode(texts, with_offsets=True)
    assert encoded.ids[0].tolist() == [1]  # an empty text is just [CLS]
    assert all(ids[0] == 1 for ids in encoded.ids)
    assert encoded.lengths.max() == 48 and encoded.truncated == 1
    assert tokenizer.tokenizer.decode(encoded.ids[1].tolist()).strip() == texts[1].strip()
    tokens = tokenizer.token_strings(texts[1], encoded.ids[1], encoded.offsets[1], encoded.special[1])
    assert tokens[0] == "[CLS]"
    # Whole characters read as text; a character split over tokens shows as its UTF-8 bytes in hex.
    assert "<0xC3>" in tokens and "<0xAF>" in tokens  # ï was never merged: two byte tokens
    rebuilt = b"".join(_bytes_of(t) for t in tokens[1:])
    assert rebuilt == (" " + texts[1]).encode("utf-8")


def _bytes_of(token: str) -> bytes:
    if token.startswith("<0x"):
        return bytes(int(part, 16) for part in token[3:-1].split("><0x"))
    return token.encode("utf-8")


def test_training_is_deterministic(corpus):
    a = TextTokenizer.train_bpe(corpus, vocab_size=800, max_length=64)
    b = TextTokenizer.train_bpe(corpus, vocab_size=800, max_length=64)
    assert a.tokenizer.to_str() == b.tokenizer.to_str()


def test_pad_batch():
    out = pad_batch([np.array([1, 5, 6]), np.array([1])])
    assert out.tolist() == [[1, 5, 6], [1, 0, 0]] and out.dtype == np.int64
