"""Fixtures of the binding tests: a tiny random-weight llama model written once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import llamabind as lb
from testutil import N_THREADS
from tiny_model import write_tiny_llama


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight llama GGUF (2 layers, n_embd 64, GQA 4/2) with the 32000-token SPM vocab."""
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def tiny(tiny_path: Path) -> lb.Model:
    return lb.Model(tiny_path)


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
