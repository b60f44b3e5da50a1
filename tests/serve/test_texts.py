"""/predict and /embed of a text run over real HTTP: equal to ``run.predict``; its bad requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from deepstrata.serve import app
from tests.serve.conftest import hold_first_pass, live

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def client(text_run):
    with live(app(text_run, max_wait_ms=20)) as c:
        yield c


def same(served: list[dict], expected: list) -> None:
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        want = want.to_dict()
        assert got["text"] == want["text"] and got["label"] == want["label"]
        assert got["probabilities"].keys() == want["probabilities"].keys()
        assert all(abs(got["probabilities"][k] - v) <= TOLERANCE for k, v in want["probabilities"].items())


def test_texts_equal_run_predict_in_input_order(client, text_run, news_texts):
    texts = news_texts + ["", "short", "ünïcode — text " * 50]
    answer = client.post("/predict", json={"texts": texts})
    assert answer.status_code == 200
    same(answer.json()["predictions"], text_run.predict(texts))


def test_concurrent_text_requests_are_gathered_and_still_equal_predict(text_run, news_texts):
    served = app(text_run, max_wait_ms=300)
    hold_first_pass(served.fastapi.state.batchers["predict"], 6)
    with live(served) as client, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda t: client.post("/predict", json={"texts": [t]}), news_texts[:6]))
    for answer, want in zip(answers, text_run.predict(news_texts[:6])):
        same(answer.json()["predictions"], [want])
    stats = served.fastapi.state.batchers["predict"].stats
    assert stats.items == 6 and stats.forward_passes <= 2  # the first, then all that queued behind it


def test_embed_returns_the_runs_vectors(client, text_run, news_texts):
    got = client.post("/embed", json={"texts": news_texts[:4]}).json()
    want = text_run.embed(news_texts[:4])
    assert got["layer"] == "features" and got["dim"] == want.shape[1]
    assert np.allclose(np.array(got["vectors"]), want, atol=1e-5)


BAD = [
    ("malformed JSON", {"content": b"{texts: 1}", "headers": {"content-type": "application/json"}}, 400,
     "malformed JSON"),
    ("missing field", {"json": {"text": ["a"]}}, 422, "texts: Field required"),
    ("not a list", {"json": {"texts": "a"}}, 422, "texts"),
    ("a number", {"json": {"texts": ["a", 7]}}, 422, "texts.1"),
    ("empty list", {"json": {"texts": []}}, 422, "at least 1"),
    ("over-long list", {"json": {"texts": ["a"] * 257}}, 422, "at most 256"),
    ("over-long text", {"json": {"texts": ["a" * 100_001]}}, 422, "texts.0"),
    ("uploads", {"files": [("file", ("a.txt", b"hello", "text/plain"))]}, 415, "application/json"),
]


@pytest.mark.parametrize("what, request_kw, status, said", BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_gets_its_4xx_and_the_next_good_one_succeeds(client, what, request_kw, status, said):
    refused = client.post("/predict", **request_kw)
    assert refused.status_code == status, refused.text
    assert said in refused.json()["error"]
    assert client.post("/predict", json={"texts": ["still serving"]}).status_code == 200


def test_info_of_a_text_run(client, text_run):
    info = client.get("/info").json()
    assert info["family"] == "text" and info["classes"] == text_run.classes
    assert info["input"]["inputs"] == "texts" and info["input"]["max_tokens"] == text_run.info["text"]["max_length"]
