"""The generation loop both completion paths share: generated tokens in, text chunks out.

A token source yields (token, logits row or None) and returns its finish reason ("stop" at
an end-of-generation token, "length" when the budget is spent). `text_chunks` turns any such
source into `Chunk`s: UTF-8 pieces reassembled across tokens, stop strings that never leak,
stopping criteria, logprob records with text offsets counted from the start of the prompt
text. `sequence_tokens` is the source of the single sequence (sample, then evaluate the
token); the engine's source is in `_engine_path`.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Optional, Tuple, cast

import numpy as np
import numpy.typing as npt

from ._core import AbortedError, SamplerChain, Vocab
from ._processors import StoppingCriteriaList
from ._sequence import Owner, SingleSequence
from ._text import StopMatcher, Utf8Stream

Row = npt.NDArray[np.single]
TokenSource = Generator[Tuple[int, Optional[Row]], None, str]


def logits_to_logprobs(logits: npt.NDArray[np.single] | list[float], axis: int = -1) -> npt.NDArray[np.single]:
    """log_softmax of logits, computed stably."""
    x = np.asarray(logits, dtype=np.single)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        return cast(npt.NDArray[np.single], shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True)))


def top_logprobs(row: Row, k: int) -> tuple[Row, list[tuple[int, float]]]:
    """The log-probabilities of a logits row and its k most likely tokens, best first."""
    logprobs = logits_to_logprobs(row)
    if k <= 0:
        return logprobs, []
    k = min(k, len(logprobs))
    top = np.argpartition(-logprobs, k - 1)[:k]
    top = top[np.argsort(-logprobs[top], kind="stable")]
    return logprobs, [(int(t), float(logprobs[t])) for t in top]


def piece_text(vocab: Vocab, token: int) -> str:
    return vocab.token_to_piece(token).decode("utf-8", errors="ignore")


@dataclass
class TokenRecord:
    """One generated (or echoed) token as the logprobs output describes it."""

    token: int
    text: str
    offset: int
    logprob: float | None = None
    top: dict[str, float] | None = None


@dataclass
class Chunk:
    text: str
    records: list[TokenRecord] = field(default_factory=list)
    finish_reason: str | None = None
    generated: int = 0  # generated (not echoed) tokens this chunk accounts for


def _top_texts(vocab: Vocab, top: list[tuple[int, float]]) -> dict[str, float]:
    return {piece_text(vocab, t): lp for t, lp in top}


class ChunkMaker:
    """Turns generated tokens into text chunks: UTF-8 pieces reassembled across tokens, stop
    strings that never leak, logprob records with text offsets counted from `offset`."""

    def __init__(self, vocab: Vocab, stop: tuple[str, ...], logprobs: int | None, offset: int) -> None:
        self._vocab = vocab
        self._want_logprobs = logprobs is not None
        self._k = int(logprobs or 0)
        self._offset = offset
        self._utf8 = Utf8Stream()
        self._stops = StopMatcher(list(stop))
        self._pending: list[TokenRecord] = []

    def push(self, token: int, row: Row | None) -> tuple[str, bool]:
        """Adds a token (with its logits row when logprobs are wanted); returns the text now
        safe to release and whether a stop string ended it."""
        piece = self._vocab.token_to_piece(token)
        record = TokenRecord(token, piece.decode("utf-8", errors="ignore"), self._offset)
        if self._want_logprobs and row is not None:
            lp, top = top_logprobs(row, self._k)
            record.logprob = float(lp[token])
            record.top = _top_texts(self._vocab, top)
        self._offset += len(record.text)
        self._pending.append(record)
        return self._stops.push(self._utf8.push(piece))

    def chunk(self, text: str, finish: str | None = None) -> Chunk:
        """A chunk with `text` that accounts for the tokens pushed since the last one."""
        pending, self._pending = self._pending, []
        return Chunk(text, pending, finish, len(pending))

    def tail(self, finish: str) -> Chunk:
        """The last chunk: text held back for UTF-8 or a possible stop string."""
        text, stopped = self._stops.push(self._utf8.flush())
        if stopped:
            finish = "stop"
        else:
            text += self._stops.flush()
        return self.chunk(text, finish)


def text_chunks(tokens: TokenSource, maker: ChunkMaker, prompt_tokens: list[int], budget: int,
                stopping_criteria: StoppingCriteriaList | None) -> Iterator[Chunk]:
    """The chunks of a token source: a chunk whenever text can be released, then the last one
    with the finish reason ("stop" for an end-of-generation token, a stop string or a true
    stopping criterion, else the source's)."""
    ids: npt.NDArray[np.intc] | None = None  # prompt + generated tokens, for stopping criteria
    n_ids = len(prompt_tokens)
    if stopping_criteria is not None:
        ids = np.empty(n_ids + budget, dtype=np.intc)
        ids[:n_ids] = prompt_tokens
    while True:
        try:
            token, row = next(tokens)
        except StopIteration as end:
            finish = str(end.value)
            break
        text, stopped = maker.push(token, row)
        if stopped:
            yield maker.chunk(text, "stop")
            return
        stop_now = False
        if stopping_criteria is not None and ids is not None and row is not None and n_ids < len(ids):
            ids[n_ids] = token
            n_ids += 1
            stop_now = bool(stopping_criteria(ids[:n_ids], row))
        if text or stop_now:
            yield maker.chunk(text)
        if stop_now:
            finish = "stop"
            break
    yield maker.tail(finish)


def sequence_tokens(seq: SingleSequence, owner: Owner, chain: SamplerChain, vocab: Vocab, prompt_tokens: list[int],
                    budget: int, cancel: threading.Event, want_rows: bool) -> TokenSource:
    """The single sequence's token source: sample from the last logits, hand the token over,
    then evaluate it (unless the budget is spent or the consumer stopped asking). Whenever the
    sequence was taken over meanwhile (another stream of this thread), the tokens of this
    generation are evaluated again first, so it goes on exactly where it was."""
    ctx = seq.ctx
    assert ctx is not None
    history = list(prompt_tokens)  # what the context holds for this generation
    produced = 0
    while produced < budget:
        if cancel.is_set():
            raise AbortedError("[Llama] generation was cancelled")
        seq.keep(owner, history, cancel)
        token = chain.sample(ctx, -1)
        if vocab.is_eog(token):
            return "stop"
        produced += 1
        yield token, ctx.logits_ith(-1) if want_rows else None
        if produced < budget:
            seq.keep(owner, history, cancel)
            seq.eval([token], cancel=cancel)
            history.append(token)
    return "length"


def echo_records(seq: SingleSequence, vocab: Vocab, tokens: list[int], k: int) -> list[TokenRecord]:
    """Records of the prompt tokens with the log-probability of each given the ones before it
    (the first has none), from a fresh evaluation of the prompt with logits for every position."""
    records = []
    offset = 0
    for t in tokens:
        text = piece_text(vocab, t)
        records.append(TokenRecord(t, text, offset))
        offset += len(text)
    for start, rows in seq.evaluate_all(tokens):
        for j in range(len(rows)):
            nxt = start + j + 1
            if nxt < len(tokens):
                logprobs, top = top_logprobs(rows[j], k)
                records[nxt].logprob = float(logprobs[tokens[nxt]])
                records[nxt].top = _top_texts(vocab, top)
    return records
