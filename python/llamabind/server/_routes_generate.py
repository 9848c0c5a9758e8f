"""POST /v1/completions and /v1/chat/completions (also without the /v1 prefix, as
llama-server and llama-cpp-python answer them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from ._arguments import chat_choices, completion_choices
from ._generate import Generation
from ._http import context, respond, serving
from ._schemas import ChatCompletionBody, CompletionBody

router = APIRouter(tags=["generation"])


async def _generate(request: Request, body: CompletionBody | ChatCompletionBody) -> Response:
    ctx = context(request)
    served = serving(request, ctx.registry.get(body.model, embedding=False))
    n_vocab = served.llm.n_vocab()
    if isinstance(body, ChatCompletionBody):
        chat, choices = True, chat_choices(body, served.name, n_vocab)
    else:
        chat, choices = False, completion_choices(body, served.name, n_vocab)
    include_usage = bool(body.stream and body.stream_options is not None and body.stream_options.include_usage)
    return await respond(request, Generation(served, chat, choices, ctx.metrics, include_usage), body.stream)


@router.post("/v1/completions", summary="Complete a prompt (OpenAI's legacy completions)")
@router.post("/completions", include_in_schema=False)
async def completions(body: CompletionBody, request: Request) -> Response:
    return await _generate(request, body)


@router.post("/v1/chat/completions", summary="Answer a conversation (tools, JSON schemas, logprobs, streaming)")
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(body: ChatCompletionBody, request: Request) -> Response:
    return await _generate(request, body)
