"""Completions served by the engine (Llama(n_parallel=N)): a request is queued with the
EngineRunner at once and its tokens become a token source for the shared generation loop."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ._core import FinishReason, SamplerChain
from ._engine import EngineRequest, EngineRunner
from ._generation import TokenSource
from ._request import CompletionRequest


def check_engine_request(request: CompletionRequest) -> None:
    """What the engine cannot serve, refused before anything is queued."""
    if request.echo and request.logprobs is not None:
        raise ValueError("echo=True with logprobs needs the logits of every prompt token, which "
                         "Llama(n_parallel>1) does not compute; use a Llama with n_parallel=1 for it")


def submit(runner: EngineRunner, request: CompletionRequest, prompt_tokens: list[int], budget: int,
           make_chain: Callable[[Callable[[], npt.NDArray[np.intc]]], SamplerChain]) -> EngineRequest:
    """Queues the prompt; `make_chain(input_ids)` builds its sampler chain, whose logits
    processors read the request's tokens so far through `input_ids`."""
    holder: list[EngineRequest] = []

    def input_ids() -> npt.NDArray[np.intc]:
        return np.asarray(holder[0].tokens if holder else prompt_tokens, dtype=np.intc)

    queued = runner.submit(prompt_tokens, make_chain(input_ids), max_tokens=budget,
                           return_logits=request.logprobs is not None or request.stopping_criteria is not None,
                           cancel=request.cancel)
    holder.append(queued)
    return queued


def engine_tokens(queued: EngineRequest | None) -> TokenSource:
    """The token source of a queued request (None: nothing to generate); whoever reads it
    closes the request when done, which frees its slot at once."""
    for ev in queued.events() if queued is not None else ():
        if ev.finish == FinishReason.STOP:
            return "stop"
        yield int(ev.token), ev.logits
    return "length"
