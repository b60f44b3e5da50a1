"""Load on ``deepstrata serve``: the digits CNN over HTTP on loopback, with micro-batching and without.

A quick fit on digits (the default CNN, seed 0, one epoch: the model's speed, not its
accuracy, is measured) is served twice by ``deepstrata serve`` as real processes on
127.0.0.1: ``--max-batch 64`` (micro-batching, ``--max-wait-ms 5``) and ``--max-batch 1``
(one forward pass per request). For each concurrency (1, 8, 32, 128) a client keeps that
many requests in flight — each ``POST /predict`` with one real held-out digit as base64
JSON — until ``--requests`` have been answered or ``--seconds`` have passed, whichever comes
first; the two servers take turns at each level, in alternating order, and every level is
measured ``--rounds`` times, so that a busy machine slows both alike.
Reported per level: requests/s, p50 and p99 latency, errors (any non-200 or transport
failure), and the server's mean batch size (from ``/info``). Nothing leaves the machine;
the script stops both servers and itself.

    python benchmarks/serve_load.py [--requests 1000] [--seconds 20] [--rounds 2] [--concurrency 1,8,32,128]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from results_io import result_path, write_results

MODES = {"batched": ["--max-batch", "64", "--max-wait-ms", "5"], "one-at-a-time": ["--max-batch", "1"]}


def fit_digits(out: Path) -> Path:
    from deepstrata.cli import main

    status = main(["fit", "--data", "digits", "--epochs", "1", "--device", "cpu", "--seed", "0", "--quiet",
                   "--no-baselines", "--out", str(out)])
    assert status == 0, status
    return out


def bodies(count: int = 64) -> list[bytes]:
    """JSON bodies of one real digit each (the last ``count`` of scikit-learn's set), as clients send them."""
    import json

    from PIL import Image

    from deepstrata.data.images import load_images

    out = []
    for image in load_images("digits").x[-count:]:
        buffer = io.BytesIO()
        Image.fromarray(image[0].numpy()).save(buffer, format="PNG")
        out.append(json.dumps({"images": [base64.b64encode(buffer.getvalue()).decode()]}).encode())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ}
    env.pop("DEEPSTRATA_API_KEY", None)
    process = subprocess.Popen([sys.executable, "-m", "deepstrata", "serve", str(run), "--host", "127.0.0.1",
                                "--port", str(port), *extra], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"serve exited {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}: no answer to /health within {seconds:.0f} s")


async def post(reader, writer, request: bytes) -> int:
    """One request on a kept-alive connection; its status. A minimal HTTP/1.1 client (as ``wrk`` is): httpx
    costs a few times the server's own work per request, and client and server share the same 2 cores."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return status


async def load(url: str, payloads: list[bytes], concurrency: int, requests: int, seconds: float) -> dict:
    """Keep ``concurrency`` requests in flight until ``requests`` are answered or ``seconds`` pass."""
    host, port = url.removeprefix("http://").split(":")
    framed = [(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in payloads]
    latencies: list[float] = []
    errors = 0
    issued = 0
    stop_at = time.monotonic() + seconds

    async def worker():
        nonlocal issued, errors
        connection = None
        while issued < requests and time.monotonic() < stop_at:
            request = framed[issued % len(framed)]
            issued += 1
            start = time.perf_counter()
            try:
                connection = connection or await asyncio.open_connection(host, int(port))
                ok = await asyncio.wait_for(post(*connection, request), 30) == 200
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, StopIteration):
                ok, connection = False, None
            latencies.append(time.perf_counter() - start)
            errors += not ok
        if connection:
            connection[1].close()

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - begin
    ms = np.array(latencies) * 1e3
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "seconds": round(wall, 3),
            "requests_per_s": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "stopped_by_time": len(latencies) < requests}


def batches(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/info", timeout=10).json()["serving"]["predict"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per level (default 1000)")
    parser.add_argument("--seconds", type=float, default=20, help="time cap per level and mode (default 20)")
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--rounds", type=int, default=2, help="times each level is measured (default 2)")
    parser.add_argument("--results", type=Path, help="where the JSON goes (default benchmarks/results/...)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    payloads = bodies()
    with tempfile.TemporaryDirectory() as tmp:
        run = fit_digits(Path(tmp) / "digits")
        servers = {mode: start_server(run, extra) for mode, extra in MODES.items()}
        rows = []
        try:
            for process, url in servers.values():
                wait_healthy(url, process)
                asyncio.run(load(url, payloads, 4, 40, 10))  # warm-up: first calls, lazy imports
            for turn, (round_, concurrency) in enumerate((r, c) for r in range(args.rounds) for c in levels):
                order = list(MODES) if turn % 2 == 0 else list(MODES)[::-1]
                for mode in order:
                    process, url = servers[mode]
                    before = batches(url)
                    row = asyncio.run(load(url, payloads, concurrency, args.requests, args.seconds))
                    after = batches(url)
                    passes = after["forward_passes"] - before["forward_passes"]
                    row.update(mode=mode, round=round_, forward_passes=passes,
                               mean_batch=round((after["items"] - before["items"]) / max(1, passes), 2),
                               load_average_1m=round(os.getloadavg()[0], 2))
                    rows.append(row)
                    print(f"{mode:>13}  c={concurrency:<4} {row['requests_per_s']:>7} req/s  p50 {row['p50_ms']:>7} "
                          f"ms  p99 {row['p99_ms']:>8} ms  errors {row['errors']}  mean batch {row['mean_batch']}",
                          flush=True)
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
            exits = {mode: process.wait(60) for mode, (process, _) in servers.items()}
    summary, speedup = [], {}
    for concurrency in levels:  # per level and mode: the mean over rounds (each round's rows are kept above)
        for mode in MODES:
            mine = [r for r in rows if r["concurrency"] == concurrency and r["mode"] == mode]
            summary.append({"concurrency": concurrency, "mode": mode, "rounds": len(mine),
                            **{key: round(float(np.mean([r[key] for r in mine])), 2)
                               for key in ("requests_per_s", "p50_ms", "p99_ms", "mean_batch")},
                            "errors": sum(r["errors"] for r in mine)})
        pair = {s["mode"]: s["requests_per_s"] for s in summary if s["concurrency"] == concurrency}
        speedup[str(concurrency)] = round(pair["batched"] / pair["one-at-a-time"], 2)
    for s in summary:
        print(f"mean {s['mode']:>13}  c={s['concurrency']:<4} {s['requests_per_s']:>7} req/s  p50 {s['p50_ms']:>7} ms"
              f"  p99 {s['p99_ms']:>8} ms  errors {s['errors']}  mean batch {s['mean_batch']}")
    print("batched / one-at-a-time requests/s:", speedup)
    path = args.results or result_path("serve_load", 0)
    import uvicorn

    write_results(path, {"model": "digits CNN (default width), 1 epoch, seed 0", "rows": rows, "summary": summary,
                         "speedup_batched_over_one_at_a_time": speedup, "server_exit_codes": exits}, 0,
                  requests_per_level=args.requests, seconds_cap_per_level=args.seconds, rounds=args.rounds,
                  modes=MODES, uvicorn=uvicorn.__version__, http_parser=_have("httptools"), loop=_have("uvloop"))


def _have(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    main()
