"""KV memory: sequence positions, removing, copying, keeping, shifting and dividing sequences,
clearing, and sequence ids out of range.

The tests run a tiny random-weight llama model (tests/tiny_model.py), where a decode takes
milliseconds; references are computed independently in the test (a fresh context), never
copied from an earlier run. Operations that may abort inside llama.cpp run in a fresh
interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from logits_check import assert_logits_close, last_logits, reference_logits


def run_isolated(code: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter: for operations that may abort the process."""
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def died(result: subprocess.CompletedProcess[str]) -> str:
    return f"the process died (rc={result.returncode}):\n{result.stderr[-2000:]}"


def test_seq_positions_follow_decodes(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (-1, -1)
    ctx.decode_tokens(toks[:5], pos0=0)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, 4)
    ctx.decode_tokens(toks[5:], pos0=5)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, len(toks) - 1)
    assert (ctx.seq_pos_min(1), ctx.seq_pos_max(1)) == (-1, -1)
    ctx.decode_tokens(toks[:3], pos0=0, seq_id=1)
    assert (ctx.seq_pos_min(1), ctx.seq_pos_max(1)) == (0, 2)


def test_seq_rm_tail_then_redecode(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks, pos0=0)
    full = last_logits(ctx)
    assert ctx.seq_rm(0, 4, -1) is True
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, 3)
    ctx.decode_tokens(toks[4:], pos0=4)
    assert_logits_close(last_logits(ctx), full)
    assert ctx.seq_rm(0, 0, 2) is True
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (2, len(toks) - 1)
    assert ctx.seq_rm(0) is True
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (-1, -1)


