"""The FastAPI application and the process that serves it: routes, error handlers in OpenAI's
shape, middleware, the lifespan that loads the models in the background and closes them,
and `serve` (uvicorn, graceful shutdown on SIGTERM). This is the one module that needs the
``server`` extra; `llamabind.server` imports it when an app is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from .._core import LlamaError, set_native_stderr_logging
from . import _routes_embeddings, _routes_generate, _routes_rerank, _routes_status, _routes_tokens
from ._admission import QueueFull
from ._errors import APIError, from_exception, internal
from ._http import JSONResponse, ServerContext
from ._metrics import Metrics
from ._middleware import Guard, Observe
from ._registry import Registry, ServedModel, logger
from ._settings import ModelSettings, ServerSettings

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def _answer(error: APIError) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _on_error(request: Request, exc: Exception) -> Response:
    error = from_exception(exc)
    if error is None:  # a LlamaError that is not the client's doing
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        error = internal(exc)
    return _answer(error)


async def _on_invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = [str(p) for p in first.get("loc", ()) if p != "body"]
    message = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    return _answer(APIError(400, f"{'.'.join(where) + ': ' if where else ''}{message}",
                            param=".".join(where) or None, code=str(first.get("type", "invalid_request"))))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _answer(APIError(exc.status_code, str(exc.detail), code=_HTTP_CODES.get(exc.status_code),
                            headers=dict(exc.headers or {})))


def create_app(models: Sequence[Any] | None = None, *, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app (see llamabind.server.create_app)."""
    if settings is None:
        found = [m if isinstance(m, ModelSettings) else
                 ModelSettings.from_entry(m, {}, None) if isinstance(m, Mapping) else ModelSettings(path=os.fspath(m))
                 for m in (models or ())]
        settings = ServerSettings(models=tuple(found)) if found else ServerSettings()
    elif models is not None:
        raise TypeError("create_app takes models or settings, not both")
    ctx = ServerContext(settings, Registry(settings.models), Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.registry.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, ctx.registry.close, min(settings.shutdown_timeout, 10.0))

    app = FastAPI(title="llamabind", summary="An OpenAI-compatible API on llama.cpp's models, many requests at once",
                  lifespan=lifespan)
    app.state.llamabind = ctx
    for module in (_routes_generate, _routes_embeddings, _routes_rerank, _routes_tokens, _routes_status):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, _on_invalid)
    app.add_exception_handler(HTTPException, _on_http)
    # What from_exception maps; anything else is a bug, answered with a 500 by Guard.
    for kind in (APIError, QueueFull, LlamaError, ValueError, TypeError):
        app.add_exception_handler(kind, _on_error)
    app.add_middleware(Guard, keys=settings.api_keys, max_body=settings.max_body_size)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_credentials="*" not in settings.cors_origins)
    app.add_middleware(Observe, ctx=ctx)
    return app


def serve(settings: ServerSettings, verbose: bool = False) -> int:
    """Serves until SIGTERM or Ctrl-C; returns the exit status (0 after a graceful stop, 1 when
    a model fails to load or the port cannot be taken)."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("llamabind").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("llamabind.server").setLevel(settings.log_level.upper())
    if verbose:
        set_native_stderr_logging(True)
    app = create_app(settings=settings)
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) + 2, lifespan="on"))
    status = 0

    def failed(model: ServedModel) -> None:
        nonlocal status
        status = 1
        server.should_exit = True

    registry: Registry = app.state.llamabind.registry
    registry.on_failure = failed
    # uvicorn raises the signal that stopped it again once it has shut down; these handlers
    # make that second delivery harmless, so a graceful stop ends with status 0.
    quiet: dict[int, Any] = {}

    def ignore(sig: int, frame: FrameType | None) -> None:
        pass

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            quiet[sig] = signal.signal(sig, ignore)
        except ValueError:  # not the main thread: uvicorn installs no handlers either
            break
    try:
        server.run()
    except SystemExit as exc:  # uvicorn's way of saying it could not start (port taken, ...)
        return 0 if exc.code in (0, None) else 1
    finally:
        for number, handler in quiet.items():
            signal.signal(number, handler)
    if not server.started:
        return 1
    return status
