"""The ASGI layers around the routes: `Observe` (outermost: starts loading the models on the
first request, for an app mounted inside another whose lifespan never runs, and counts every
answer in the metrics) and `Guard` (inside the CORS layer, so refusals carry CORS headers:
the API key, compared in constant time, and the body size limit; and the 500 answer to
an exception no handler knows, which it logs).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._errors import APIError, internal
from ._http import JSONResponse, ServerContext
from ._registry import logger

# Paths answered without a key: the health check, and the API's own documentation.
PUBLIC = frozenset({"/health", "/v1/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def _answer(error: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(error.body(), status_code=error.status, headers=error.headers)(scope, receive, send)


class Observe:
    """Starts model loading once, and records each request's status and duration."""

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.ctx.registry.started:
            self.ctx.registry.start()
        started = time.monotonic()
        status = 500
        state = scope.setdefault("state", {})

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            self.ctx.metrics.request(str(state.get("model", "")), endpoint, status, time.monotonic() - started)


class Guard:
    """Refuses requests without a valid key (401) and bodies over `max_body` bytes (413)."""

    def __init__(self, app: ASGIApp, keys: Sequence[str], max_body: int) -> None:
        self.app = app
        self.keys = [k.encode("utf-8") for k in keys]
        self.max_body = max_body

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
            elif name == b"x-api-key" and not given:
                given = value.strip()
        # Every key is compared, in constant time, whatever the outcome of the others.
        matches = [hmac.compare_digest(given, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.keys and _route_path(scope) not in PUBLIC and not self._authorized(scope):
            await _answer(APIError(401, "Incorrect API key provided: send it as 'Authorization: Bearer KEY'",
                                   code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}),
                          scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await _answer(_too_large(self.max_body), scope, receive, send)
                return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, self._limited(receive), tracked)
        except Exception as exc:  # noqa: BLE001 - a bug: logged, answered with a 500, the server goes on
            logger.error("%s %s failed", scope.get("method"), scope["path"], exc_info=exc)
            if not started:
                await _answer(internal(exc), scope, receive, send)

    def _limited(self, receive: Receive) -> Receive:
        """`receive` that refuses a (chunked) body once it passes the limit."""
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    # Raised where the app reads its body; the app answers it as a 413.
                    raise HTTPException(413, _too_large(self.max_body).message)
            return message

        return limited


def _too_large(limit: int) -> APIError:
    return APIError(413, f"the request body is larger than this server accepts ({limit} bytes)",
                    code="request_too_large")
