"""SingleSequence: sequence 0 of a Llama's context, the one llama-cpp-python's API works on.

It knows which tokens the KV cache holds (`input_ids[:n_tokens]`), evaluates new ones in
chunks of n_batch, reuses the longest common prefix with what it already holds (or with a
state cache), lets one generation at a time own it, and hands out the seed of each call. The engine (n_parallel > 1) uses the
same context for its own sequences; Llama keeps the two from running at once.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core
from ._core import DEFAULT_SEED, AbortedError, Context
from ._state import LlamaState


def longest_token_prefix(a: Sequence[int] | npt.NDArray[Any], b: Sequence[int] | npt.NDArray[Any]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if len(diff) else n


@dataclass
class Owner:
    """A generation (or low-level call) holding the sequence: its thread and cancel event."""

    thread: int
    cancel: threading.Event | None
    superseded: bool = False


class SingleSequence:
    """The tokens evaluated into sequence 0 of `ctx` (None for a vocab-only model) and the
    generation that owns it. Callers hold the owning Llama's `lock`, which they hold only
    for a step at a time: a stream releases it between its chunks, and ownership (`claim`,
    `keep`, `release`) keeps two generations from mixing their tokens in one KV cache."""

    def __init__(self, ctx: Context | None, *, n_ctx: int, n_batch: int, n_vocab: int, logits_all: bool,
                 seed: int, lock: threading.RLock) -> None:
        self.ctx = ctx
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.logits_all = logits_all
        self.input_ids: npt.NDArray[np.intc] = np.zeros(n_ctx, dtype=np.intc)
        self.scores: npt.NDArray[np.single] = (
            np.zeros((n_ctx, n_vocab), dtype=np.single) if logits_all else np.zeros((0, n_vocab), np.single))
        self.n_tokens = 0
        self.seed = seed  # the seed of calls that give none; saved with the state
        self.cache: Any = None
        self._owner: Owner | None = None
        self._turns = threading.Condition(lock)
        self._depth = threading.local()  # per thread: how many step() blocks are open
        self._seed_lock = threading.Lock()
        # What a prompt that extends a cached state calls to load it (Llama.load_state, so a
        # subclass or instrumentation sees it, as in llama-cpp-python).
        self.load_cached: Callable[[LlamaState], None] = self.restore

    @property
    def tokens(self) -> npt.NDArray[np.intc]:
        return self.input_ids[: self.n_tokens]

    def _context(self) -> Context:
        if self.ctx is None:
            raise ValueError("[Llama] the model was loaded with vocab_only=True; it cannot evaluate tokens")
        return self.ctx

    def eval(self, tokens: list[int], *, cancel: threading.Event | None = None) -> None:
        """Evaluates tokens after the ones already evaluated, in chunks of n_batch."""
        ctx = self._context()
        if not tokens:
            return
        if self.n_tokens + len(tokens) > self.n_ctx:
            raise ValueError(
                f"Requested tokens ({self.n_tokens + len(tokens)}) exceed context window of {self.n_ctx}")
        if ctx.seq_pos_max(0) >= self.n_tokens:
            # Cells past n_tokens are stale (after reset(), or a rolled-back generation).
            if not ctx.seq_rm(0, self.n_tokens, -1):
                ctx.memory_clear()
                self.n_tokens = 0
        for start in range(0, len(tokens), self.n_batch):
            if cancel is not None and cancel.is_set():
                raise AbortedError("[Llama] generation was cancelled")
            chunk = tokens[start:start + self.n_batch]
            ctx.decode_tokens(chunk, pos0=self.n_tokens, all_logits=self.logits_all)
            self.input_ids[self.n_tokens:self.n_tokens + len(chunk)] = chunk
            if self.logits_all:
                self.scores[self.n_tokens:self.n_tokens + len(chunk)] = ctx.logits()
            self.n_tokens += len(chunk)

    def record(self, tokens: list[int], logits: npt.NDArray[np.single] | None = None) -> None:
        """Notes tokens evaluated after the current ones elsewhere (a speculative step's batch);
        `logits`: their rows, kept with logits_all."""
        end = self.n_tokens + len(tokens)
        self.input_ids[self.n_tokens:end] = tokens
        if self.logits_all and logits is not None:
            self.scores[self.n_tokens:end] = logits
        self.n_tokens = end

    def prepare(self, tokens: list[int], *, cancel: threading.Event | None = None) -> None:
        """Makes the context hold exactly `tokens`, evaluating only what is not already there
        (the longest common prefix with the current tokens, or with a cached state)."""
        ctx = self._context()
        if len(tokens) > self.n_ctx:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {self.n_ctx}")
        keep = longest_token_prefix(self.tokens, tokens)
        if self.cache is not None and keep < len(tokens) - 1:
            key = tuple(tokens)
            try:
                # llama-cpp-python's override point of a cache: which stored key shares most.
                cached_key = self.cache._find_longest_prefix_key(key)
            except Exception:
                cached_key = None
            if cached_key is not None and longest_token_prefix(cached_key, tokens) > keep:
                self.load_cached(self.cache[key])
                keep = longest_token_prefix(self.tokens, tokens)
        # The last token is always evaluated again so its logits are fresh.
        keep = min(keep, len(tokens) - 1)
        if keep < self.n_tokens and not ctx.seq_rm(0, keep, -1):
            ctx.memory_clear()
            keep = 0
        self.n_tokens = keep
        self.eval(tokens[keep:], cancel=cancel)

    def evaluate_all(self, tokens: list[int]) -> Iterator[tuple[int, npt.NDArray[np.single]]]:
        """Evaluates `tokens` from an empty context with logits for every position; yields
        (start, logits rows) per chunk of n_batch (rows valid until the next chunk)."""
        ctx = self._context()
        ctx.memory_clear()
        self.n_tokens = 0
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            ctx.decode_tokens(chunk, pos0=start, all_logits=True)
            rows = ctx.logits()
            yield start, rows
            self.input_ids[start:start + len(chunk)] = chunk
            if self.logits_all:
                self.scores[start:start + len(chunk)] = rows
            self.n_tokens = start + len(chunk)

    def last_scores(self) -> npt.NDArray[np.single]:
        """Logits kept so far: one row per evaluated token with logits_all, else the last row."""
        if self.logits_all:
            return self.scores[: self.n_tokens]
        ctx = self._context()
        if ctx.n_outputs == 0:
            return np.zeros((0, self.scores.shape[1]), np.single)
        return ctx.logits_ith(-1)[None, :]

    def snapshot(self) -> LlamaState:
        """The context's state, restorable with restore()."""
        data = self._context().state_get()
        scores = self.last_scores().copy()
        return LlamaState(self.input_ids.copy(), scores, self.n_tokens, data, len(data), self.seed)

    def restore(self, state: LlamaState) -> None:
        """Restores a snapshot. Raises StateError (leaving an empty context) when it does not
        fit this model and context."""
        ctx = self._context()
        if state.n_tokens > self.n_ctx:
            raise ValueError(f"state holds {state.n_tokens} tokens, more than n_ctx={self.n_ctx}")
        try:
            ctx.state_set(state.llama_state)
        except Exception:
            self.n_tokens = 0
            raise
        self.input_ids[: state.n_tokens] = state.input_ids[: state.n_tokens]
        self.n_tokens = state.n_tokens
        if self.logits_all and len(state.scores) == state.n_tokens:
            self.scores[: state.n_tokens] = state.scores
        self.seed = state.seed
        if self.n_tokens > 0:
            # llama.cpp restores the logits, but which rows they belong to is not exposed;
            # evaluating the last token again makes them addressable (one token's work).
            last = int(self.input_ids[self.n_tokens - 1])
            self.n_tokens -= 1
            self.eval([last])

    @contextlib.contextmanager
    def step(self) -> Iterator[bool]:
        """Holds the lock for one step of a generation or one low-level call; yields whether
        it is this thread's outermost step (a call made from inside a step, e.g. by a logits
        processor, runs within that step and claims nothing)."""
        with self._turns:
            depth = getattr(self._depth, "n", 0) + 1
            self._depth.n = depth
            try:
                yield depth == 1
            finally:
                self._depth.n = depth - 1

    def claim(self, cancel: threading.Event | None) -> Owner:
        """Makes a new generation (or low-level call) the owner of the sequence; the caller
        holds the Llama's lock. A generation that another thread started is waited for; one
        this thread started and left suspended (a stream it stopped reading) is superseded: if
        it is ever resumed, it evaluates its own tokens again (`keep`) and goes on correctly."""
        me = threading.get_ident()
        while self._owner is not None and self._owner.thread != me and not self._owner.superseded:
            self._turns.wait()
        if self._owner is not None:
            self._owner.superseded = True
        self._owner = Owner(me, cancel)
        return self._owner

    def keep(self, owner: Owner, history: list[int], cancel: threading.Event | None = None) -> None:
        """Makes sure the context holds `history` for `owner`, taking the sequence back (and
        evaluating what another generation replaced) if it was superseded meanwhile."""
        if self._owner is not owner:
            if self._owner is not None:
                self._owner.superseded = True
            owner.superseded = False
            self._owner = owner
            self.prepare(history, cancel=cancel)

    def release(self, owner: Owner, idle: bool = True) -> None:
        """Ends `owner`'s hold on the sequence (if it still has it) and wakes waiting threads.
        idle: the calling thread is done generating (not one low-level call of a loop), so
        its CPU workers are let go (see _core.release_thread_workers)."""
        if self._owner is owner:
            self._owner = None
            if self.ctx is not None and not self.ctx.closed:
                # A cancel noticed between decodes leaves the context's flag set; clear it so
                # the next call does not abort at once.
                self.ctx.clear_cancel()
            if idle:
                _core.release_thread_workers()
            self._turns.notify_all()

    def owns(self, owner: Owner) -> bool:
        return self._owner is owner

    def cancel(self) -> None:
        """Stops the running generation, also in the middle of a prompt evaluation."""
        owner = self._owner
        if owner is not None and owner.cancel is not None:
            owner.cancel.set()
            if self.ctx is not None and not self.ctx.closed:
                self.ctx.cancel()

    def cancel_if(self, token: threading.Event) -> None:
        """Stops the running generation if it was started with this cancel event."""
        owner = self._owner
        if owner is not None and owner.cancel is token:
            self.cancel()

    def next_seed(self, explicit: int | None) -> int:
        """The seed of a call: `explicit`, or this sequence's seed. Either way the sequence's
        seed then moves on to one derived from it (as llama-cpp-python's does), so repeated
        calls sample differently and a run is reproducible from set_seed(); the default seed
        (random in llama.cpp) and negative seeds stay random."""
        with self._seed_lock:
            seed = self.seed if explicit is None else int(explicit)
            self.seed = seed if seed < 0 or seed == DEFAULT_SEED else random.Random(seed).randint(0, 2**32)
            return seed