def test_seq_rm_all_sequences(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    ctx.decode_tokens(toks, pos0=0, seq_id=0)
    ctx.decode_tokens(toks[:4], pos0=0, seq_id=1)
    assert ctx.seq_rm(-1, 3, -1) is True
    assert ctx.seq_pos_max(0) == 2 and ctx.seq_pos_max(1) == 2
    assert ctx.seq_rm(-1) is True
    assert ctx.seq_pos_max(0) == -1 and ctx.seq_pos_max(1) == -1


@pytest.mark.parametrize("kv_unified", [False, True], ids=["per-seq-kv", "unified-kv"])
def test_seq_cp_then_decode_from_copy(make_tiny_ctx, toks: list[int], kv_unified: bool) -> None:
    ctx = make_tiny_ctx(n_seq_max=2, kv_unified=kv_unified)
    ctx.decode_tokens(toks[:-1], pos0=0, seq_id=0)
    ctx.seq_cp(0, 1)
    assert (ctx.seq_pos_min(1), ctx.seq_pos_max(1)) == (0, len(toks) - 2)
    ctx.decode_tokens(toks[-1:], pos0=len(toks) - 1, seq_id=1)
    from_copy = last_logits(ctx)
    ctx.decode_tokens(toks[-1:], pos0=len(toks) - 1, seq_id=0)
    from_original = last_logits(ctx)
    np.testing.assert_allclose(from_copy, from_original, rtol=0, atol=1e-5)
    assert_logits_close(from_copy, reference_logits(make_tiny_ctx, toks))


def test_seq_cp_partial_range_with_unified_kv(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_seq_max=2, kv_unified=True)
    ctx.decode_tokens(toks, pos0=0, seq_id=0)
    ctx.seq_cp(0, 1, 0, 3)
    assert (ctx.seq_pos_min(1), ctx.seq_pos_max(1)) == (0, 2)
    ctx.decode_tokens(toks[3:5], pos0=3, seq_id=1)
    assert_logits_close(last_logits(ctx), reference_logits(make_tiny_ctx, toks[:5]))


def test_seq_cp_partial_range_with_per_sequence_kv_does_not_abort(tiny_path: Path) -> None:
    # With n_seq_max > 1 and kv_unified=False each sequence has its own KV stream, and
    # llama.cpp's llama_kv_cache::seq_cp GGML_ASSERTs (aborting the process) on a partial
    # copy between streams. The binding must turn that into an exception.
    result = run_isolated(
        """
        import sys
        import llamabind as lb
        model = lb.Model(sys.argv[1])
        ctx = lb.Context(model, n_ctx=256, n_seq_max=2, kv_unified=False, n_threads=1, n_threads_batch=1)
        ctx.decode_tokens(model.vocab.tokenize("The quick brown fox jumps"), pos0=0)
        try:
            ctx.seq_cp(0, 1, 0, 3)
        except lb.LlamaError as e:
            print("raised", type(e).__name__)
        else:
            print("copied", ctx.seq_pos_min(1), ctx.seq_pos_max(1))
        ctx.decode_tokens([450], pos0=ctx.seq_pos_max(0) + 1)
        print("usable")
        """,
        tiny_path,
    )
    assert result.returncode == 0, died(result)
    lines = result.stdout.split()
    assert "usable" in lines
    assert result.stdout.startswith(("raised InvalidArgumentError", "copied 0 2")), result.stdout


@pytest.mark.parametrize("kv_unified", [False, True], ids=["per-seq-kv", "unified-kv"])
def test_seq_keep_removes_every_other_sequence(make_tiny_ctx, toks: list[int], kv_unified: bool) -> None:
    ctx = make_tiny_ctx(n_seq_max=2, kv_unified=kv_unified)
    ctx.decode_tokens(toks, pos0=0, seq_id=0)
    ctx.decode_tokens(toks[:4], pos0=0, seq_id=1)
    ctx.seq_keep(1)
    assert (ctx.seq_pos_min(1), ctx.seq_pos_max(1)) == (0, 3)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (-1, -1), "seq_keep(1) must remove sequence 0"
    ctx.decode_tokens(toks[4:], pos0=4, seq_id=1)
    assert_logits_close(last_logits(ctx), reference_logits(make_tiny_ctx, toks))


def test_seq_add_shifts_positions(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    assert ctx.can_shift
    ctx.decode_tokens(toks[:4], pos0=0)
    ctx.seq_add(0, 0, -1, 10)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (10, 13)
    with pytest.raises(lb.InvalidBatchError):
        ctx.decode_tokens(toks[4:5], pos0=4)  # the sequence now continues at 14
    ctx.decode_tokens(toks[4:5], pos0=14)
    # RoPE depends on relative positions only, so the shifted cache must give the logits of
    # the unshifted text (up to the f16 K cache being re-rotated).
    assert_logits_close(last_logits(ctx), reference_logits(make_tiny_ctx, toks[:5]))


def test_seq_add_drops_cells_shifted_below_zero(make_tiny_ctx, toks: list[int]) -> None:
    n = len(toks)
    shifted = make_tiny_ctx()
    shifted.decode_tokens(toks, pos0=0)
    shifted.seq_add(0, 0, -1, -3)  # positions 0..2 fall below zero and are dropped
    assert (shifted.seq_pos_min(0), shifted.seq_pos_max(0)) == (0, n - 4)
    shifted.decode_tokens(toks[-1:], pos0=n - 3)

    # The same, spelt as an explicit removal followed by a shift.
    explicit = make_tiny_ctx()
    explicit.decode_tokens(toks, pos0=0)
    assert explicit.seq_rm(0, 0, 3)
    explicit.seq_add(0, 3, -1, -3)
    assert (explicit.seq_pos_min(0), explicit.seq_pos_max(0)) == (0, n - 4)
    explicit.decode_tokens(toks[-1:], pos0=n - 3)
    np.testing.assert_allclose(last_logits(shifted), last_logits(explicit), rtol=0, atol=1e-5)

    # Without the dropped tokens the next logits differ from those with the whole text.
    full = make_tiny_ctx()
    full.decode_tokens(toks + toks[-1:], pos0=0)
    assert np.abs(last_logits(shifted) - last_logits(full)).max() > 0.5


def test_seq_div(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks[:8], pos0=0)
    ctx.seq_div(0, 0, -1, 2)
    assert (ctx.seq_pos_min(0), ctx.seq_pos_max(0)) == (0, 3)
    with pytest.raises(lb.InvalidArgumentError):
        ctx.seq_div(0, 0, -1, 0)


def test_memory_clear(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    ctx.decode_tokens(toks, pos0=0)
    first = last_logits(ctx)
    ctx.decode_tokens(toks[:3], pos0=0, seq_id=1)
    ctx.memory_clear()
    for s in (0, 1):
        assert (ctx.seq_pos_min(s), ctx.seq_pos_max(s)) == (-1, -1)
    ctx.decode_tokens(toks, pos0=0)
    np.testing.assert_array_equal(last_logits(ctx), first)


@pytest.mark.parametrize(
    "op",
    [
        lambda c, s: c.seq_pos_min(s),
        lambda c, s: c.seq_pos_max(s),
        lambda c, s: c.seq_rm(s),
        lambda c, s: c.seq_cp(0, s),
        lambda c, s: c.seq_cp(s, 0),
        lambda c, s: c.seq_keep(s),
        lambda c, s: c.seq_add(s, 0, -1, 1),
        lambda c, s: c.seq_div(s, 0, -1, 2),
        lambda c, s: c.state_seq_get(s),
    ],
    ids=["pos_min", "pos_max", "rm", "cp_dst", "cp_src", "keep", "add", "div", "state_seq_get"],
)
def test_memory_ops_reject_sequence_ids_beyond_n_seq_max(make_tiny_ctx, toks: list[int], op) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    ctx.decode_tokens(toks, pos0=0)
    with pytest.raises(lb.OutOfRangeError, match="n_seq_max=2"):
        op(ctx, 2)
    with pytest.raises(lb.OutOfRangeError):
        op(ctx, 1000)
    assert ctx.seq_pos_max(0) == len(toks) - 1


def test_seq_rm_with_any_negative_seq_id_does_not_abort(tiny_path: Path) -> None:
    # Context.seq_rm documents "seq_id < 0: all sequences", but llama.cpp's
    # llama_kv_cache::seq_rm GGML_ASSERTs seq_id == -1 for negative ids.
    result = run_isolated(
        """
        import sys
        import llamabind as lb
        model = lb.Model(sys.argv[1])
        ctx = lb.Context(model, n_ctx=256, n_seq_max=2, n_threads=1, n_threads_batch=1)
        ctx.decode_tokens(model.vocab.tokenize("The quick brown fox jumps"), pos0=0)
        try:
            removed = ctx.seq_rm(-2)
        except lb.LlamaError as e:
            print("raised", type(e).__name__, ctx.seq_pos_max(0))
        else:
            print("removed", removed, ctx.seq_pos_max(0))
        """,
        tiny_path,
    )
    assert result.returncode == 0, died(result)
    assert result.stdout.strip() in ("removed True -1", "raised OutOfRangeError 5"), result.stdout
