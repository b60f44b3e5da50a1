"""``deepstrata serve`` as a real process: it serves, and on SIGTERM finishes the request in flight, then exits 0."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.serve.conftest import digit_pngs

SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run_path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("DEEPSTRATA_API_KEY", None)
    return subprocess.Popen([sys.executable, "-m", "deepstrata", "serve", str(run_path), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_healthy(client: httpx.Client, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}: {process.stdout.read()}")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("serve did not answer /health")


def refuses_connections(port: int, seconds: float = 30) -> bool:
    """Whether the server stops listening on ``port`` within ``seconds`` (the first thing a shutdown does)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(image_run):
    port = free_port()
    process = start(image_run.path, port)
    body = json.dumps({"images": [base64.b64encode(digit_pngs(1)[0]).decode()]}).encode()
    half_sent, signalled = threading.Event(), threading.Event()

    def slow_body():
        """Half the request, then the rest only once the server is shutting down: in flight when SIGTERM comes."""
        yield body[: len(body) // 2]
        half_sent.set()
        signalled.wait(30)
        yield body[len(body) // 2:]

    answers = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_healthy(client, process)
            sender = threading.Thread(target=lambda: answers.append(
                client.post("/predict", content=slow_body(), headers={"content-type": "application/json"})))
            sender.start()
            assert half_sent.wait(30)
            # The one event loop answers a later connection only after reading what reached it before: then the
            # request's head has been read and the request is under way (plus a margin).
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
            time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            stopped_listening = refuses_connections(port)
            signalled.set()
            sender.join(30)
        assert stopped_listening
        assert process.wait(30) == 0
    finally:
        signalled.set()
        if process.poll() is None:
            process.kill()
    output = process.stdout.read()
    assert answers and answers[0].status_code == 200, output
    assert answers[0].json()["predictions"][0]["label"] in image_run.classes
    assert output.startswith(f"serving {image_run.path} on http://127.0.0.1:{port}")
