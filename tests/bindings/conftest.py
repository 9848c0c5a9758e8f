"""Fixtures of the binding tests: the tokens of a test text and tiny-model contexts (the model
itself comes from tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

import llamabind as lb
from logits_check import TEXT
from testutil import N_THREADS


@pytest.fixture(scope="module")
def toks(tiny: lb.Model) -> list[int]:
    ids = tiny.vocab.tokenize(TEXT, add_special=True)
    assert len(ids) >= 10
    return ids


@pytest.fixture
def make_tiny_ctx(tiny: lb.Model):
    """Factory for tiny-model contexts (closed after the test): make_tiny_ctx(n_seq_max=2, ...)."""
    made: list[lb.Context] = []

    def make(**kwargs: Any) -> lb.Context:
        params: dict[str, Any] = {"n_ctx": 256, "n_threads": N_THREADS, "n_threads_batch": N_THREADS}
        params.update(kwargs)
        ctx = lb.Context(tiny, **params)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def tiny_ctx(make_tiny_ctx) -> lb.Context:
    """A fresh 256-token, one-sequence tiny-model context."""
    return make_tiny_ctx()
