"""Completer: serves CompletionRequests for one Llama.

It turns the request's prompt into tokens (fill-in-the-middle arrangement, the BOS rule for
an empty prompt), picks the path (the single sequence, or the engine when n_parallel > 1),
runs the shared generation loop over that path's tokens and shapes the chunks as
text_completion dicts. Lists of prompts are served here too: one after another on the
single sequence, all queued at once on the engine.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ._core import Model, SamplerChain, Speculator, Vocab
from ._engine import EngineRequest, EngineRunner
from ._engine_path import check_engine_request, engine_tokens, submit
from ._generation import Chunk, ChunkMaker, echo_records, sequence_tokens, text_chunks
from ._request import CompletionRequest, Prompt
from ._responses import collect_completion, completion_chunks, strip_private
from ._sequence import Owner, SingleSequence
from ._speculation import input_ids, speculative_tokens
from .sampling import SamplingParams


def build_chain(params: SamplingParams, model: Model, history: Sequence[int], n_ctx: int,
                input_ids: Callable[[], npt.NDArray[np.intc]]) -> SamplerChain:
    """The sampler chain of `params`, its penalties seeded with the last tokens of `history`."""
    n = params.penalty_last_n if params.penalty_last_n >= 0 else len(history)
    return params.build(model, list(history)[-n:] if n else [], input_ids, n_ctx=n_ctx)


@dataclass
class PromptBuilder:
    """Prompt text or tokens to the tokens a completion evaluates."""

    vocab: Callable[[], Vocab]
    tokenize: Callable[..., list[int]]
    detokenize: Callable[..., bytes]
    spm_infill: bool

    def tokens(self, prompt: Prompt, suffix: str | None) -> tuple[list[int], str]:
        """Prompt tokens (FIM-arranged when there is a suffix; BOS alone for an empty prompt)
        and the prompt's text."""
        ids, text = self._ids(prompt, suffix)
        if not ids:
            bos = self.vocab().bos
            if bos < 0:
                raise ValueError("the prompt is empty and the model has no BOS token to start from")
            ids = [bos]
        return ids, text

    def _ids(self, prompt: Prompt, suffix: str | None) -> tuple[list[int], str]:
        v = self.vocab()
        head = [v.bos] if v.add_bos and v.bos >= 0 else []
        if isinstance(prompt, (str, bytes)):
            raw = prompt.encode("utf-8") if isinstance(prompt, str) else prompt
            text = prompt if isinstance(prompt, str) else prompt.decode("utf-8", errors="replace")
            if suffix is None:
                return (self.tokenize(raw, add_bos=True, special=True) if raw else head), text
            prefix_ids = self.tokenize(raw, add_bos=False, special=False)
        else:
            prefix_ids = [int(t) for t in prompt]
            text = self.detokenize(prefix_ids).decode("utf-8", errors="replace")
            if suffix is None:
                return prefix_ids, text
        if min(v.fim_pre, v.fim_suf, v.fim_mid) < 0:
            raise ValueError("suffix (fill-in-the-middle) needs a model with FIM tokens; this model has none")
        suffix_ids = self.tokenize(suffix.encode("utf-8"), add_bos=False, special=False)
        if self.spm_infill:
            return head + [v.fim_suf] + suffix_ids + [v.fim_pre] + prefix_ids + [v.fim_mid], text
        return head + [v.fim_pre] + prefix_ids + [v.fim_suf] + suffix_ids + [v.fim_mid], text


