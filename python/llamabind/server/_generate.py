"""A completion or chat completion request running on its model's engine.

Each choice is one sequence: it waits for a slot in the model's admission queue, then runs
in a worker thread of the model (a blocking `Llama` call, or a stream whose chunks the
worker turns into Server-Sent Events right away, so the event loop only forwards bytes).
When the client goes away every choice's cancel event is set: the engine drops the sequence
at its next step and the slot is free again. Streams start answering only once their first
chunk exists, so a request the model refuses (a prompt longer than the context, a bad
grammar) still gets its 400 status.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from starlette.requests import Request

from . import _pipeline
from ._arguments import ChoiceArguments
from ._errors import APIError, from_exception, internal
from ._metrics import Metrics
from ._pipeline import Usage
from ._registry import ServedModel, logger

DONE = b"data: [DONE]\n\n"
_T = TypeVar("_T")
# What a stream's worker hands to the event loop: an encoded event, its error, or None at its end.
_Item = tuple[int, Union[bytes, BaseException, None]]


def sse(obj: Any) -> bytes:
    """One Server-Sent Event carrying `obj` as JSON."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def until_disconnected(request: Request, work: Awaitable[_T]) -> _T:
    """Awaits `work`, or cancels it and raises ClientGone as soon as the client disconnects
    (the request body has been read, so the next ASGI message is the disconnect)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nobody may await it after ClientGone
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise ClientGone()


@dataclass
class Choice:
    index: int
    arguments: ChoiceArguments
    usage: Usage = field(default_factory=Usage)
    cancel: threading.Event = field(default_factory=threading.Event)


class Generation:
    """One request: its choices on one model, answered whole (`complete`) or streamed (`stream`)."""

    def __init__(self, served: ServedModel, chat: bool, choices: list[ChoiceArguments], metrics: Metrics,
                 include_usage: bool = False) -> None:
        self.served = served
        self.llm = served.llm
        self.chat = chat
        self.choices = [Choice(i, c) for i, c in enumerate(choices)]
        for c in self.choices:
            c.arguments.kwargs["cancel"] = c.cancel
        self.metrics = metrics
        self.include_usage = include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4()}"
        self.created = int(time.time())
        self.arrived = time.monotonic()
        self._first_at: float | None = None
        self._last_at = 0.0
        self._finished = False

    async def _slot(self) -> float:
        """Waits for a slot; returns when it was taken."""
        started = await self.served.admission.acquire()
        self.metrics.observe("queue_wait_seconds", time.monotonic() - self.arrived, model=self.served.name)
        return started

    async def _run_choice(self, c: Choice) -> dict[str, Any]:
        call = self.llm.create_chat_completion if self.chat else self.llm.create_completion
        future = self.served.submit(await self._slot(), functools.partial(call, **c.arguments.kwargs))
        try:
            result: dict[str, Any] = await asyncio.shield(future)
        except asyncio.CancelledError:
            c.cancel.set()
            raise
        return result

    async def complete(self) -> dict[str, Any]:
        """The whole response: every choice's dict merged into one."""
        self.served.admission.reserve(len(self.choices))
        tasks = [asyncio.ensure_future(self._run_choice(c)) for c in self.choices]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            self.cancel(tasks)
            self._finish()
            raise
        response = self._merge(results)
        self._finish()
        return response

    def _merge(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        choices = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for c, result in zip(self.choices, results):
            choice = dict(result["choices"][0])
            choice["index"] = c.index
            choices.append(choice)
            got = result.get("usage") or {}
            c.usage.prompt_tokens = got.get("prompt_tokens", 0)
            c.usage.completion_tokens = got.get("completion_tokens", 0)
        prompt, completion = self._usage()
        usage.update(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        return {**results[0], "id": self.id, "created": self.created, "choices": choices, "usage": usage}

    def _usage(self) -> tuple[int, int]:
        prompt = sum(c.usage.prompt_tokens for c in self.choices if c.arguments.first_of_prompt)
        return prompt, sum(c.usage.completion_tokens for c in self.choices)

    def _pump(self, c: Choice, put: Callable[[_Item], object]) -> None:
        """Worker thread: the choice's chunks as encoded events, then None (or the error)."""
        make = _pipeline.chat_stream if self.chat else _pipeline.completion_stream
        try:
            chunks = make(self.llm, c.arguments.kwargs, c.usage)
            try:
                for chunk in chunks:
                    if c.cancel.is_set():
                        break
                    chunk["id"] = self.id
                    chunk["created"] = self.created
                    chunk["choices"][0]["index"] = c.index
                    put((c.index, sse(chunk)))
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            put((c.index, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            try:
                put((c.index, exc))
            except RuntimeError:  # the event loop is closed: nobody is listening
                pass

    async def _stream_choice(self, c: Choice, queue: asyncio.Queue[_Item]) -> None:
        loop = asyncio.get_running_loop()

        def put(item: _Item) -> None:  # from the worker thread
            loop.call_soon_threadsafe(queue.put_nowait, item)

        try:
            future = self.served.submit(await self._slot(), functools.partial(self._pump, c, put))
        except APIError as exc:
            queue.put_nowait((c.index, exc))
            return
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            c.cancel.set()
            raise

    async def stream(self) -> AsyncIterator[bytes]:
        """Starts every choice and waits for the first event; returns the event stream.
        Raises (an APIError, or the model's exception) when a choice fails before that."""
        self.served.admission.reserve(len(self.choices))
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        tasks = [asyncio.ensure_future(self._stream_choice(c, queue)) for c in self.choices]
        try:
            first = await queue.get()
        except BaseException:
            self.cancel(tasks)
            self._finish()
            raise
        if isinstance(first[1], BaseException):
            self.cancel(tasks)
            self._finish()
            raise first[1]
        return self._events(first, queue, tasks)

    async def _events(self, item: _Item, queue: asyncio.Queue[_Item], tasks: Sequence[asyncio.Future[None]]) -> AsyncIterator[bytes]:
        remaining = len(self.choices)
        ended = False  # answered in full, or with an error event
        try:
            while True:
                value = item[1]
                if value is None:
                    remaining -= 1
                    if remaining == 0:
                        break
                elif isinstance(value, BaseException):
                    ended = True
                    yield self._error_event(value)
                    return
                else:
                    now = time.monotonic()
                    if self._first_at is None:
                        self._first_at = now
                        self.metrics.observe("time_to_first_token_seconds", now - self.arrived, model=self.served.name)
                    self._last_at = now
                    yield value
                item = await queue.get()
            if self.include_usage:
                prompt, completion = self._usage()
                yield sse({"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                           "created": self.created, "model": self.served.name, "choices": [],
                           "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion}})
            ended = True
            yield DONE
        finally:
            if not ended:
                self.metrics.count("cancelled_requests", model=self.served.name)
            self.cancel(tasks)
            self._finish()

    def _error_event(self, exc: BaseException) -> bytes:
        error = from_exception(exc)
        if error is None:
            logger.error("%s: a stream failed", self.served.name, exc_info=exc)
            error = internal(exc)
        return error.sse()

    def cancel(self, tasks: Sequence[asyncio.Future[Any]] = ()) -> None:
        """Stops every choice (those still waiting for a slot give it up)."""
        for c in self.choices:
            c.cancel.set()
        for t in tasks:
            t.cancel()

    def _finish(self) -> None:
        """Counts the request's tokens (once)."""
        if self._finished:
            return
        self._finished = True
        prompt, completion = self._usage()
        self.metrics.tokens(self.served.name, prompt, completion)
        if self._first_at is not None and completion > 1:
            self.metrics.observe("time_per_output_token_seconds", (self._last_at - self._first_at) / (completion - 1),
                                 model=self.served.name)
