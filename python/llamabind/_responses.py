"""OpenAI-shaped responses: completion chunks and dicts, chat completions and their chunks,
tool calls, embeddings. Pure dict shaping, no model work.

Completion chunk dicts carry a private "_n" entry, (prompt tokens, generated tokens this chunk
accounts for), from which `collect_completion` counts the usage; `strip_private` removes it
before a chunk reaches the user.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Generator, Iterator
from typing import Any

from ._generation import Chunk, TokenRecord
from ._tool_calls import CallScanner, Event, ToolFormat, parse

_EMPTY_LOGPROBS: dict[str, list[Any]] = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4()}"


def _logprobs_dict(records: list[TokenRecord], text_len: int, base: int) -> dict[str, Any]:
    kept = [r for r in records if r.offset - base < text_len or r.offset == base]
    return {
        "tokens": [r.text for r in kept],
        "text_offset": [r.offset for r in kept],
        "token_logprobs": [r.logprob for r in kept],
        "top_logprobs": [r.top for r in kept],
    }


def completion_chunks(chunks: Iterator[Chunk], model: str, n_prompt: int, base: int,
                      logprobs: int | None) -> Generator[dict[str, Any], None, None]:
    """text_completion chunk dicts (with "_n") for the chunks of one completion; `base` is the
    text offset of the first chunk (0 when the prompt is echoed, else the prompt's length)."""
    cid = completion_id()
    created = int(time.time())
    for chunk in chunks:
        lp = None
        if logprobs is not None:
            lp = _logprobs_dict(chunk.records, len(chunk.text), base) if chunk.records or chunk.text \
                else {k: list(v) for k, v in _EMPTY_LOGPROBS.items()}
        base += len(chunk.text)
        yield {
            "id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": chunk.text, "index": 0, "logprobs": lp, "finish_reason": chunk.finish_reason}],
            "_n": (n_prompt, chunk.generated),
        }


def strip_private(chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for chunk in chunks:
        chunk.pop("_n", None)
        yield chunk


def collect_completion(chunks: Iterator[dict[str, Any]], with_logprobs: bool) -> dict[str, Any]:
    """The whole text_completion dict of a stream of chunk dicts (with "_n")."""
    text: list[str] = []
    lp: dict[str, list[Any]] = {k: [] for k in _EMPTY_LOGPROBS}
    first: dict[str, Any] | None = None
    finish = None
    n_prompt = n_completion = 0
    for chunk in chunks:
        first = first or chunk
        n_prompt, n = chunk.pop("_n")
        n_completion += n
        choice = chunk["choices"][0]
        text.append(choice["text"])
        if with_logprobs and choice["logprobs"]:
            for key in lp:
                lp[key].extend(choice["logprobs"][key])
        finish = choice["finish_reason"] or finish
    assert first is not None
    return {
        "id": first["id"], "object": "text_completion", "created": first["created"], "model": first["model"],
        "choices": [{"text": "".join(text), "index": 0, "logprobs": lp if with_logprobs else None,
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                  "total_tokens": n_prompt + n_completion},
    }


def merge_completions(outs: list[dict[str, Any]]) -> dict[str, Any]:
    """One completion dict with a choice per prompt (choice i for prompt i)."""
    choices = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for i, out in enumerate(outs):
        choice = dict(out["choices"][0])
        choice["index"] = i
        choices.append(choice)
        for key in usage:
            usage[key] += out["usage"][key]
    first = outs[0]
    return {"id": first["id"], "object": "text_completion", "created": first["created"], "model": first["model"],
            "choices": choices, "usage": usage}


def _chat_logprobs(choice: dict[str, Any]) -> dict[str, Any] | None:
    lp = choice.get("logprobs")
    if not lp:
        return None
    content = []
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        content.append({
            "token": token, "logprob": logprob, "bytes": list(token.encode("utf-8")),
            "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode("utf-8"))}
                             for t, p in (top or {}).items()],
        })
    return {"content": content, "refusal": None}


def chat_collect(chunks: Iterator[dict[str, Any]], with_logprobs: bool) -> dict[str, Any]:
    """The chat.completion dict of a stream of completion chunk dicts."""
    completion = collect_completion(chunks, with_logprobs)
    choice = completion["choices"][0]
    return {
        "id": "chat" + completion["id"], "object": "chat.completion", "created": completion["created"],
        "model": completion["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": choice["text"]},
                     "logprobs": _chat_logprobs(choice) if with_logprobs else None,
                     "finish_reason": choice["finish_reason"]}],
        "usage": completion["usage"],
    }


