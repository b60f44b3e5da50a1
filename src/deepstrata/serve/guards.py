"""The two checks every request passes before any route sees it: its API key, and its size.

Both are plain ASGI middleware, so that they hold for every route — the OpenAPI page and
unknown paths included — and answer before a body is read. The key is compared in constant
time (``hmac.compare_digest``) so its bytes cannot be guessed one at a time from response
times; ``/health`` stays open for load balancers. A body is read up to the limit and no
further: a ``Content-Length`` over it is refused at once, a chunked body as soon as it
passes it, with 413.
"""

from __future__ import annotations

import hmac
import json

OPEN_PATHS = frozenset({"/health"})


async def send_error(send, status: int, message: str, headers: tuple = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class ApiKeyGuard:
    """Every route but ``/health`` needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; else 401."""

    def __init__(self, app, key: str) -> None:
        self.app = app
        self.fastapi = getattr(app, "fastapi", app)  # the app underneath: its state, its openapi()
        self.key = key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            given = auth[7:] if auth[:7].lower() == b"bearer " else b""
        if not hmac.compare_digest(given, self.key):
            return await send_error(send, 401, "missing or wrong API key: send the header 'Authorization: Bearer "
                                               "KEY' or 'X-API-Key: KEY'", ((b"www-authenticate", b"Bearer"),))
        return await self.app(scope, receive, send)


class BodyLimit:
    """Refuse (413) a request body over ``limit`` bytes; the body the app reads is the one received."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.fastapi = getattr(app, "fastapi", app)
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = f"request body over the limit of {self.limit:,} bytes (--max-body-mb)"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await send_error(send, 400, f"Content-Length {length.decode('latin-1')!r} is not a number")
            if declared > self.limit:
                return await send_error(send, 413, too_big)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await send_error(send, 413, too_big)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
