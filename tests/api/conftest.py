"""Fixtures of the public-API tests: gguf-py readings of the real models (the independent
reference), the real models paired with them, and a tiny random-weight model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import llamabind as lb
from gguf_ref import GGUFRef
from testutil import N_THREADS

TINY_PROMPT = "The quick brown fox jumps over the lazy dog"


class Real(NamedTuple):
    name: str
    model: lb.Model
    ref: GGUFRef


@pytest.fixture(scope="session")
def smollm2_ref(smollm2_path: Path) -> GGUFRef:
    return GGUFRef(smollm2_path)


@pytest.fixture(scope="session")
def gemma3_ref(gemma3_path: Path) -> GGUFRef:
    # Reading 262k token strings takes gguf-py a few seconds: once per session.
    return GGUFRef(gemma3_path)


@pytest.fixture(params=["smollm2", "gemma3"])
def real(request: pytest.FixtureRequest) -> Real:
    """Each real model with gguf-py's reading of the same file."""
    name = request.param
    return Real(name, request.getfixturevalue(name), request.getfixturevalue(f"{name}_ref"))


@pytest.fixture(scope="session")
def tiny_ref(tiny_path: Path) -> GGUFRef:
    return GGUFRef(tiny_path)


@pytest.fixture(scope="session")
def tiny_tokens(tiny: lb.Model) -> list[int]:
    return tiny.vocab.tokenize(TINY_PROMPT)


def _all_logits(model: lb.Model, tokens: list[int]) -> np.ndarray:
    with lb.Context(model, n_ctx=128, n_threads=N_THREADS, n_threads_batch=N_THREADS) as ctx:
        ctx.decode_tokens(tokens, 0, all_logits=True)
        return ctx.logits(copy=True)


@pytest.fixture(scope="session")
def logits_of(tiny_tokens: list[int]) -> Callable[[lb.Model], np.ndarray]:
    """logits_of(model): the logits of every position of TINY_PROMPT, decoded in a fresh context."""
    return lambda model: _all_logits(model, tiny_tokens)


@pytest.fixture(scope="session")
def tiny_logits(tiny: lb.Model, logits_of: Callable[[lb.Model], np.ndarray]) -> np.ndarray:
    """The tiny model's logits for TINY_PROMPT: the reference for split/saved/adapted copies."""
    return logits_of(tiny)
