"""The ASGI app of one run: its routes, written once and asking the run's family for what differs.

Routes follow the verbs the family has: ``/predict`` and ``/embed`` where it decodes inputs
(``Family.serve_inputs``: images, texts), ``/recommend`` and ``/similar`` where it
recommends, ``/embed`` of user or item ids for a recommender; ``/health`` and ``/info``
always. A request's inputs are decoded on a worker thread, per request (a bad input is that
request's 422), then gathered with other requests' by a ``Batcher`` into one forward pass.
Every error answers ``{"error": "..."}``: 400 unreadable body, 401 key, 404 route, 405
method, 413 size, 415 media type, 422 invalid content (``serve.inputs`` says which is
which), 500 only for a fault of the server itself.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from deepstrata import __version__
from deepstrata.errors import DataError, DeepstrataError, RunError
from deepstrata.families.base import Family
from deepstrata.serve.batcher import Batcher
from deepstrata.serve.guards import ApiKeyGuard, BodyLimit
from deepstrata.serve.inputs import (EmbedIdsBody, RecommendBody, SimilarBody, openapi_body, openapi_json, parse,
                                     read_inputs, read_json)
from deepstrata.serve.settings import MAX_ITEMS, MAX_TEXT_CHARS, ServeSettings

log = logging.getLogger("deepstrata.serve")
INLINE_DECODE_BYTES = 4096  # decoded on the event loop up to this size (4 KiB inflate to a few MB at most)


def build_app(run, settings: ServeSettings | None = None):
    """The ASGI app serving ``run`` (a ``Run``): the FastAPI app inside its guards (``guards``), which keep
    it as ``.fastapi``. The weights are loaded now, so that a broken run fails here, not at a request."""
    settings = (settings or ServeSettings(run=str(run.path))).check()
    family = run.family
    run.model  # noqa: B018 - load and check the weights before the first request
    executor = ThreadPoolExecutor(1, thread_name_prefix="deepstrata-model")
    wait = settings.max_wait_ms / 1000
    batchers: dict[str, Batcher] = {}
    kind = family.serve_inputs
    if kind:
        def predict_forward(items: list, names: list) -> list:
            return [p.to_dict() for p in family.predict_decoded(run, items, names)]

        def embed_forward(items: list, names: list) -> list:
            return [vector.tolist() for vector in family.embed_decoded(run, items)]

        batchers["predict"] = Batcher(predict_forward, executor, max_batch=settings.max_batch, max_wait=wait)
        batchers["embed"] = Batcher(embed_forward, executor, max_batch=settings.max_batch, max_wait=wait)
    recommends = type(family).recommend is not Family.recommend

    @asynccontextmanager
    async def lifespan(_app):
        for batcher in batchers.values():
            batcher.start()
        yield  # uvicorn answers the requests in flight before it gets past here
        for batcher in batchers.values():
            await batcher.stop()

    app = FastAPI(title=f"deepstrata serve: {run.path.name}", version=__version__, lifespan=lifespan,
                  description=f"{run.kind} served by deepstrata {__version__}.")
    app.state.run, app.state.batchers, app.state.settings = run, batchers, settings
    _errors(app)

    async def answer(request: Request, batcher: Batcher) -> list:
        batcher.announce()
        try:
            raws, names = await read_inputs(request, kind)

            def decode() -> list:
                return [family.decode_input(run, raw, name) for raw, name in zip(raws, names)]

            # a thread hop costs more than decoding a thumbnail or a sentence; a photo would stall the loop
            small = sum(len(raw) for raw in raws) <= INLINE_DECODE_BYTES
            items = decode() if small else await run_in_threadpool(decode)
        finally:
            batcher.withdraw()
        return await batcher.submit(items, names)

    @app.get("/health", summary="liveness: 200 while the server runs (no API key needed)")
    async def health():
        return {"status": "ok"}

    @app.get("/info", summary="the run, its family, classes, input contract and the server's settings")
    async def info():
        return _info(run, settings, kind, recommends, batchers)

    if kind:
        @app.post("/predict", summary=f"label {kind}: the same answers as `deepstrata predict`, in input order",
                  openapi_extra=openapi_body(kind))
        async def predict(request: Request):
            return JSONResponse({"predictions": await answer(request, batchers["predict"])})

        @app.post("/embed", summary=f"one vector per input at the layer the head classifies ({kind})",
                  openapi_extra=openapi_body(kind))
        async def embed(request: Request):
            vectors = await answer(request, batchers["embed"])
            return JSONResponse({"layer": "features", "dim": len(vectors[0]), "vectors": vectors})

    if recommends:
        @app.post("/recommend", summary="top-k unseen items for a user; unknown users get popular items "
                  "(fallback: true)", openapi_extra=openapi_json(RecommendBody))
        async def recommend(request: Request):
            body = parse(RecommendBody, await read_json(request))
            return await _on_model(executor, run.recommend, body.user, body.k)

        @app.post("/similar", summary="the k items nearest to an item in the learned embedding space",
                  openapi_extra=openapi_json(SimilarBody))
        async def similar(request: Request):
            body = parse(SimilarBody, await read_json(request))
            return await _on_model(executor, run.similar, body.item, body.k)

        @app.post("/embed", summary="vectors of users or items of the run's log",
                  openapi_extra=openapi_json(EmbedIdsBody))
        async def embed_ids(request: Request):
            body = parse(EmbedIdsBody, await read_json(request))
            if (body.users is None) == (body.items is None):
                raise DataError("body: give exactly one of 'users' and 'items'")
            rows, ids = ("users", body.users) if body.users is not None else ("items", body.items)
            got = await _on_model(executor, _embed_ids, run, [str(i) for i in ids], rows)
            return {"layer": got.layer, "rows": rows, "dim": int(got.vectors.shape[1]),
                    "ids": [str(i) for i in ids], "vectors": got.vectors.tolist()}

    outer = BodyLimit(app, settings.max_body_bytes)
    return ApiKeyGuard(outer, settings.api_key) if settings.api_key else outer


def _embed_ids(run, ids: list[str], rows: str):
    from deepstrata.inspect.layer_vectors import check_layer

    return run.family.embed_source(run, ids, check_layer(run.model, None), rows=rows, column=None, data_dir=None,
                                   batch_size=256)


async def _on_model(executor, fn, *args):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


def _info(run, settings: ServeSettings, kind: str, recommends: bool, batchers: dict) -> dict:
    spec = run.info.get("spec") or {}
    contract: dict = {"inputs": kind or ("user and item ids" if recommends else None), "max_items": MAX_ITEMS}
    if kind == "images":
        channels, height, width = spec["in_shape"]
        contract.update(channels=channels, height=height, width=width,
                        preprocess=(run.info.get("data") or {}).get("preprocess"),
                        send="multipart field 'file' (one or more), or JSON {\"images\": [base64, ...]}")
    elif kind == "texts":
        contract.update(max_tokens=(run.info.get("text") or {}).get("max_length"), max_chars=MAX_TEXT_CHARS,
                        send="JSON {\"texts\": [...]}")
    if recommends:
        contract.update(users=spec.get("num_users"), items=spec.get("num_items"))
    return {
        "run": run.path.name, "path": str(run.path.resolve()), "family": run.family.name, "task": run.task,
        "model": spec.get("family"), "classes": run.info.get("classes"), "input": contract,
        "version": __version__,
        "serving": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms,
                    "max_body_mb": settings.max_body_mb, "api_key": bool(settings.api_key),
                    **{name: b.stats.record_dict() for name, b in batchers.items()}},
    }


def _errors(app: FastAPI) -> None:
    """Every error as ``{"error": "one line"}`` with its status (see the module docstring)."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; this server has {_routes(app)}"
        elif exc.status_code == 405:
            message = f"{request.method} {request.url.path}: method not allowed"
        else:
            message = str(exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=422)

    @app.exception_handler(DeepstrataError)
    async def refused(request: Request, exc: DeepstrataError):
        status = getattr(exc, "status", 500 if isinstance(exc, RunError) else 422)
        return JSONResponse({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__},
                            status_code=status)

    @app.exception_handler(Exception)
    async def fault(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server keeps serving"},
                            status_code=500)


def _routes(app: FastAPI) -> str:
    names = [f"{sorted(r.methods)[0]} {r.path}" for r in app.routes
             if getattr(r, "methods", None) and r.path.startswith(("/health", "/info", "/predict", "/embed",
                                                                    "/recommend", "/similar"))]
    return ", ".join(names)
