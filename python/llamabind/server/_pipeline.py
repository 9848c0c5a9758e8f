"""Streamed completions and chat completions with their token counts.

`Llama.create_completion(stream=True)` and `create_chat_completion(stream=True)` drop the
token counts their pipeline carries with every chunk (the private "_n" of `_responses`); the
server needs them for ``stream_options.include_usage`` and its token metrics, so it runs the
same pipeline as those two methods and reads the counts on the way. Non-streamed calls,
embeddings and tokens go through `Llama`'s public methods.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import _chat, _responses
from ..llama import Llama

_COMPLETION = inspect.signature(Llama.create_completion)
_CHAT = inspect.signature(Llama.create_chat_completion)


@dataclass
class Usage:
    """Tokens of one sequence: its prompt, and what it generated so far."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


def _all_arguments(signature: inspect.Signature, llm: Llama, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The method's keywords with its defaults filled in, as the method itself sees them."""
    bound = signature.bind(llm, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    del arguments["self"]
    return arguments


def _counted(chunks: Iterator[dict[str, Any]], usage: Usage) -> Iterator[dict[str, Any]]:
    for chunk in chunks:
        prompt, generated = chunk["_n"]
        usage.prompt_tokens = prompt
        usage.completion_tokens += generated
        yield chunk


def completion_stream(llm: Llama, kwargs: dict[str, Any], usage: Usage) -> Iterator[dict[str, Any]]:
    """create_completion(**kwargs, stream=True) for one prompt, counting into `usage`. On the
    engine the request is queued (and checked) before this returns."""
    request = llm._request(_all_arguments(_COMPLETION, llm, kwargs))
    return _responses.strip_private(_counted(llm._completer.chunks(request), usage))


def chat_stream(llm: Llama, kwargs: dict[str, Any], usage: Usage) -> Iterator[dict[str, Any]]:
    """create_chat_completion(**kwargs, stream=True), counting into `usage` (a Llama with a
    custom chat_handler streams without counts)."""
    if llm.chat_handler is not None:
        stream: Iterator[dict[str, Any]] = llm.create_chat_completion(**kwargs, stream=True)
        return stream
    plan = _chat.plan_chat(_all_arguments(_CHAT, llm, kwargs), formatter=llm._chat_formatter(),
                           template=llm._template_source(), vocab=llm._vocab, make_request=llm._request)
    chunks: Iterator[dict[str, Any]] = _chat.chat_response(plan, _counted(llm._completer.chunks(plan.request), usage),
                                                           True)
    return chunks
