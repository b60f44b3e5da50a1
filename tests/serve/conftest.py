"""What the server tests share: the tiny real runs, digit images as PNG bytes, and a live uvicorn on 127.0.0.1.

``live`` runs a real uvicorn server in a thread on a port the OS picks (port 0, then read
back), so the tests talk HTTP over loopback as a client would, and stops it afterwards.
"""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from deepstrata.run import load  # noqa: E402
from tests.tiny_runs import news_csv, tiny_run  # noqa: E402


def hold_first_pass(batcher, inputs: int, timeout: float = 30.0) -> None:
    """Make ``batcher``'s first forward pass wait until all ``inputs`` (one per request) have been submitted.

    Whether concurrent client threads reach the server close enough together to be gathered
    depends on how busy the machine is; holding the first pass until the rest are queued makes
    the gathering the tests check independent of that: the requests that arrive while a pass
    runs must form the next one.
    """
    forward, calls = batcher.forward, []

    def held(items, names):
        if not calls:
            deadline = time.monotonic() + timeout
            while len(items) + batcher._queue.qsize() < inputs and time.monotonic() < deadline:
                time.sleep(0.005)
        calls.append(len(items))
        return forward(items, names)

    batcher.forward = held


@contextmanager
def live(app):
    """``httpx.Client`` on a real uvicorn serving ``app`` on 127.0.0.1 (a free port), stopped on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)


def png(array, mode: str | None = None) -> bytes:
    from PIL import Image

    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def digit_pngs(count: int, offset: int = 0) -> list[bytes]:
    """``count`` real digits images (from the end of scikit-learn's set) as 8x8 grey PNG bytes."""
    from deepstrata.data.images import load_images

    x = load_images("digits").x
    return [png(image[0].numpy()) for image in x[len(x) - offset - count:len(x) - offset]]


def write_files(folder: Path, images: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(images):
        paths.append(folder / f"image{i}.png")
        paths[-1].write_bytes(data)
    return paths


@pytest.fixture(scope="session")
def image_run(tmp_path_factory):
    return load(tiny_run("image", tmp_path_factory))


@pytest.fixture(scope="session")
def text_run(tmp_path_factory):
    return load(tiny_run("text", tmp_path_factory))


@pytest.fixture(scope="session")
def recommend_run(tmp_path_factory):
    return load(tiny_run("recommend", tmp_path_factory))


@pytest.fixture(scope="session")
def news_texts(tmp_path_factory) -> list[str]:
    import csv

    with news_csv(tmp_path_factory).open(encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)][:12]