def _chat_chunk(base: dict[str, Any], delta: dict[str, Any], finish: str | None = None,
                logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def chat_stream(chunks: Iterator[dict[str, Any]], with_logprobs: bool) -> Iterator[dict[str, Any]]:
    """chat.completion.chunk dicts for a stream of completion chunk dicts: the role first,
    then the content as it comes, then the finish reason."""
    first = True
    for chunk in strip_private(chunks):
        base = {"id": "chat" + chunk["id"], "model": chunk["model"], "object": "chat.completion.chunk",
                "created": chunk["created"]}
        choice = chunk["choices"][0]
        if first:
            yield _chat_chunk(base, {"role": "assistant"})
            first = False
        if choice["text"] or (with_logprobs and choice["logprobs"] and choice["logprobs"]["tokens"]):
            yield _chat_chunk(base, {"content": choice["text"]},
                              logprobs=_chat_logprobs(choice) if with_logprobs else None)
        if choice["finish_reason"] is not None:
            yield _chat_chunk(base, {}, choice["finish_reason"])


def chat_with_tools(response: dict[str, Any], fmt: ToolFormat, names: Collection[str],
                    legacy: bool) -> dict[str, Any]:
    """Turns a reply that calls tools into tool_calls (or a legacy function_call)."""
    choice = response["choices"][0]
    content, calls = parse(choice["message"]["content"] or "", fmt, names)
    if not calls:
        return response
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if legacy:
        message["function_call"] = dict(calls[0]["function"])
        choice["finish_reason"] = "function_call"
    else:
        message["tool_calls"] = calls
        choice["finish_reason"] = "tool_calls"
    choice["message"] = message
    return response


def _tool_deltas(events: list[Event], scanner: CallScanner, legacy: bool, held: list[str]) -> Iterator[dict[str, Any]]:
    """The deltas of what the scanner found. Content keeps its trailing whitespace back (in
    `held`) until more content follows, as the whole reply's content drops it before a call."""
    for event in events:
        if event.content:
            text = held.pop() + event.content if held else event.content
            kept = text.rstrip()
            if text[len(kept):]:
                held.append(text[len(kept):])
            if kept:
                yield {"content": kept}
        elif event.call is not None and (not legacy or event.call == 0):
            call = scanner.calls[event.call]
            function = {"name": call.name, "arguments": ""} if event.start else {"arguments": event.arguments}
            if legacy:
                yield {"function_call": function}
            elif event.start:
                yield {"tool_calls": [{"index": event.call, "id": call.id, "type": "function", "function": function}]}
            else:
                yield {"tool_calls": [{"index": event.call, "function": function}]}


def chat_tool_stream(chunks: Iterator[dict[str, Any]], fmt: ToolFormat, names: Collection[str], legacy: bool,
                     with_logprobs: bool) -> Iterator[dict[str, Any]]:
    """chat.completion.chunk dicts of a reply that may call tools, streamed as OpenAI and
    llama-server stream them: content as it comes (held back only while it may be opening a
    call), each call's id and name once its arguments begin, then its arguments as the model
    writes them; the finish reason last. Logprobs ride on the next chunk sent."""
    scanner = CallScanner(fmt, names)
    held: list[str] = []
    pending: list[Any] = []  # logprobs of text whose chunk has not been sent yet
    base: dict[str, Any] = {}
    finish = None
    for chunk in strip_private(chunks):
        choice = chunk["choices"][0]
        if not base:
            base = {"id": "chat" + chunk["id"], "model": chunk["model"], "object": "chat.completion.chunk",
                    "created": chunk["created"]}
            yield _chat_chunk(base, {"role": "assistant"})
        if with_logprobs and choice["logprobs"]:
            pending += (_chat_logprobs(choice) or {"content": []})["content"]
        events = scanner.feed(choice["text"])
        if choice["finish_reason"] is not None:
            finish = choice["finish_reason"]
            events += scanner.close()
        for delta in _tool_deltas(events, scanner, legacy, held):
            yield _chat_chunk(base, delta, logprobs={"content": pending, "refusal": None} if pending else None)
            pending = []
    if not base:
        return
    if scanner.calls and not scanner.unfinished:
        finish = "function_call" if legacy else "tool_calls"
    elif held and not scanner.calls:
        yield _chat_chunk(base, {"content": held.pop()})
    yield _chat_chunk(base, {}, finish, logprobs={"content": pending, "refusal": None} if pending else None)


def embedding_response(embeddings: list[Any], n_tokens: int, model: str) -> dict[str, Any]:
    """The OpenAI-style embeddings list."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": e, "index": i} for i, e in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }
