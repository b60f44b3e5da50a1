"""The API key on every route but /health, compared in constant time; and the body limit (413)."""

from __future__ import annotations

from deepstrata.serve import app
from tests.serve.conftest import digit_pngs, live

KEY = "s3cret-key-for-tests"


def test_the_key_is_checked_everywhere_but_health(image_run):
    with live(app(image_run, api_key=KEY)) as client:
        assert client.get("/health").status_code == 200
        for path in ("/info", "/openapi.json", "/docs", "/no-such-route"):
            refused = client.get(path)
            assert refused.status_code == 401 and "API key" in refused.json()["error"], path
        assert client.get("/info", headers={"Authorization": "Bearer wrong-key-xxxx"}).status_code == 401
        assert client.get("/info", headers={"X-API-Key": KEY[:-1]}).status_code == 401
        upload = [("file", ("a.png", digit_pngs(1)[0], "image/png"))]
        assert client.post("/predict", files=upload).status_code == 401
        assert client.get("/info", headers={"Authorization": f"Bearer {KEY}"}).json()["serving"]["api_key"] is True
        assert client.post("/predict", files=upload, headers={"X-API-Key": KEY}).status_code == 200


def test_a_body_over_the_limit_is_413_and_the_server_keeps_serving(image_run):
    with live(app(image_run, max_body_mb=0.01)) as client:  # 10 KiB
        big = client.post("/predict", content=b"{" + b" " * 20_000 + b"}", headers={"content-type": "application/json"})
        assert big.status_code == 413 and "limit" in big.json()["error"]

        def chunks():  # no Content-Length: refused as the stream passes the limit
            for _ in range(40):
                yield b" " * 1024

        streamed = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        ok = client.post("/predict", files=[("file", ("a.png", digit_pngs(1)[0], "image/png"))])
        assert ok.status_code == 200
