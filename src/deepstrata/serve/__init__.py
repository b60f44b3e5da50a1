"""``deepstrata serve``: a run behind HTTP (FastAPI on uvicorn; the ``[serve]`` extra).

``app(run)`` is the ASGI app for a user who runs it in their own server; ``serve(...)``
is what the CLI calls. One module per job: ``settings`` (what a server starts with, and the
refusal to bind beyond loopback without a key), ``guards`` (API key, body size),
``inputs`` (reading bodies; **400** for a body that cannot be read — malformed JSON, a
broken multipart stream — and **422** for one that was read but is invalid — a missing or
wrong field, an empty or over-long list, bad base64, an image that does not decode),
``batcher`` (micro-batching), ``application`` (the routes), ``server`` (uvicorn).
"""

from __future__ import annotations


def app(run, **settings):
    """The ASGI app serving ``run`` (a ``Run`` or a run directory); ``settings`` as ``ServeSettings``
    (``max_batch``, ``max_wait_ms``, ``api_key``, ``max_body_mb`` ...). Run it under any ASGI server
    (``uvicorn.run(app(run))``); the FastAPI app inside the guards is its ``.fastapi``."""
    from deepstrata.run import Run, load
    from deepstrata.serve.application import build_app
    from deepstrata.serve.settings import ServeSettings

    run = run if isinstance(run, Run) else load(run)
    return build_app(run, ServeSettings(run=str(run.path), **settings))


def serve(run, **settings) -> int:
    """Serve the run directory ``run`` until SIGTERM or SIGINT (see ``serve.server.serve``); returns 0."""
    from deepstrata.serve.server import serve as run_server
    from deepstrata.serve.settings import ServeSettings

    return run_server(ServeSettings(run=str(run), **settings))
