"""Helpers of the binding tests that compare logits: the text they decode, the logits a context
ends with, and those of the same tokens decoded afresh."""

from __future__ import annotations

import numpy as np

import llamabind as lb

TEXT = "The quick brown fox jumps over the lazy dog"


def last_logits(ctx: lb.Context) -> np.ndarray:
    return ctx.logits_ith(-1, copy=True)


def reference_logits(make_ctx, tokens: list[int], **kwargs) -> np.ndarray:
    """Logits after decoding `tokens` from position 0 in a fresh context."""
    ctx = make_ctx(**kwargs)
    ctx.decode_tokens(tokens, pos0=0)
    return last_logits(ctx)


def assert_logits_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Logits of the same text computed with a different KV cell layout or batch split.

    The CPU attention accumulates the f16 V cache in f16, so the cell order changes the
    logits by up to ~1e-2 (they span about +-16 here); a wrong cache changes them by whole
    units.
    """
    np.testing.assert_allclose(actual, expected, rtol=0, atol=0.05)