@dataclass
class Completer:
    """Completion requests for one Llama, on its single sequence or its engine (`runner`).
    `vocab` gives the model's vocabulary (ClosedError once the Llama is closed) and
    `check_open` raises when the Llama cannot evaluate tokens (closed, vocab-only)."""

    model: Model
    vocab: Callable[[], Vocab]
    seq: SingleSequence
    runner: EngineRunner | None
    lock: threading.RLock
    prompts: PromptBuilder
    model_name: str
    check_open: Callable[[], object]
    speculator: Speculator | None = None  # speculative decoding on the single sequence

    def chunks(self, request: CompletionRequest) -> Iterator[dict[str, Any]]:
        """The completion chunk dicts (with "_n") of one request: from the engine when there is
        one (the request is queued at once), else from the single sequence (when iterated)."""
        if self.runner is not None:
            return self._engine(request)[1]
        return self._single(request)

    def complete(self, request: CompletionRequest) -> dict[str, Any]:
        return collect_completion(self.chunks(request), request.logprobs is not None)

    def _chain(self, params: SamplingParams, history: Sequence[int],
               input_ids: Callable[[], npt.NDArray[np.intc]] | None = None) -> SamplerChain:
        seq = self.seq
        return build_chain(params, self.model, history, seq.n_ctx, input_ids or (lambda: seq.tokens))

    def _single(self, request: CompletionRequest) -> Iterator[dict[str, Any]]:
        """The single sequence's chunks. The Llama's lock is held for one step at a time, never
        while a chunk is with the consumer, so a stream left unfinished blocks nothing: a new
        call from the same thread takes the sequence over (the stream, if resumed, evaluates
        its own tokens again) and one from another thread waits for it to end or be closed."""
        seq = self.seq
        token = request.cancel or threading.Event()
        with seq.step():
            self.check_open()
            prompt_tokens, prompt_text = self.prompts.tokens(request.prompt, request.suffix)
            owner = seq.claim(token)
        chunks = completion_chunks(self._single_chunks(request, owner, prompt_tokens, prompt_text, token),
                                   request.model or self.model_name, len(prompt_tokens),
                                   0 if request.echo else len(prompt_text), request.logprobs)
        try:
            while True:
                with seq.step():
                    item = next(chunks, None)
                if item is None:
                    return
                yield item
        finally:
            with seq.step():
                chunks.close()
                if seq.owns(owner) and seq.cache is not None and seq.n_tokens > 0:
                    with contextlib.suppress(Exception):
                        seq.cache[tuple(seq.tokens.tolist())] = seq.snapshot()
                seq.release(owner)

    def _single_chunks(self, request: CompletionRequest, owner: Owner, prompt_tokens: list[int],
                       prompt_text: str, cancel: threading.Event) -> Iterator[Chunk]:
        seq = self.seq
        vocab = self.vocab()
        budget = request.budget(len(prompt_tokens), seq.n_ctx)
        want_logprobs = request.logprobs is not None
        spec = self.speculator if budget > 0 and len(prompt_tokens) > 1 else None
        # Speculation evaluates the prompt's last token together with the first draft.
        held = prompt_tokens[:-1] if spec is not None else prompt_tokens
        if request.echo and want_logprobs:
            yield Chunk(prompt_text, echo_records(seq, vocab, prompt_tokens, int(request.logprobs or 0)))
        else:
            seq.prepare(held, cancel=cancel)
            if request.echo:
                yield Chunk(prompt_text)
        seq.keep(owner, held, cancel)
        want_rows = want_logprobs or request.stopping_criteria is not None
        if spec is not None:
            chain = self._chain(request.params, prompt_tokens, input_ids(spec))
            tokens = speculative_tokens(seq, owner, chain, vocab, spec, prompt_tokens, budget, cancel, want_rows)
        else:
            chain = self._chain(request.params, prompt_tokens)
            tokens = sequence_tokens(seq, owner, chain, vocab, prompt_tokens, budget, cancel, want_rows=want_rows)
        # As in llama-cpp-python, offsets count from the start of the prompt text.
        maker = ChunkMaker(vocab, request.stop, request.logprobs, len(prompt_text))
        yield from text_chunks(tokens, maker, prompt_tokens, budget, request.stopping_criteria)

    def _engine(self, request: CompletionRequest) -> tuple[EngineRequest | None, Iterator[dict[str, Any]]]:
        """Queues a completion with the engine; returns the queued request (None when there is
        nothing to generate) and its chunk dicts, produced as the engine delivers tokens."""
        runner = self.runner
        assert runner is not None
        check_engine_request(request)
        self.check_open()
        prompt_tokens, prompt_text = self.prompts.tokens(request.prompt, request.suffix)
        budget = request.budget(len(prompt_tokens), self.seq.n_ctx)
        queued: EngineRequest | None = None
        if budget > 0:
            with self.lock:
                # Low-level calls (eval, generate, ...) hold the lock and use sequence 0; the
                # engine may now overwrite it, so they start afresh afterwards.
                self.seq.n_tokens = 0
                queued = submit(runner, request, prompt_tokens, budget,
                                lambda input_ids: self._chain(request.params, prompt_tokens, input_ids))
        chunks = self._engine_chunks(request, queued, prompt_tokens, prompt_text, budget)
        return queued, completion_chunks(chunks, request.model or self.model_name, len(prompt_tokens),
                                         0 if request.echo else len(prompt_text), request.logprobs)

    def _engine_chunks(self, request: CompletionRequest, queued: EngineRequest | None, prompt_tokens: list[int],
                       prompt_text: str, budget: int) -> Iterator[Chunk]:
        try:
            if request.echo:
                yield Chunk(prompt_text)
            maker = ChunkMaker(self.vocab(), request.stop, request.logprobs, len(prompt_text))
            yield from text_chunks(engine_tokens(queued), maker, prompt_tokens, budget, request.stopping_criteria)
        finally:
            if queued is not None:
                queued.close()

    def complete_many(self, requests: list[CompletionRequest]) -> list[dict[str, Any]]:
        """One completion dict per request, in order; on the engine all are queued first, so
        they are batched together."""
        if self.runner is None:
            return [self.complete(r) for r in requests]
        started: list[tuple[EngineRequest | None, Iterator[dict[str, Any]]]] = []
        try:
            for r in requests:
                started.append(self._engine(r))
            return [collect_completion(chunks, r.logprobs is not None) for r, (_, chunks) in zip(requests, started)]
        finally:
            for queued, _ in started:
                if queued is not None:
                    queued.close()

    def stream_many(self, requests: list[CompletionRequest]) -> Iterator[dict[str, Any]]:
        """The chunks of several requests, each with its choice's index: one request after the
        other on the single sequence, in the order the tokens are made on the engine."""
        if self.runner is None:
            for i, r in enumerate(requests):
                for chunk in strip_private(self.chunks(r)):
                    chunk["choices"][0]["index"] = i
                    yield chunk
            return
        started = [self._engine(r) for r in requests]
        merged: queue.SimpleQueue[tuple[int, dict[str, Any] | BaseException | None]] = queue.SimpleQueue()
        stop = threading.Event()

        def pump(i: int, chunks: Iterator[dict[str, Any]]) -> None:
            try:
                for chunk in chunks:
                    merged.put((i, chunk))
                    if stop.is_set():
                        return
            except BaseException as exc:  # handed to the consumer
                merged.put((i, exc))
            else:
                merged.put((i, None))

        threads = [threading.Thread(target=pump, args=(i, chunks), daemon=True) for i, (_, chunks) in enumerate(started)]
        for t in threads:
            t.start()
        try:
            remaining = len(started)
            while remaining:
                i, item = merged.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    item.pop("_n", None)
                    item["choices"][0]["index"] = i
                    yield item
        finally:
            stop.set()
            for queued, _ in started:
                if queued is not None:
                    queued.close()
