"""A validated request body as the keyword arguments of the `Llama` calls that serve it: one
set per choice (`n` choices per prompt), built once per request. Fields the client left out
keep `Llama`'s own defaults (create_completion's, create_chat_completion's), so the server
answers as the in-process API does; logit bias token ids are checked, a GBNF grammar is
parsed once for all choices, and llama.cpp's samplers beyond OpenAI's become one
SamplingParams.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from ..llama import Llama
from ..llama_grammar import LlamaGrammar
from ..sampling import SamplingParams
from ._errors import bad_request
from ._schemas import ChatCompletionBody, CompletionBody, EmbeddingBody

_COMPLETION_DEFAULTS = {k: p.default for k, p in inspect.signature(Llama.create_completion).parameters.items()}
_CHAT_DEFAULTS = {k: p.default for k, p in inspect.signature(Llama.create_chat_completion).parameters.items()}
_SAMPLERS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "presence_penalty", "frequency_penalty",
             "repeat_penalty", "mirostat_mode", "mirostat_tau", "mirostat_eta")
# SamplingParams fields with no keyword of their own in create_completion: given at the top
# level of a body, they make the request's SamplingParams.
_EXTRA_SAMPLERS = {f.name: f.default for f in dataclasses.fields(SamplingParams)
                   if f.name not in _COMPLETION_DEFAULTS and f.name not in ("seed", "extra", "penalize_nl")
                   and isinstance(f.default, (int, float, tuple)) and not isinstance(f.default, bool)}

Prompt = Union[str, list[int]]


@dataclass(frozen=True)
class ChoiceArguments:
    """The keywords of one choice's Llama call; `first_of_prompt`: the choice whose prompt
    tokens the usage counts (a prompt is counted once however many choices it has)."""

    kwargs: dict[str, Any]
    first_of_prompt: bool = True


def _logit_bias(bias: Mapping[str, float], n_vocab: int) -> dict[int, float]:
    out = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise bad_request(f"logit_bias keys are token ids, got {key!r}", "logit_bias") from None
        if not 0 <= token < n_vocab:
            raise bad_request(f"logit_bias token {token} is outside the vocabulary (n_vocab={n_vocab})", "logit_bias")
        out[token] = float(value)
    return out


def _extra_samplers(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    found = {}
    for name, value in (extra or {}).items():
        if name not in _EXTRA_SAMPLERS or value is None:
            continue
        default = _EXTRA_SAMPLERS[name]
        if isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        elif isinstance(default, int) and not isinstance(default, bool):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise bad_request(f"{name} must be a {type(default).__name__}, got {value!r}", name)
        found[name] = value
    return found


def _sampling(body: CompletionBody | ChatCompletionBody, defaults: Mapping[str, Any], n_vocab: int) -> dict[str, Any]:
    """The sampler keywords of a body (only what it sets)."""
    kw: dict[str, Any] = {k: getattr(body, k) for k in (*_SAMPLERS, "stop")
                          if k in body.model_fields_set and getattr(body, k) is not None}
    if body.logit_bias:
        kw["logit_bias"] = _logit_bias(body.logit_bias, n_vocab)
    if body.grammar is not None:
        kw["grammar"] = LlamaGrammar.from_string(body.grammar, verbose=False)
    extras = _extra_samplers(body.model_extra)
    if extras:
        # A SamplingParams replaces the individual sampler keywords, so it carries them all,
        # with the endpoint's defaults for those the body leaves out.
        base = {k: kw.get(k, defaults[k]) for k in _SAMPLERS}
        kw["sampling"] = SamplingParams(**base, **extras)
    return kw


def _seed(body: CompletionBody | ChatCompletionBody, j: int) -> dict[str, Any]:
    # Choices of one request differ from one another, reproducibly when a seed is given.
    return {"seed": body.seed + j} if body.seed is not None else {}


def _prompts(prompt: str | list[int] | list[str] | list[list[int]]) -> list[Prompt]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("prompt is an empty list", "prompt")
    if all(isinstance(p, int) for p in prompt):
        return [[int(t) for t in prompt]]  # type: ignore[arg-type]
    out: list[Prompt] = []
    for p in prompt:
        if isinstance(p, list) and not p:
            raise bad_request("a prompt of token ids is empty", "prompt")
        out.append(p if isinstance(p, str) else [int(t) for t in p])  # type: ignore[union-attr]
    return out


def completion_choices(body: CompletionBody, alias: str, n_vocab: int) -> list[ChoiceArguments]:
    """One ChoiceArguments per prompt and choice: choice i*n + j is choice j of prompt i."""
    if body.best_of is not None and body.best_of != body.n:
        raise bad_request("best_of other than n is not supported", "best_of")
    common = _sampling(body, _COMPLETION_DEFAULTS, n_vocab)
    common.update(model=alias, max_tokens=body.max_tokens, echo=body.echo)
    if body.suffix is not None:
        common["suffix"] = body.suffix
    if body.logprobs is not None:
        common["logprobs"] = body.logprobs
    return [ChoiceArguments({**common, "prompt": prompt, **_seed(body, j)}, j == 0)
            for prompt in _prompts(body.prompt) for j in range(body.n)]


def chat_choices(body: ChatCompletionBody, alias: str, n_vocab: int) -> list[ChoiceArguments]:
    """One ChoiceArguments per choice."""
    common = _sampling(body, _CHAT_DEFAULTS, n_vocab)
    common.update(model=alias, messages=[m.model_dump(exclude_unset=True) for m in body.messages])
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_tokens is not None:
        common["max_tokens"] = max_tokens
    if body.tools is not None:
        common["tools"] = [t.model_dump(exclude_none=True) for t in body.tools]
    if body.functions is not None:
        common["functions"] = [f.model_dump(exclude_none=True) for f in body.functions]
    for key in ("tool_choice", "function_call", "logprobs", "top_logprobs"):
        if getattr(body, key) is not None:
            common[key] = getattr(body, key)
    if body.response_format is not None:
        common["response_format"] = body.response_format.model_dump(exclude_none=True)
    return [ChoiceArguments({**common, **_seed(body, j)}) for j in range(body.n)]


def embedding_texts(body: EmbeddingBody, n_embd: int) -> list[str]:
    """The texts of an embeddings request."""
    if body.dimensions is not None and body.dimensions != n_embd:
        raise bad_request(f"this model's embeddings have {n_embd} dimensions; it cannot give {body.dimensions}",
                          "dimensions")
    if isinstance(body.input, str):
        return [body.input]
    if not body.input:
        raise bad_request("input is an empty list", "input")
    if not all(isinstance(t, str) for t in body.input):
        raise bad_request("input must be text (a string or a list of strings); token ids are not accepted", "input")
    return [str(t) for t in body.input]
