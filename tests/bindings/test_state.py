"""State: saving and restoring a whole context or one sequence, in memory and in files, and
refusing truncated state or state of another model.

The tests run a tiny random-weight llama model (tests/tiny_model.py), where a decode takes
milliseconds; references are computed independently in the test (a fresh context), never
copied from an earlier run. One test also loads the real SmolLM2, whose state a tiny-model
context must refuse (and the other way round).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from logits_check import TEXT, assert_logits_close, last_logits, reference_logits
from testutil import N_THREADS


def test_state_round_trip_gives_identical_logits(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks[:-1], pos0=0)
    state = ctx.state_get()
    assert isinstance(state, bytes) and len(state) > 0
    ctx.decode_tokens(toks[-1:], pos0=len(toks) - 1)
    expected = last_logits(ctx)

    ctx.memory_clear()
    ctx.decode_tokens(toks[3:6], pos0=0)  # something else in the cache
    ctx.state_set(state)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, len(toks) - 2)
    ctx.decode_tokens(toks[-1:], pos0=len(toks) - 1)
    np.testing.assert_array_equal(last_logits(ctx), expected)

    other = make_tiny_ctx()
    other.state_set(bytearray(state))
    other.decode_tokens(toks[-1:], pos0=len(toks) - 1)
    np.testing.assert_array_equal(last_logits(other), expected)


def test_state_file_round_trip(make_tiny_ctx, toks: list[int], tmp_path: Path) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks[:-1], pos0=0)
    path = tmp_path / "session.bin"
    ctx.state_save_file(path, toks[:-1])
    assert path.stat().st_size > 0
    ctx.decode_tokens(toks[-1:], pos0=len(toks) - 1)
    expected = last_logits(ctx)

    other = make_tiny_ctx()
    assert other.state_load_file(path) == toks[:-1]
    assert other.seq_pos_max(0) == len(toks) - 2
    other.decode_tokens(toks[-1:], pos0=len(toks) - 1)
    np.testing.assert_array_equal(last_logits(other), expected)

    assert other.state_load_file(str(path), token_capacity=len(toks) - 1) == toks[:-1]
    with pytest.raises(lb.StateError):
        other.state_load_file(path, token_capacity=2)
    # An empty token list round-trips too.
    ctx.state_save_file(tmp_path / "empty.bin")
    assert make_tiny_ctx().state_load_file(tmp_path / "empty.bin") == []


def test_state_load_missing_file(tiny_ctx: lb.Context, tmp_path: Path) -> None:
    path = tmp_path / "missing.bin"
    with pytest.raises(lb.LlamaFileNotFoundError) as err:
        tiny_ctx.state_load_file(path)
    assert isinstance(err.value, FileNotFoundError)
    assert err.value.filename == str(path)
    # The message names the operation, as every llamabind error does.
    assert "state_load_file" in str(err.value), str(err.value)


def test_state_seq_into_another_sequence(make_tiny_ctx, toks: list[int], tmp_path: Path) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    ctx.decode_tokens(toks[:-1], pos0=0, seq_id=0)
    data = ctx.state_seq_get(0)
    assert isinstance(data, bytes) and len(data) > 0
    ctx.state_seq_set(data, 1)
    assert (ctx.seq_pos_min(1), ctx.seq_pos_max(1)) == (0, len(toks) - 2)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, len(toks) - 2)
    ctx.decode_tokens(toks[-1:], pos0=len(toks) - 1, seq_id=1)
    in_copy = last_logits(ctx)
    ctx.decode_tokens(toks[-1:], pos0=len(toks) - 1, seq_id=0)
    np.testing.assert_array_equal(in_copy, last_logits(ctx))
    assert_logits_close(in_copy, reference_logits(make_tiny_ctx, toks))

    path = tmp_path / "seq.bin"
    ctx.state_seq_save_file(path, 0, toks)
    other = make_tiny_ctx(n_seq_max=2)
    assert other.state_seq_load_file(path, 1) == toks
    assert (other.seq_pos_max(0), other.seq_pos_max(1)) == (-1, len(toks) - 1)

    with pytest.raises(lb.StateError):
        ctx.state_seq_set(data[: len(data) // 2], 1)
    assert ctx.seq_pos_max(1) == -1, "a failed restore leaves the sequence empty"
    assert ctx.seq_pos_max(0) == len(toks) - 1, "other sequences are untouched"
    with pytest.raises(lb.OutOfRangeError):
        ctx.state_seq_set(data, 2)


@pytest.mark.parametrize("cut", ["1", "10", "half", "all-but-one"])
def test_truncated_state_raises_state_error(make_tiny_ctx, toks: list[int], cut: str) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks, pos0=0)
    expected = last_logits(ctx)
    state = ctx.state_get()
    n = {"1": 1, "10": 10, "half": len(state) // 2, "all-but-one": len(state) - 1}[cut]
    with pytest.raises(lb.StateError):
        ctx.state_set(state[:n])
    assert ctx.seq_pos_max(0) == -1, "a failed restore leaves an empty context"
    ctx.decode_tokens(toks, pos0=0)
    np.testing.assert_array_equal(last_logits(ctx), expected)


def test_state_set_rejects_empty_and_text(tiny_ctx: lb.Context) -> None:
    with pytest.raises(lb.StateError):
        tiny_ctx.state_set(b"")
    with pytest.raises(TypeError):
        tiny_ctx.state_set("not bytes")


def test_state_from_another_model_raises(
    tiny: lb.Model, smollm2: lb.Model, make_tiny_ctx, toks: list[int], tmp_path: Path
) -> None:
    prompt = smollm2.vocab.tokenize(TEXT)
    with lb.Context(smollm2, n_ctx=512, n_threads=N_THREADS, n_threads_batch=N_THREADS) as sctx:
        sctx.decode_tokens(prompt, pos0=0)
        s_expected = last_logits(sctx)
        s_state = sctx.state_get()

        tctx = make_tiny_ctx()
        tctx.decode_tokens(toks, pos0=0)
        t_expected = last_logits(tctx)
        t_state = tctx.state_get()
        t_file = tmp_path / "tiny.session"
        tctx.state_save_file(t_file, toks)

        with pytest.raises(lb.StateError, match="layer"):
            sctx.state_set(t_state)
        assert sctx.seq_pos_max(0) == -1
        with pytest.raises(lb.StateError):
            sctx.state_load_file(t_file)
        sctx.decode_tokens(prompt, pos0=0)
        np.testing.assert_array_equal(last_logits(sctx), s_expected)

        with pytest.raises(lb.StateError):
            tctx.state_set(s_state)
        assert tctx.seq_pos_max(0) == -1
        tctx.decode_tokens(toks, pos0=0)
        np.testing.assert_array_equal(last_logits(tctx), t_expected)
