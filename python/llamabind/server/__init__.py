"""An OpenAI-compatible HTTP server on llamabind's batching engine: ``llamabind serve`` (also
``python -m llamabind.server``), or an ASGI app to embed in a FastAPI application::

    pip install "llamabind[server]"
    llamabind serve -m model.gguf -np 8 --api-key secret

    from llamabind.server import ModelSettings, create_app
    app = create_app([ModelSettings("model.gguf", alias="chat", n_parallel=4)])

Endpoints: /v1/completions, /v1/chat/completions (streamed or not; tools, response_format,
logprobs, n, stream_options), /v1/embeddings, /v1/models, /health, /metrics, /tokenize,
/detokenize and llama-cpp-python's /extras/* aliases; OpenAPI docs at /docs. Every model
runs its requests on a ``Llama(n_parallel=N)`` engine, N at a time, with a bounded queue
behind them (HTTP 429 when it is full).

This package imports without the server's dependencies (FastAPI, uvicorn, sse-starlette,
pydantic); `create_app` and `main` say what to install when they are missing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Union

from ._settings import ModelSettings, ServerSettings, SettingsError, parse_args

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ModelSettings", "ServerSettings", "create_app", "main"]

_EXTRA = 'the server needs its extra dependencies: pip install "llamabind[server]"'


def _app_module() -> Any:
    """The FastAPI side of the server, imported only when an app is wanted."""
    try:
        from . import _app
    except ImportError as exc:
        missing = f" ({exc.name} is missing)" if exc.name else ""
        raise ImportError(f"{_EXTRA}{missing}", name=exc.name) from exc
    return _app


def create_app(models: Sequence[Union[ModelSettings, Mapping[str, Any], str, PathLike[str]]] | None = None, *,
               settings: ServerSettings | None = None) -> FastAPI:
    """The server as an ASGI (FastAPI) app serving `models` (ModelSettings, config-file model
    entries, or GGUF paths with the default settings; none: the default model), or
    everything `settings` says.
    The models load in a background thread when the app starts (or with its first request,
    when it is mounted inside another app); /health answers 503 until they are ready.

        from fastapi import FastAPI
        from llamabind.server import ModelSettings, create_app

        llm_app = create_app([ModelSettings("model.gguf", alias="chat")])

        @llm_app.get("/hello")          # add routes of your own
        def hello() -> dict:
            return {"hello": "world"}

        app = FastAPI()
        app.mount("/llm", llm_app)      # or serve llm_app itself: uvicorn module:llm_app
    """
    app: FastAPI = _app_module().create_app(models, settings=settings)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """``llamabind serve [options]``: serves until SIGTERM or Ctrl-C and returns the exit
    status (0 after a graceful stop; 1 when a model cannot be loaded or the port taken; 2
    for a command line or config file that cannot work)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings, namespace = parse_args(args)
        settings.check_files()
    except SystemExit as exc:  # --help, or argparse's own error message
        return exc.code if isinstance(exc.code, int) else 2
    except SettingsError as exc:
        sys.stderr.write(f"llamabind serve: error: {exc}\n")
        return 2
    status: int = _app_module().serve(settings, verbose=namespace.verbose)
    return status
