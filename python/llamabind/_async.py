"""Async wrappers: a blocking Llama call run in a worker thread, and a chunk stream produced
in a worker thread and consumed as an async iterator. Cancelling the awaiting task (or
leaving the async iteration early) stops the generation through `cancel_call(event)`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

CancelCall = Callable[[threading.Event], None]


async def run_in_thread(fn: Callable[[], Any], token: threading.Event | None,
                        executor: concurrent.futures.Executor | None, cancel_call: CancelCall) -> Any:
    """Runs fn in `executor` (None: the loop's default); cancelling the awaiting task stops
    the call started with `token` and waits for it to end before re-raising."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(executor, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if token is not None:
            cancel_call(token)
        with contextlib.suppress(BaseException):
            await future
        raise


class AsyncStream:
    """An async iterator over a synchronous chunk iterator produced in a worker thread."""

    def __init__(self, make: Callable[[], Iterator[dict[str, Any]]], token: threading.Event,
                 executor: concurrent.futures.Executor | None, cancel_call: CancelCall) -> None:
        self._make = make
        self._token = token
        self._executor = executor
        self._cancel_call = cancel_call

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def produce() -> None:
            try:
                for chunk in self._make():
                    loop.call_soon_threadsafe(queue.put_nowait, ("chunk", chunk))
                    if self._token.is_set():
                        break
            except BaseException as exc:  # handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

        future = loop.run_in_executor(self._executor, produce)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "chunk":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    break
        finally:
            if not future.done():
                self._cancel_call(self._token)
                with contextlib.suppress(BaseException):
                    await asyncio.shield(future)
