"""The engine behind ``Llama(n_parallel=N)``: one thread steps a ``_core.Engine`` (continuous
batching over one context) and hands every request's tokens to whoever consumes them.

The stepping thread only decodes, samples and dispatches; turning tokens into text (UTF-8
assembly, stop sequences, log-probabilities) happens in the consumer's own thread, so one
slow consumer never holds back the others. The thread starts with the first request and
ends after a second without work.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Iterator

from . import _core
from ._core import AbortedError, ClosedError, FinishReason

_IDLE_EXIT_S = 1.0
_POLL_S = 0.05  # how often a waiting consumer looks at its cancel event
_CANCEL_WAIT_S = 10.0

_runners: weakref.WeakSet[EngineRunner] = weakref.WeakSet()


def _error_for(message: str) -> Exception:
    """The exception a failed request raises, typed like the single-sequence path's."""
    if "no KV cache slot" in message:
        return _core.ContextFullError(message)
    if message.startswith("[Context.decode]"):
        return _core.DecodeError(message)
    if message.startswith("[SamplerChain"):
        return _core.InvalidArgumentError(message)
    return _core.LlamaError(message)


class EngineRequest:
    """One submitted prompt: its events, in order, for one consumer."""

    def __init__(self, runner: EngineRunner, prompt: list[int], cancel: threading.Event | None) -> None:
        self.id = -1
        self.tokens = list(prompt)  # prompt, then each sampled token (read by logits processors)
        self.n_prompt = len(prompt)
        self.cancel_event = cancel
        self._runner = runner
        self._queue: queue.SimpleQueue[_core.EngineEvent | BaseException] = queue.SimpleQueue()
        self._done = threading.Event()  # set once the engine has let the request go

    def events(self) -> Iterator[_core.EngineEvent]:
        """Yields token events up to and including the last one (finish != NONE). Raises
        AbortedError when cancelled, the request's error when it failed."""
        while True:
            # Checked before every event, not only while waiting: a consumer that keeps
            # receiving tokens must still notice its cancel event.
            if self.cancel_event is not None and self.cancel_event.is_set():
                self.close()
                raise AbortedError("[Llama] generation was cancelled")
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            if item.finish == FinishReason.CANCELLED:
                raise AbortedError("[Llama] generation was cancelled")
            if item.finish == FinishReason.ERROR:
                raise _error_for(item.error)
            yield item
            if item.finish != FinishReason.NONE:
                return

    def close(self) -> None:
        """Ends the request if it still runs and waits (briefly) until the engine has freed
        its slot and KV cells. Safe to call more than once."""
        if self._done.is_set():
            return
        self._runner.cancel(self)
        if threading.current_thread() is not self._runner.thread:
            self._done.wait(_CANCEL_WAIT_S)

    def _deliver(self, item: _core.EngineEvent | BaseException, last: bool) -> None:
        self._queue.put(item)
        if last:
            self._done.set()


class EngineRunner:
    """A _core.Engine and the thread that steps it."""

    def __init__(self, ctx: _core.Context, *, max_prompt_tokens_per_step: int = 0, min_shared_prefix: int = 8) -> None:
        self.engine = _core.Engine(ctx, max_prompt_tokens_per_step=max_prompt_tokens_per_step,
                                   min_shared_prefix=min_shared_prefix)
        self._cond = threading.Condition()
        self._requests: dict[int, EngineRequest] = {}
        self.thread: threading.Thread | None = None
        self._closed = False
        _runners.add(self)

    @property
    def n_slots(self) -> int:
        return self.engine.n_slots

    def submit(self, prompt: list[int], sampler: _core.SamplerChain, *, max_tokens: int, return_logits: bool,
               cancel: threading.Event | None = None) -> EngineRequest:
        """Queues a prompt (the sampler chain becomes the engine's); returns its request."""
        request = EngineRequest(self, prompt, cancel)
        with self._cond:
            if self._closed:
                raise ClosedError("[Llama] the model is closed")
            request.id = self.engine.submit(prompt, sampler, max_tokens=max_tokens, return_logits=return_logits)
            self._requests[request.id] = request
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="llamabind-engine", daemon=True)
                self.thread.start()
            self._cond.notify_all()
        return request

    def cancel(self, request: EngineRequest) -> None:
        with self._cond:
            if request.id in self._requests:
                self.engine.cancel(request.id)
                self._cond.notify_all()

    def cancel_matching(self, event: threading.Event) -> None:
        """Cancels the requests started with this cancel event (without waiting)."""
        with self._cond:
            for rid, request in self._requests.items():
                if request.cancel_event is event:
                    self.engine.cancel(rid)
            self._cond.notify_all()

    def cancel_all(self) -> None:
        with self._cond:
            self.engine.cancel_all()
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """Whether requests are waiting or running."""
        with self._cond:
            return bool(self._requests)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until no request is left; returns False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._requests, timeout)

    def close(self) -> None:
        """Cancels everything, stops the thread and frees the engine. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self.engine.cancel_all()
            self._cond.notify_all()
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.engine.close()
        with self._cond:
            pending = list(self._requests.values())
            self._requests.clear()
            self._cond.notify_all()
        for request in pending:
            request._deliver(ClosedError("[Llama] the model was closed during the generation"), True)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closed and not self.engine.has_work:
                    self._cond.wait(_IDLE_EXIT_S)
                if self._closed or not self.engine.has_work:
                    self.thread = None
                    return
            try:
                events = self.engine.step()
            except BaseException as exc:  # noqa: BLE001 - handed to every consumer
                self._fail_all(exc)
                return
            delivered: list[tuple[EngineRequest, _core.EngineEvent, bool]] = []
            with self._cond:
                for ev in events:
                    request = self._requests.get(ev.request)
                    if request is None:
                        continue
                    last = ev.finish != FinishReason.NONE
                    if last:
                        del self._requests[ev.request]
                    else:
                        request.tokens.append(ev.token)
                    delivered.append((request, ev, last))
                if not self._requests:
                    self._cond.notify_all()
            for request, ev, last in delivered:
                request._deliver(ev, last)

    def _fail_all(self, exc: BaseException) -> None:
        """The engine itself failed (e.g. its context was closed): every request gets the error."""
        with self._cond:
            self._closed = True
            self.thread = None
            pending = list(self._requests.values())
            self._requests.clear()
            self._cond.notify_all()
        self.engine.close()
        for request in pending:
            request._deliver(exc, True)


@atexit.register
def _close_runners() -> None:
    # Stop stepping threads before the interpreter tears down the contexts they decode with.
    for runner in list(_runners):
        runner.close()
