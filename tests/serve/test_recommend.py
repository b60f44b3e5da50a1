"""/recommend, /similar and /embed of a recommendation run: the CLI's answers, the popular fallback, errors."""

from __future__ import annotations

import numpy as np
import pytest

from deepstrata.serve import app
from tests.serve.conftest import live


@pytest.fixture(scope="module")
def client(recommend_run):
    with live(app(recommend_run)) as c:
        yield c


def test_recommend_equals_run_recommend_and_unknown_users_fall_back(client, recommend_run):
    assert client.post("/recommend", json={"user": "1", "k": 5}).json() == recommend_run.recommend("1", 5)
    assert client.post("/recommend", json={"user": 1, "k": 5}).json() == recommend_run.recommend(1, 5)
    unknown = client.post("/recommend", json={"user": "no-such-user"}).json()
    assert unknown["fallback"] is True and len(unknown["items"]) == 10
    assert unknown == recommend_run.recommend("no-such-user", 10)


def test_similar_equals_run_similar(client, recommend_run):
    item = recommend_run.recommend("1", 1)["items"][0]["item"]
    assert client.post("/similar", json={"item": item, "k": 3}).json() == recommend_run.similar(item, 3)


def test_embed_users_and_items(client, recommend_run):
    items = client.post("/embed", json={"items": ["1", "2"]}).json()
    assert items["rows"] == "items" and np.allclose(items["vectors"], recommend_run.embed(["1", "2"], rows="items"),
                                                    atol=1e-6)
    users = client.post("/embed", json={"users": ["1"]}).json()
    assert users["rows"] == "users" and users["dim"] == len(users["vectors"][0])


@pytest.mark.parametrize("path, body, said", [
    ("/recommend", {"k": 3}, "user: Field required"),
    ("/recommend", {"user": "1", "k": 0}, "k: Input should be greater than or equal to 1"),
    ("/recommend", {"user": "1", "k": "3"}, "k: Input should be a valid integer"),
    ("/recommend", {"user": ["1"]}, "user"),
    ("/similar", {"item": "no-such-item"}, "unknown item"),
    ("/embed", {"users": ["1"], "items": ["1"]}, "exactly one"),
    ("/embed", {}, "exactly one"),
])
def test_bad_requests_are_422_and_serving_goes_on(client, path, body, said):
    refused = client.post(path, json=body)
    assert refused.status_code == 422 and said in refused.json()["error"], refused.text
    assert client.post("/recommend", json={"user": "1"}).status_code == 200


def test_a_recommender_has_no_predict(client):
    missing = client.post("/predict", json={"texts": ["a"]})
    assert missing.status_code == 404 and "POST /recommend" in missing.json()["error"]
