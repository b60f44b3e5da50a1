"""/predict and /embed of an image run over real HTTP: equal to ``run.predict``, bad requests, micro-batching."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from deepstrata.serve import app
from tests.serve.conftest import digit_pngs, hold_first_pass, live, png, write_files

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def client(image_run):
    with live(app(image_run)) as c:
        yield c


def same(served: list[dict], expected: list) -> None:
    assert len(served) == len(expected)
    for got, want in zip(served, expected):
        want = want.to_dict()
        assert got["path"] == want["path"] and got["label"] == want["label"]
        assert abs(got["probability"] - want["probability"]) <= TOLERANCE


def test_uploads_and_base64_equal_run_predict_in_input_order(client, image_run, tmp_path):
    images = digit_pngs(11)
    paths = write_files(tmp_path, images)
    expected = image_run.predict(paths)
    uploaded = client.post("/predict", files=[("file", (str(p), b, "image/png")) for p, b in zip(paths, images)])
    assert uploaded.status_code == 200
    same(uploaded.json()["predictions"], expected)
    encoded = client.post("/predict", json={"images": [base64.b64encode(b).decode() for b in images]})
    for got, want in zip(encoded.json()["predictions"], expected):
        assert got["label"] == want.label and abs(got["probability"] - want.probability) <= TOLERANCE
    assert [p["path"] for p in encoded.json()["predictions"]] == [f"images[{i}]" for i in range(11)]


def test_image_modes_are_converted_as_predict_converts_them(client, image_run, tmp_path):
    from deepstrata.data.images import load_images

    pixels = load_images("digits").x[-1][0].numpy()
    rgb = np.repeat(pixels[:, :, None], 3, axis=2)
    images = [png(rgb), png(rgb, "RGBA"), png(pixels, "P"), png(pixels.astype(np.uint16) * 257, "I;16"),
              f"data:image/png;base64,{base64.b64encode(png(pixels, 'LA')).decode()}"]
    raw = images[:4] + [png(pixels, "LA")]
    expected = image_run.predict(write_files(tmp_path, raw))
    answer = client.post("/predict", json={"images": [i if isinstance(i, str) else base64.b64encode(i).decode()
                                                      for i in images]})
    assert answer.status_code == 200, answer.text
    for got, want in zip(answer.json()["predictions"], expected):
        assert got["label"] == want.label and abs(got["probability"] - want.probability) <= TOLERANCE


def test_embed_returns_the_runs_vectors(client, image_run):
    import torch

    from deepstrata.data.image_files import decode_image

    images = digit_pngs(3)
    got = client.post("/embed", files=[("file", (f"{i}.png", b, "image/png")) for i, b in enumerate(images)]).json()
    x = torch.stack([torch.tensor(decode_image(b, 1, (8, 8))).permute(2, 0, 1) for b in images])
    want = image_run.embed(x)
    assert got["layer"] == "features" and got["dim"] == want.shape[1]
    assert np.allclose(np.array(got["vectors"]), want, atol=1e-5)


GOOD = {"images": [base64.b64encode(digit_pngs(1)[0]).decode()]}
JSON = {"content-type": "application/json"}
BAD = [  # (what, request keyword arguments, status, a word of the error)
    ("malformed JSON", {"content": b'{"images": [', "headers": JSON}, 400, "malformed JSON"),
    ("empty body", {"content": b"", "headers": JSON}, 400, "empty body"),
    ("not UTF-8", {"content": b"\xff\xfe{", "headers": JSON}, 400, "malformed JSON"),
    ("a JSON list", {"json": ["x"]}, 422, "JSON object"),
    ("missing field", {"json": {}}, 422, "images: Field required"),
    ("wrong field", {"json": {"texts": ["a"]}}, 422, "texts"),
    ("wrong type", {"json": {"images": "abc"}}, 422, "images"),
    ("a number", {"json": {"images": [3]}}, 422, "images.0"),
    ("empty list", {"json": {"images": []}}, 422, "at least 1"),
    ("over-long list", {"json": {"images": GOOD["images"] * 257}}, 422, "at most 256"),
    ("bad base64", {"json": {"images": ["%%%not base64"]}}, 422, "not valid base64"),
    ("a path, never read", {"json": {"images": ["/etc/passwd"]}}, 422, "images[0]"),
    ("undecodable image", {"json": {"images": [base64.b64encode(b"hello, world").decode()]}}, 422,
     "unreadable image"),
    ("truncated PNG", {"json": {"images": [base64.b64encode(digit_pngs(1)[0][:40]).decode()]}}, 422,
     "unreadable image"),
    ("upload not an image", {"files": [("file", ("/etc/hostname", b"not an image", "image/png"))]}, 422,
     "unreadable image"),
    ("upload in another field", {"files": [("picture", ("a.png", digit_pngs(1)[0], "image/png"))]}, 422,
     "picture: unknown field"),
    ("a text field as file", {"files": [("file", (None, b"/etc/passwd"))]}, 422, "expected a file upload"),
    ("broken multipart", {"content": b"--nope\r\n", "headers": {"content-type": "multipart/form-data; boundary=b"}},
     400, "multipart"),
    ("wrong media type", {"content": b"images", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
]


@pytest.mark.parametrize("what, request_kw, status, said", BAD, ids=[b[0] for b in BAD])
def test_a_bad_request_gets_its_4xx_and_the_next_good_one_succeeds(client, what, request_kw, status, said):
    refused = client.post("/predict", **request_kw)
    assert refused.status_code == status, refused.text
    assert said in refused.json()["error"] and "\n" not in refused.json()["error"]
    assert client.post("/predict", json=GOOD).status_code == 200


def test_a_huge_declared_image_is_refused_before_it_is_decoded(client):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    refused = client.post("/predict", json={"images": [base64.b64encode(bomb).decode()]})
    assert refused.status_code == 422 and "pixels" in refused.json()["error"]


def test_unknown_routes_and_methods(client):
    missing = client.get("/predictions")
    assert missing.status_code == 404 and "POST /predict" in missing.json()["error"]
    assert client.post("/recommend", json={"user": 1}).status_code == 404  # an image run does not recommend
    assert client.get("/predict").status_code == 405 and "error" in client.get("/predict").json()
    assert client.get("/health").json() == {"status": "ok"}


def test_info_says_what_the_run_is_and_takes(client, image_run):
    from deepstrata import __version__

    info = client.get("/info").json()
    assert info["run"] == image_run.path.name and info["family"] == "image"
    assert info["task"] == image_run.task and info["classes"] == image_run.classes
    assert info["input"]["inputs"] == "images" and (info["input"]["channels"], info["input"]["height"]) == (1, 8)
    assert info["version"] == __version__
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/embed", "/health", "/info"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]


def test_concurrent_requests_are_gathered_and_a_bad_one_fails_alone(image_run, tmp_path):
    served = app(image_run, max_batch=64, max_wait_ms=300)
    batcher = served.fastapi.state.batchers["predict"]
    hold_first_pass(batcher, 8)
    images = digit_pngs(8)
    expected = image_run.predict(write_files(tmp_path, images))
    bodies = [{"images": [base64.b64encode(b).decode()]} for b in images]
    bodies.insert(3, {"images": [base64.b64encode(b"not a png").decode()]})
    with live(served) as client, ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: client.post("/predict", json=body), bodies))
    bad = answers.pop(3)
    assert bad.status_code == 422 and "images[0]: unreadable image" in bad.json()["error"]
    assert all(a.status_code == 200 for a in answers)
    for answer, want in zip(answers, expected):
        got = answer.json()["predictions"][0]
        assert got["label"] == want.label and abs(got["probability"] - want.probability) <= TOLERANCE
    assert batcher.stats.items == 8 and batcher.stats.forward_passes <= 2  # the first, then all that queued behind it
    assert batcher.stats.largest >= 4


def test_max_batch_one_runs_each_request_alone(image_run):
    served = app(image_run, max_batch=1)
    with live(served) as client, ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post("/predict", json=GOOD), range(4)))
    assert all(a.status_code == 200 for a in answers)
    assert served.fastapi.state.batchers["predict"].stats.record_dict() == {"forward_passes": 4, "items": 4,
                                                                           "largest_batch": 1}


def test_a_photo_sized_upload_is_decoded_off_the_loop_and_resized_as_predict_does(client, image_run, tmp_path):
    from deepstrata.serve.application import INLINE_DECODE_BYTES

    noise = np.random.default_rng(0).integers(0, 256, (200, 150, 3), dtype=np.uint8)
    photo = png(noise)
    assert len(photo) > INLINE_DECODE_BYTES
    want = image_run.predict(write_files(tmp_path, [photo]))[0]
    got = client.post("/predict", files=[("file", ("photo.png", photo, "image/png"))]).json()["predictions"][0]
    assert got["label"] == want.label and abs(got["probability"] - want.probability) <= TOLERANCE
