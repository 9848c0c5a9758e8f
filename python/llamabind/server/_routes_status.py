"""What the server is: GET /health (no key needed; 503 until every model is loaded),
/metrics (Prometheus text), /v1/models and /v1/models/{model} (OpenAI's model list)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from ._errors import unknown_model
from ._http import JSONResponse, context
from ._registry import ServedModel, State

router = APIRouter(tags=["status"])


def _model_card(m: ServedModel, created: int) -> dict[str, Any]:
    s = m.settings
    return {"id": m.name, "object": "model", "created": created, "owned_by": "llamabind",
            "meta": {"path": m.path, "status": m.state.value, "embedding": m.embedding, "n_parallel": s.slots,
                     "n_ctx": m.llm.n_ctx() if m.state is State.READY else s.n_ctx}}


@router.get("/health", summary="200 when every model serves, 503 while they load")
@router.get("/v1/health", include_in_schema=False)
async def health(request: Request) -> Response:
    registry = context(request).registry
    status = registry.status()
    body = {"status": status, "models": {m.name: m.state.value for m in registry.models}}
    errors = {m.name: m.error for m in registry.models if m.error}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=200 if status == "ok" else 503, headers={} if status == "ok" else
                        {"Retry-After": "1"})


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    ctx = context(request)
    text = ctx.metrics.render([m.gauges() for m in ctx.registry.models])
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/models", summary="The models this server serves")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> dict[str, Any]:
    ctx = context(request)
    created = ctx.registry.created
    return {"object": "list", "data": [_model_card(m, created) for m in ctx.registry.models]}


@router.get("/v1/models/{model:path}", summary="One model")
async def get_model(model: str, request: Request) -> dict[str, Any]:
    ctx = context(request)
    found = next((m for m in ctx.registry.models if m.name == model), None)
    if found is None:
        raise unknown_model(model)
    return _model_card(found, ctx.registry.created)
