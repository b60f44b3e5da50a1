"""CLI verb ``serve``: a door to ``deepstrata.serve.serve``, no logic of its own."""

from __future__ import annotations

import argparse

from deepstrata.cli_args import POSITIVE_COUNT, number
from deepstrata.config_numbers import Number

# The flags' ranges, checked as every numeric flag is (one line naming the flag); serve.settings checks them again
# for the Python API.
PORT = Number(int, low=0, low_open=False, high=65535, high_open=False, note="0: any free port")
WAIT_MS = Number(float, low=0.0, low_open=False, high=1000.0, high_open=False)
BODY_MB = Number(float, low=0.0, low_open=True, high=1024.0, high_open=False)

DESCRIPTION = (
    "Serve a run over HTTP (FastAPI on uvicorn; pip install 'deepstrata[serve]'). Routes: POST /predict (image "
    "runs: multipart uploads in the field 'file', one or more, or JSON {\"images\": [base64, ...]}; text runs: JSON "
    "{\"texts\": [...]}) answers labels and probabilities in input order, as `deepstrata predict`; POST /embed one "
    "vector per input at the layer the head classifies (recommendation runs: {\"users\": [...]} or {\"items\": "
    "[...]}); recommendation runs: POST /recommend {\"user\": ID, \"k\": 10} (unknown users get popular items, "
    "\"fallback\": true) and POST /similar {\"item\": ID, \"k\": 10}; GET /health, GET /info, GET /openapi.json, "
    "GET /docs. Concurrent requests are gathered into one forward pass (--max-batch, --max-wait-ms); a bad input "
    "fails only its own request. Errors are JSON {\"error\": \"...\"}: 400 a body that cannot be read (malformed "
    "JSON or multipart), 422 one that is read but invalid (missing or wrong field, empty or over-long list, bad "
    "base64, undecodable image, unknown item), 401 no or wrong key, 404 unknown route, 413 body over --max-body-mb, "
    "415 wrong Content-Type. Requests carry data, never file paths: nothing is read from the server's disk. "
    "SECURITY: it binds 127.0.0.1 (this machine only) by default; binding any other address needs --api-key KEY "
    "(or DEEPSTRATA_API_KEY), sent by clients as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on every route "
    "but /health, unless you pass --insecure. SIGTERM or Ctrl-C lets requests in flight finish, then exits 0."
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a run over HTTP with micro-batching (/predict, /embed, /recommend ...)",
                       description=DESCRIPTION)
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs "
                   "--api-key or --insecure)")
    p.add_argument("--port", type=number(PORT), default=8000, help="port (default 8000)")
    p.add_argument("--max-batch", type=number(POSITIVE_COUNT), default=64, help="most inputs gathered into one forward pass "
                   "(default 64; 1 turns micro-batching off)")
    p.add_argument("--max-wait-ms", type=number(WAIT_MS), default=5.0, help="longest a request waits for others to join "
                   "its batch (default 5)")
    p.add_argument("--workers", type=number(POSITIVE_COUNT), default=1, help="server processes, each with the model (default 1)")
    p.add_argument("--api-key", metavar="KEY", help="require this key on every route but /health (default: the "
                   "environment variable DEEPSTRATA_API_KEY, if set)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without an API key")
    p.add_argument("--max-body-mb", type=number(BODY_MB), default=16.0, help="largest request body in MiB (default 16; "
                   "larger: 413)")


def serve(args: argparse.Namespace) -> int:
    from deepstrata.serve import serve as run_server
    from deepstrata.serve.settings import resolve_api_key

    return run_server(args.run, host=args.host, port=args.port, max_batch=args.max_batch,
                      max_wait_ms=args.max_wait_ms, workers=args.workers, api_key=resolve_api_key(args.api_key),
                      insecure=args.insecure, max_body_mb=args.max_body_mb)


VERBS = {"serve": serve}
