"""What every route shares: the server's context (settings, models, metrics) on the app, the
JSON response, and answering a generation whole or as Server-Sent Events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from ._generate import ClientGone, Generation, until_disconnected
from ._metrics import Metrics
from ._registry import Registry, ServedModel
from ._settings import ServerSettings

# sse-starlette's keep-alive comment: proxies close connections idle for longer.
_PING_S = 15


@dataclass
class ServerContext:
    """The state of one app: its settings, its models and its metrics."""

    settings: ServerSettings
    registry: Registry
    metrics: Metrics


def context(request: Request) -> ServerContext:
    return cast(ServerContext, request.app.state.llamabind)


def serving(request: Request, served: ServedModel) -> ServedModel:
    """Notes which model answers the request (the label of its metrics)."""
    request.state.model = served.name
    return served


class JSONResponse(Response):
    """JSON without Starlette's allow_nan=False: a log-probability may be -inf."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def respond(request: Request, generation: Generation, stream: bool) -> Response:
    """The generation's answer: one JSON response, or an event stream once its first event
    is ready. A client gone before that cancels the generation (nobody reads the answer)."""
    ctx = context(request)
    try:
        if not stream:
            return JSONResponse(await until_disconnected(request, generation.complete()))
        events = await until_disconnected(request, generation.stream())
    except ClientGone:
        ctx.metrics.count("cancelled_requests", model=generation.served.name)
        return Response(status_code=499)
    # The grace period lets running streams finish when the server shuts down; then they are
    # cancelled. The background task stops the generation if the stream ends early.
    return EventSourceResponse(events, ping=_PING_S, shutdown_grace_period=ctx.settings.shutdown_timeout,
                               background=BackgroundTask(generation.cancel))
