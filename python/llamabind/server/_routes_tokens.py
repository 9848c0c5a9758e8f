"""Tokens: llama-server's POST /tokenize and /detokenize, and llama-cpp-python's
/extras/tokenize, /extras/tokenize/count and /extras/detokenize."""

from __future__ import annotations

from typing import Any, Union

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..llama import Llama
from ._http import context, serving
from ._schemas import DetokenizeBody, TokenizeBody, TokenizeInputBody

router = APIRouter(tags=["tokens"])


def _llama(request: Request, name: str | None) -> Llama:
    ctx = context(request)
    return serving(request, ctx.registry.any_model(name)).llm


def _piece(llm: Llama, token: int) -> Union[str, list[int]]:
    """llama-server's piece: the token's text, or its bytes when they are not valid UTF-8."""
    raw = llm.model.vocab.token_to_piece(token, special=True)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


@router.post("/tokenize", summary="Text to token ids (llama-server's shape)")
async def tokenize(body: TokenizeBody, request: Request) -> dict[str, Any]:
    llm = _llama(request, body.model)
    ids = await run_in_threadpool(llm.tokenize, body.content.encode("utf-8"), body.add_special, body.parse_special)
    if body.with_pieces:
        return {"tokens": [{"id": t, "piece": _piece(llm, t)} for t in ids]}
    return {"tokens": ids}


@router.post("/detokenize", summary="Token ids to text (llama-server's shape)")
async def detokenize(body: DetokenizeBody, request: Request) -> dict[str, Any]:
    llm = _llama(request, body.model)
    text = await run_in_threadpool(llm.detokenize, body.tokens)
    return {"content": text.decode("utf-8", errors="replace")}


async def _input_tokens(body: TokenizeInputBody, request: Request) -> list[int]:
    llm = _llama(request, body.model)
    ids: list[int] = await run_in_threadpool(llm.tokenize, body.input.encode("utf-8"), True, True)
    return ids


@router.post("/extras/tokenize", summary="Text to token ids (llama-cpp-python's shape)")
async def extras_tokenize(body: TokenizeInputBody, request: Request) -> dict[str, Any]:
    return {"tokens": await _input_tokens(body, request)}


@router.post("/extras/tokenize/count", summary="How many tokens a text is (llama-cpp-python's shape)")
async def extras_tokenize_count(body: TokenizeInputBody, request: Request) -> dict[str, Any]:
    return {"count": len(await _input_tokens(body, request))}


@router.post("/extras/detokenize", summary="Token ids to text (llama-cpp-python's shape)")
async def extras_detokenize(body: DetokenizeBody, request: Request) -> dict[str, Any]:
    llm = _llama(request, body.model)
    text = await run_in_threadpool(llm.detokenize, body.tokens)
    return {"text": text.decode("utf-8", errors="replace")}
