"""CompletionRequest: the arguments of one completion, checked once at the public method and
carried as one value down to whichever generation path serves it (the single sequence or
the engine). The sampler keywords of llama-cpp-python become one SamplingParams here."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from ._processors import StoppingCriteriaList
from .llama_grammar import LlamaGrammar
from .sampling import SamplingParams

Prompt = Union[str, bytes, Sequence[int]]

# create_completion's keywords that choose the next token; they become SamplingParams fields.
SAMPLER_KEYWORDS = ("temperature", "top_p", "min_p", "typical_p", "frequency_penalty", "presence_penalty",
                    "repeat_penalty", "top_k", "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta",
                    "logits_processor", "grammar", "logit_bias")


def sampling_params(keywords: Mapping[str, Any], *, seed: int | None, sampling: SamplingParams | None,
                    default_seed: int, last_n_tokens_size: int) -> SamplingParams:
    """SamplingParams from llama-cpp-python style keywords (`temp` is `temperature`). An
    explicit `sampling` object replaces the individual sampler keywords (whose defaults cannot
    be told apart from explicit values); grammar, logits processors and logit bias still
    apply. Without a seed anywhere, `default_seed` is used."""
    kw = dict(keywords)
    if "temp" in kw:
        kw["temperature"] = kw.pop("temp")
    if sampling is not None:
        keep = ("grammar", "logits_processor", "logit_bias")
        params = sampling.replace(**{k: kw[k] for k in keep if kw.get(k) is not None})
    else:
        params = SamplingParams().replace(**{k: v for k, v in kw.items() if v is not None})
    if params.seed is None:
        params = params.replace(seed=seed if seed is not None else default_seed)
    if params.penalty_last_n == 64 and last_n_tokens_size != 64:
        params = params.replace(penalty_last_n=last_n_tokens_size)
    return params


@dataclass(frozen=True)
class CompletionRequest:
    """One prompt to complete and everything about how: built (and checked) once by
    `from_arguments`, then read by the prompt builder, both generation paths and the
    response shaping."""

    prompt: Prompt
    params: SamplingParams
    suffix: str | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None
    echo: bool = False
    stop: tuple[str, ...] = ()
    model: str | None = None
    stopping_criteria: StoppingCriteriaList | None = None
    cancel: threading.Event | None = None

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any], *, default_seed: int,
                       last_n_tokens_size: int) -> CompletionRequest:
        """A request from create_completion's keywords (llama-cpp-python's names; `stream` is
        the caller's business and ignored here). Raises ValueError/TypeError for arguments no
        path can serve."""
        logprobs = arguments.get("logprobs")
        if logprobs is not None and logprobs < 0:
            raise ValueError("logprobs must be >= 0")
        grammar = arguments.get("grammar")
        if grammar is not None and not isinstance(grammar, LlamaGrammar):
            raise TypeError(f"grammar must be a LlamaGrammar, got {type(grammar).__name__}")
        params = sampling_params({k: arguments[k] for k in SAMPLER_KEYWORDS if k in arguments},
                                 seed=arguments.get("seed"), sampling=arguments.get("sampling"),
                                 default_seed=default_seed, last_n_tokens_size=last_n_tokens_size)
        stop = arguments.get("stop")
        return cls(
            prompt=arguments["prompt"], params=params, suffix=arguments.get("suffix"),
            max_tokens=arguments.get("max_tokens", 16), logprobs=logprobs, echo=bool(arguments.get("echo", False)),
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()), model=arguments.get("model"),
            stopping_criteria=arguments.get("stopping_criteria"), cancel=arguments.get("cancel"),
        )

    def with_prompt(self, prompt: Prompt) -> CompletionRequest:
        """The same request for another prompt (one of a list of prompts)."""
        return dataclasses.replace(self, prompt=prompt)

    def budget(self, n_prompt: int, n_ctx: int) -> int:
        """How many tokens may be generated: max_tokens, or (None / <= 0 / too many) what the
        context leaves after the prompt. A prompt longer than the context raises."""
        if n_prompt > n_ctx:
            raise ValueError(f"Requested tokens ({n_prompt}) exceed context window of {n_ctx}")
        room = n_ctx - n_prompt
        if self.max_tokens is None or self.max_tokens <= 0 or self.max_tokens > room:
            return room
        return self.max_tokens


def is_prompt_list(prompt: Any) -> bool:
    """Whether create_completion got several prompts (strings or token lists), not one
    prompt given as token ids."""
    return isinstance(prompt, (list, tuple)) and len(prompt) > 0 and \
        all(isinstance(p, (str, bytes, list, tuple, np.ndarray)) for p in prompt)


def as_prompt(prompt: Any) -> Prompt:
    """One prompt as the request holds it: text as given, token ids as a list of ints."""
    if isinstance(prompt, (str, bytes)):
        return prompt
    return [int(t) for t in prompt]
