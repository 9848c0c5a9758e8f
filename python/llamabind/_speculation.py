"""Speculative decoding on the single sequence: what a Llama drafts with (a draft GGUF, prompt
lookup, or a Python LlamaDraftModel), built once into a `_core.Speculator`, and the token
source that verifies drafts in the shared generation loop.

Every emitted token is the target sampler's own draw, so output is what plain decoding gives;
a step emits several tokens when the target draws what was drafted. The engine
(n_parallel > 1) does not speculate.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ._core import AbortedError, Context, Model, ModelDrafter, NgramDrafter, SamplerChain, Speculator, Vocab
from ._generation import TokenSource
from ._sequence import Owner, SingleSequence
from .llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

logger = logging.getLogger("llamabind")

# Draft lengths when n_draft is not given: a draft model (the adaptive mode verifies fewer
# when that pays better), and a Python draft model's proposals (all, up to this many).
N_DRAFT_MODEL = 8
N_DRAFT_CALLABLE = 16
# After a pause in drafting, a draft model evaluates at most this many of the tokens
# generated meanwhile (starting over from them) instead of all.
MAX_CATCH_UP = 64


class Speculation:
    """A Llama's speculative decoding: its Speculator and what it owns (the draft model and
    the draft context, closed with it)."""

    def __init__(self, speculator: Speculator, owned: tuple[Any, ...] = ()) -> None:
        self.speculator = speculator
        self._owned = owned

    def close(self) -> None:
        self.speculator.close()
        for obj in self._owned:
            obj.close()


def _is_prompt_lookup(draft_model: Any) -> bool:
    """llamabind's (or llama-cpp-python's) LlamaPromptLookupDecoding, not a subclass that
    drafts differently."""
    if isinstance(draft_model, LlamaPromptLookupDecoding):
        return type(draft_model).__call__ is LlamaPromptLookupDecoding.__call__
    return type(draft_model).__name__ == "LlamaPromptLookupDecoding" and \
        hasattr(draft_model, "max_ngram_size") and hasattr(draft_model, "num_pred_tokens")


def setup(draft_model: Any, draft_model_path: str | os.PathLike[str] | None, *, n_draft: int | None,
          adaptive: bool, target: Context | None, model: Model, model_kwargs: dict[str, Any],
          context_params: dict[str, Any], n_parallel: int) -> Speculation | None:
    """The Speculation a Llama was asked for (None without a draft). draft_model: a
    LlamaPromptLookupDecoding (native prompt lookup with its max_ngram_size and
    num_pred_tokens), any other LlamaDraftModel or callable (its drafts are verified), or a
    GGUF path; draft_model_path: a GGUF path. A draft GGUF is loaded with `model_kwargs` and
    gets a context like the target's (`context_params`). Raises ValueError for a draft
    model whose vocabulary is not the target's."""
    if isinstance(draft_model, (str, os.PathLike)):
        draft_model, draft_model_path = None, draft_model if draft_model_path is None else draft_model_path
    if draft_model is not None and draft_model_path is not None:
        raise ValueError("give draft_model or draft_model_path, not both")
    if draft_model is None and draft_model_path is None:
        return None
    if n_draft is not None and n_draft < 1:
        raise ValueError(f"n_draft must be >= 1, got {n_draft}")
    if target is None:
        if n_parallel > 1:
            logger.warning("Llama(n_parallel=%d): the engine does not speculate; the draft model is not used",
                           n_parallel)
        return None
    if draft_model is not None:
        if _is_prompt_lookup(draft_model):
            drafter: Any = NgramDrafter(max_ngram=max(1, int(draft_model.max_ngram_size)), min_ngram=1)
            n = n_draft or max(1, int(draft_model.num_pred_tokens))
        elif isinstance(draft_model, LlamaDraftModel) or callable(draft_model):
            drafter, n = draft_model, n_draft or N_DRAFT_CALLABLE
        else:
            raise TypeError(f"draft_model must be a LlamaDraftModel, a callable or a GGUF path, "
                            f"not {type(draft_model).__name__}")
        return Speculation(Speculator(target, drafter, n_draft=n, adaptive=adaptive))
    draft = Model(os.fspath(draft_model_path), **model_kwargs)  # type: ignore[arg-type]
    try:
        draft_ctx = Context(draft, **dict(context_params, n_ctx=target.n_ctx))
        try:
            drafter = ModelDrafter(draft_ctx, model, max_catch_up=MAX_CATCH_UP if adaptive else 0)
            speculator = Speculator(target, drafter, n_draft=n_draft or N_DRAFT_MODEL, adaptive=adaptive)
        except BaseException:
            draft_ctx.close()
            raise
    except BaseException:
        draft.close()
        raise
    return Speculation(speculator, (draft_ctx, draft))


def speculative_tokens(seq: SingleSequence, owner: Owner, chain: SamplerChain, vocab: Vocab, spec: Speculator,
                       prompt_tokens: list[int], budget: int, cancel: threading.Event, want_rows: bool) -> TokenSource:
    """The single sequence's token source with speculation: each step verifies a draft in one
    target decode and yields every token it emitted (with its logits row, a copy, when
    `want_rows`). The sequence's record of its tokens follows each step. Whenever another
    stream of this thread took the sequence over meanwhile, this generation's tokens are
    evaluated again first (the draft model's context follows by itself).

    The prompt's last token is evaluated by the first step, with the first draft (as
    llama.cpp's speculative examples do: the same verification batches, so the same
    rounding); the sequence holds the prompt but that token on entry, or the whole prompt
    (then its last cell is removed again)."""
    ctx = seq.ctx
    assert ctx is not None and len(prompt_tokens) > 1
    history = list(prompt_tokens[:-1])  # evaluated for this generation
    pending: list[int] = [prompt_tokens[-1]]  # not yet evaluated
    if seq.n_tokens > len(history):
        if not ctx.seq_rm(0, len(history), -1):
            raise RuntimeError("[Llama] could not remove the prompt's last cell for speculative decoding")
        seq.n_tokens = len(history)
    spec.begin(history, pending[0])
    produced = 0
    while produced < budget:
        if cancel.is_set():
            raise AbortedError("[Llama] generation was cancelled")
        if not seq.owns(owner):
            seq.keep(owner, history, cancel)
            spec.begin(history, pending[0] if pending else None)
        step = spec.step(chain, budget - produced)
        grow = step.n_evaluated - len(history)
        if grow > 0:
            added = (pending + step.tokens)[:grow]
            seq.record(added, ctx.logits()[:grow] if seq.logits_all else None)
            history += added
        rows: npt.NDArray[np.single] | None = ctx.logits()[step.rows] if want_rows and step.tokens else None
        pending = step.tokens[-1:] if not step.eog else []
        for i, token in enumerate(step.tokens):
            produced += 1
            yield token, rows[i] if rows is not None else None
        if step.eog:
            return "stop"
    return "length"


def input_ids(spec: Speculator) -> Callable[[], npt.NDArray[np.intc]]:
    """What logits processors see as input_ids under speculation: the tokens the draw being
    made follows (the Speculator's sequence, which grows within a step)."""
    return lambda: spec.tokens.astype(np.intc, copy=False)
