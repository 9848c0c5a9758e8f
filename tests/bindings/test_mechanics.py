"""Mechanics of the binding: Batch, decode, KV memory, state and samplers.

Most tests run a tiny random-weight llama model (tests/tiny_model.py), where a decode takes
milliseconds; references are computed independently in the test (a fresh context, numpy's
argmax), never copied from an earlier run. A few tests use the real SmolLM2, where the
behaviour must hold for a real model's output (grammar-constrained answers, cross-model
state, greedy decoding).
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
from testutil import N_THREADS

TEXT = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def toks(tiny: lb.Model) -> list[int]:
    ids = tiny.vocab.tokenize(TEXT, add_special=True)
    assert len(ids) >= 10
    return ids


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


def test_batch_starts_empty_with_views_of_its_capacity() -> None:
    batch = lb.Batch(8)
    assert batch.capacity == 8
    assert batch.n_tokens == 0 and len(batch) == 0
    assert batch.n_outputs == 0
    assert batch.n_seq_max == 1
    for name, dtype in (("token", np.int32), ("pos", np.int32), ("logits", np.int8), ("n_seq_id", np.int32)):
        view = getattr(batch, name)
        assert view.shape == (8,), name
        assert view.dtype == dtype, name
        assert view.flags.writeable, name


def test_batch_add_fills_entries() -> None:
    batch = lb.Batch(4, n_seq_max=2)
    batch.add(11, 0)
    batch.add(12, 1, seq_ids=[0, 1], logits=True)
    batch.add(13, 2, seq_ids=1, logits=False)
    assert batch.n_tokens == 3 and len(batch) == 3
    assert batch.n_outputs == 1
    assert batch.token[:3].tolist() == [11, 12, 13]
    assert batch.pos[:3].tolist() == [0, 1, 2]
    assert batch.logits[:3].tolist() == [0, 1, 0]
    assert batch.n_seq_id[:3].tolist() == [1, 2, 1]
    assert batch.seq_ids(0) == [0]
    assert batch.seq_ids(1) == [0, 1]
    assert batch.seq_ids(2) == [1]
    with pytest.raises(lb.OutOfRangeError):
        batch.seq_ids(3)
    with pytest.raises(lb.OutOfRangeError):
        batch.seq_ids(-1)
    batch.clear()
    assert batch.n_tokens == 0 and batch.n_outputs == 0


def test_batch_add_accepts_numpy_integers() -> None:
    # Values taken out of numpy arrays are numpy scalars, not int.
    ids = np.array([5, 6], dtype=np.int32)
    seqs = np.array([0, 1], dtype=np.int32)
    batch = lb.Batch(4, n_seq_max=2)
    batch.add(ids[0], np.int64(0), seq_ids=[seqs[0], seqs[1]])
    batch.add(ids[1], np.int64(1), seq_ids=seqs[1], logits=True)
    assert batch.token[:2].tolist() == [5, 6]
    assert batch.seq_ids(0) == [0, 1]
    assert batch.seq_ids(1) == [1]


def test_batch_capacity_and_seq_id_limits_raise_invalid_argument() -> None:
    batch = lb.Batch(2, n_seq_max=2)
    with pytest.raises(lb.InvalidArgumentError):
        batch.add(1, 0, seq_ids=[0, 1, 2])  # more ids than n_seq_max
    with pytest.raises(lb.InvalidArgumentError):
        batch.add(1, 0, seq_ids=[])
    assert batch.n_tokens == 0
    batch.add(1, 0)
    batch.add(2, 1)
    with pytest.raises(lb.InvalidArgumentError):
        batch.add(3, 2)
    assert batch.n_tokens == 2

    with pytest.raises(lb.InvalidArgumentError):
        batch.add_sequence([5], pos0=2)
    with pytest.raises(lb.InvalidArgumentError):
        batch.set_tokens(np.arange(3, dtype=np.int32))
    assert batch.n_tokens == 2, "a failed bulk fill must not change the batch"
    with pytest.raises(lb.InvalidArgumentError):
        batch.n_tokens = 3
    with pytest.raises(lb.InvalidArgumentError):
        batch.n_tokens = -1
    assert batch.n_tokens == 2

    for bad in ({"capacity": 0}, {"capacity": -1}, {"capacity": 4, "n_seq_max": 0}, {"capacity": 4, "embd": -1}):
        with pytest.raises(lb.InvalidArgumentError):
            lb.Batch(**bad)


def test_batch_add_sequence_and_from_tokens() -> None:
    batch = lb.Batch(8)
    batch.add_sequence([7, 8, 9], pos0=5, seq_id=0)
    assert batch.token[:3].tolist() == [7, 8, 9]
    assert batch.pos[:3].tolist() == [5, 6, 7]
    assert batch.logits[:3].tolist() == [0, 0, 1]
    batch.add_sequence(np.array([1, 2], dtype=np.int64), pos0=8, all_logits=True)
    assert batch.n_tokens == 5
    assert batch.n_outputs == 3
    assert batch.pos[:5].tolist() == [5, 6, 7, 8, 9]

    fb = lb.Batch.from_tokens([4, 5, 6], pos0=2)
    assert fb.capacity == 3 and fb.n_tokens == 3
    assert fb.pos.tolist() == [2, 3, 4]
    assert fb.logits.tolist() == [0, 0, 1]
    assert lb.Batch.from_tokens([4, 5, 6], all_logits=True).n_outputs == 3
    with pytest.raises(lb.InvalidArgumentError):
        lb.Batch.from_tokens([])


def test_batch_set_tokens_with_numpy_arrays() -> None:
    batch = lb.Batch(8)
    batch.set_tokens(np.array([10, 20, 30, 40], dtype=np.int64))
    assert batch.n_tokens == 4
    assert batch.token[:4].tolist() == [10, 20, 30, 40]
    assert batch.pos[:4].tolist() == [0, 1, 2, 3]
    assert batch.logits[:4].tolist() == [0, 0, 0, 1]
    assert [batch.seq_ids(i) for i in range(4)] == [[0]] * 4

    batch.set_tokens(
        np.array([1, 2, 3], dtype=np.int32),
        pos=np.array([7, 8, 9], dtype=np.int32),
        seq_ids=np.array([0, 1, 0], dtype=np.int16),
        logits=np.array([True, False, True]),
    )
    assert batch.n_tokens == 3, "set_tokens replaces the contents"
    assert [batch.seq_ids(i) for i in range(3)] == [[0], [1], [0]]
    assert batch.token[:3].tolist() == [1, 2, 3]
    assert batch.pos[:3].tolist() == [7, 8, 9]
    assert batch.logits[:3].tolist() == [1, 0, 1]
    assert batch.n_outputs == 2
    batch.set_tokens([1, 2, 3], logits=True)
    assert batch.n_outputs == 3
    batch.set_tokens([1, 2, 3], logits=False)
    assert batch.n_outputs == 0

    with pytest.raises(lb.InvalidArgumentError):
        batch.set_tokens([1, 2, 3], pos=[0, 1])
    with pytest.raises(lb.InvalidArgumentError):
        batch.set_tokens([1, 2, 3], seq_ids=np.zeros(4, dtype=np.int32))
    with pytest.raises(lb.InvalidArgumentError):
        batch.set_tokens([1, 2, 3], logits=np.ones(2, dtype=np.int8))
    with pytest.raises(lb.InvalidArgumentError):
        batch.set_tokens(np.zeros((2, 2), dtype=np.int32))
    with pytest.raises(TypeError):
        batch.set_tokens(np.zeros(3, dtype=np.float32))
    with pytest.raises(TypeError):
        batch.set_tokens("hello")
    with pytest.raises(lb.OutOfRangeError):
        batch.set_tokens(np.array([2**40], dtype=np.int64))


def test_batch_views_write_through(tiny: lb.Model, make_tiny_ctx, toks: list[int]) -> None:
    n = len(toks)
    batch = lb.Batch(16)
    token, pos, logits = batch.token, batch.pos, batch.logits
    token[:n] = toks
    pos[:n] = np.arange(n)
    logits[:n] = 0
    logits[[2, 5, n - 1]] = 1
    logits[n + 1] = 1  # beyond n_tokens: must not count
    assert batch.n_tokens == 0 and batch.n_outputs == 0
    batch.n_tokens = n
    assert batch.n_tokens == n
    assert batch.n_outputs == 3
    assert batch.token[:n].tolist() == toks, "views share the batch's memory"

    ctx = make_tiny_ctx()
    ctx.decode(batch)
    assert ctx.n_outputs == 3
    assert ctx.logits().shape == (3, tiny.n_vocab)

    ref_ctx = make_tiny_ctx()
    ref_ctx.decode_tokens(toks, pos0=0, all_logits=True)
    ref = ref_ctx.logits(copy=True)
    assert ref.shape == (n, tiny.n_vocab)
    for row, i in enumerate((2, 5, n - 1)):
        assert_logits_close(ctx.logits_ith(i), ref[i])
        np.testing.assert_array_equal(ctx.logits()[row], ctx.logits_ith(i))
    with pytest.raises(lb.OutOfRangeError):
        ctx.logits_ith(3)  # in the batch, but no output requested
    with pytest.raises(lb.OutOfRangeError):
        ctx.logits_ith(n)  # past the batch
    with pytest.raises(lb.OutOfRangeError):
        ctx.logits_ith(-4)  # only 3 outputs
    np.testing.assert_array_equal(ctx.logits_ith(-3), ctx.logits_ith(2))


def test_batch_views_survive_close() -> None:
    batch = lb.Batch(4)
    batch.add(42, 3, logits=True)
    token, pos = batch.token, batch.pos
    batch.close()
    assert batch.closed
    assert token[0] == 42 and pos[0] == 3
    for call in (lambda: batch.n_tokens, lambda: batch.add(1, 0), lambda: len(batch), lambda: batch.token):
        with pytest.raises(lb.ClosedError):
            call()
    batch.close()  # idempotent


def test_token_in_two_sequences(tiny: lb.Model, make_tiny_ctx, toks: list[int]) -> None:
    # One batch entry may belong to several sequences (a shared prompt); with a unified KV
    # cache both sequences then hold it.
    ctx = make_tiny_ctx(n_seq_max=2, kv_unified=True)
    batch = lb.Batch(32, n_seq_max=2)
    for i, t in enumerate(toks[:-1]):
        batch.add(t, i, seq_ids=[0, 1], logits=i == len(toks) - 2)
    ctx.decode(batch)
    for s in (0, 1):
        assert ctx.seq_pos_min(s) == 0
        assert ctx.seq_pos_max(s) == len(toks) - 2
    # Continuing sequence 1 alone gives the logits of the whole text.
    ctx.decode_tokens(toks[-1:], pos0=len(toks) - 1, seq_id=1)
    assert ctx.seq_pos_max(0) == len(toks) - 2
    assert_logits_close(last_logits(ctx), reference_logits(make_tiny_ctx, toks))


def test_decode_tokens_in_chunks_matches_one_batch(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_batch=4, n_ubatch=4)
    assert ctx.n_batch == 4
    ctx.decode_tokens(toks, pos0=0)
    assert ctx.seq_pos_min(0) == 0
    assert ctx.seq_pos_max(0) == len(toks) - 1
    assert ctx.n_outputs == 1
    assert_logits_close(last_logits(ctx), reference_logits(make_tiny_ctx, toks))
    with pytest.raises(lb.InvalidArgumentError):
        ctx.decode_tokens(toks[:5], pos0=len(toks), all_logits=True)  # 5 > n_batch
    assert ctx.seq_pos_max(0) == len(toks) - 1


def test_decode_prefix_logits_are_causal(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks, pos0=0, all_logits=True)
    rows = ctx.logits(copy=True)
    assert rows.shape[0] == len(toks) == ctx.n_outputs
    for k in (1, 4, len(toks)):
        assert_logits_close(rows[k - 1], reference_logits(make_tiny_ctx, toks[:k]))
    assert not np.allclose(rows[0], rows[-1], atol=1e-2), "different prefixes give different logits"


def test_decode_without_outputs(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    batch = lb.Batch(16)
    batch.set_tokens(toks, logits=False)
    ctx.decode(batch)
    assert ctx.n_outputs == 0
    assert ctx.seq_pos_max(0) == len(toks) - 1
    with pytest.raises(lb.OutOfRangeError):
        ctx.logits_ith(-1)
    with pytest.raises(lb.OutOfRangeError):
        lb.SamplerChain().add_greedy().sample(ctx)


@pytest.mark.parametrize("bad", [10**6, 32000, -1, -(2**31)])
def test_decode_rejects_token_outside_vocab(make_tiny_ctx, toks: list[int], bad: int) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks[:3], pos0=0)
    before = last_logits(ctx)
    with pytest.raises(lb.OutOfRangeError, match=str(bad)):
        ctx.decode_tokens([toks[3], bad], pos0=3)
    batch = lb.Batch(4)
    batch.add(bad, 3, logits=True)
    with pytest.raises(lb.OutOfRangeError):
        ctx.decode(batch)
    # Nothing was decoded: the sequence and the last outputs are as before.
    assert ctx.seq_pos_max(0) == 2
    np.testing.assert_array_equal(last_logits(ctx), before)
    ctx.decode_tokens(toks[3:], pos0=3)
    assert_logits_close(last_logits(ctx), reference_logits(make_tiny_ctx, toks))


def test_decode_rejects_token_ids_beyond_int32(tiny_ctx: lb.Context) -> None:
    with pytest.raises(lb.OutOfRangeError):
        tiny_ctx.decode_tokens([1, 2**40], pos0=0)
    with pytest.raises(lb.OutOfRangeError):
        tiny_ctx.decode_tokens(np.array([1, 2**40], dtype=np.int64), pos0=0)
    with pytest.raises(TypeError):
        tiny_ctx.decode_tokens([1, 2.0], pos0=0)
    assert tiny_ctx.seq_pos_max(0) == -1


def test_decode_rejects_bad_sequence_ids(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    for seq in (2, 5, -1):
        batch = lb.Batch(4, n_seq_max=2)
        batch.add(toks[0], 0, seq_ids=[0, seq] if seq != -1 else [seq], logits=True)
        with pytest.raises(lb.OutOfRangeError):
            ctx.decode(batch)
    with pytest.raises(lb.OutOfRangeError):
        ctx.decode_tokens(toks, pos0=0, seq_id=2)
    with pytest.raises(lb.OutOfRangeError):
        ctx.decode_tokens(toks, pos0=0, seq_id=-1)
    assert ctx.seq_pos_max(0) == -1 and ctx.seq_pos_max(1) == -1


def test_decode_rejects_malformed_batches(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_batch=8)
    with pytest.raises(lb.InvalidArgumentError):
        ctx.decode(lb.Batch(4))  # empty
    with pytest.raises(lb.InvalidArgumentError):
        ctx.decode(lb.Batch.from_tokens((toks * 2)[:9]))  # 9 tokens > n_batch
    with pytest.raises(lb.InvalidArgumentError):
        ctx.decode_tokens([], pos0=0)

    batch = lb.Batch.from_tokens(toks[:3])
    batch.n_seq_id[1] = 0  # a token with no sequence
    with pytest.raises(lb.InvalidArgumentError):
        ctx.decode(batch)
    batch.n_seq_id[1] = 2  # more ids than the batch has room for
    with pytest.raises(lb.InvalidArgumentError):
        ctx.decode(batch)

    batch = lb.Batch.from_tokens(toks[:3], pos0=0)
    batch.pos[0] = -1
    with pytest.raises(lb.InvalidArgumentError):
        ctx.decode(batch)
    assert ctx.seq_pos_max(0) == -1


def test_decode_rejected_by_llama_cpp_is_invalid_batch(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks[:4], pos0=0)
    with pytest.raises(lb.InvalidBatchError) as gap:
        ctx.decode_tokens(toks[4:6], pos0=10)  # positions must continue at 4
    assert gap.value.code == -1
    assert isinstance(gap.value, lb.DecodeError) and isinstance(gap.value, ValueError)
    assert "consecutive" in str(gap.value), "llama.cpp's reason is in the message"
    assert ctx.seq_pos_max(0) == 3
    ctx.decode_tokens(toks[4:], pos0=4)
    assert_logits_close(last_logits(ctx), reference_logits(make_tiny_ctx, toks))


def test_full_context_raises_context_full(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx(n_ctx=256)
    n_ctx = ctx.n_ctx
    assert n_ctx == 256
    filler = (toks * (n_ctx // len(toks) + 1))[:n_ctx]
    ctx.decode_tokens(filler, pos0=0)
    assert ctx.seq_pos_max(0) == n_ctx - 1
    with pytest.raises(lb.ContextFullError) as full:
        ctx.decode_tokens(toks[:2], pos0=n_ctx)
    assert full.value.code == 1
    assert isinstance(full.value, lb.DecodeError)
    assert ctx.seq_pos_max(0) == n_ctx - 1
    # Making room lets decoding continue.
    assert ctx.seq_rm(0, n_ctx - 8, -1)
    ctx.decode_tokens(toks[:2], pos0=n_ctx - 8)
    assert ctx.seq_pos_max(0) == n_ctx - 7


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


@pytest.fixture
def decoded(make_tiny_ctx, toks: list[int]) -> lb.Context:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks, pos0=0)
    return ctx


def test_greedy_picks_argmax(decoded: lb.Context) -> None:
    logits = decoded.logits_ith(-1)
    assert lb.SamplerChain().add_greedy().sample(decoded) == int(np.argmax(logits))


def test_sample_at_batch_index(make_tiny_ctx, toks: list[int]) -> None:
    ctx = make_tiny_ctx()
    ctx.decode_tokens(toks, pos0=0, all_logits=True)
    chain = lb.SamplerChain().add_greedy()
    for i in (0, 3, len(toks) - 1):
        assert chain.sample(ctx, i) == int(np.argmax(ctx.logits_ith(i)))
    assert chain.sample(ctx, -len(toks)) == int(np.argmax(ctx.logits_ith(0)))
    with pytest.raises(lb.OutOfRangeError):
        chain.sample(ctx, len(toks))
    with pytest.raises(lb.OutOfRangeError):
        chain.sample(ctx, -len(toks) - 1)


def test_sampling_needs_outputs_and_a_selecting_sampler(tiny_ctx: lb.Context, decoded: lb.Context) -> None:
    with pytest.raises(lb.OutOfRangeError):
        lb.SamplerChain().add_greedy().sample(tiny_ctx)  # nothing decoded yet
    with pytest.raises(lb.InvalidArgumentError):
        lb.SamplerChain().sample(decoded)  # empty chain
    with pytest.raises(lb.InvalidArgumentError):
        lb.SamplerChain().add_top_k(5).sample(decoded)  # nothing selects
    with pytest.raises(lb.OutOfRangeError):
        lb.SamplerChain().add_greedy().add_logit_bias(32000, {1: 1.0}).accept(-1)
    with pytest.raises(lb.OutOfRangeError):
        lb.SamplerChain().add_logit_bias(32000, {32000: 1.0})


def flat_dist(seed: int) -> lb.SamplerChain:
    # A high temperature spreads the tiny model's peaked distribution over many tokens.
    return lb.SamplerChain().add_temp(8.0).add_dist(seed=seed)


def test_dist_seed_reproducible(decoded: lb.Context) -> None:
    chain_a, chain_b, chain_c = flat_dist(1234), flat_dist(1234), flat_dist(99)
    a = [chain_a.sample(decoded) for _ in range(12)]
    b = [chain_b.sample(decoded) for _ in range(12)]
    c = [chain_c.sample(decoded) for _ in range(12)]
    assert a == b
    assert a != c
    assert len(set(a)) > 1, "the chain's RNG advances from sample to sample"
    assert chain_a.seed == 1234
    chain_a.reset()
    assert [chain_a.sample(decoded) for _ in range(12)] == a, "reset() restarts the RNG from its seed"


@pytest.mark.parametrize("seed", [0, 1, 7, 2**31])
def test_top_k_1_equals_greedy(decoded: lb.Context, seed: int) -> None:
    chain = lb.SamplerChain().add_top_k(1).add_dist(seed=seed)
    assert chain.sample(decoded) == int(np.argmax(decoded.logits_ith(-1)))


def test_logit_bias_forbids_and_forces(decoded: lb.Context) -> None:
    logits = decoded.logits_ith(-1, copy=True)
    order = np.argsort(logits)
    best, second, worst = int(order[-1]), int(order[-2]), int(order[0])
    n_vocab = decoded.n_vocab
    forbid = lb.SamplerChain().add_logit_bias(n_vocab, {best: float("-inf")}).add_greedy()
    assert forbid.sample(decoded) == second
    force = lb.SamplerChain().add_logit_bias(n_vocab, [(worst, float("inf"))]).add_greedy()
    assert force.sample(decoded) == worst
    large = lb.SamplerChain().add_logit_bias(n_vocab, {worst: 1000.0}).add_dist(seed=3)
    assert large.sample(decoded) == worst


def test_clone_keeps_state(decoded: lb.Context) -> None:
    chain = flat_dist(42)
    start = [chain.sample(decoded) for _ in range(5)]
    copy = chain.clone()
    assert copy.names == chain.names
    after_chain = [chain.sample(decoded) for _ in range(5)]
    after_copy = [copy.sample(decoded) for _ in range(5)]
    assert after_copy == after_chain, "the clone continues from the same RNG state"
    assert after_copy != start, "the clone did not restart from the seed"


def test_apply_on_token_data_array() -> None:
    rng = np.random.default_rng(5)
    cands = np.zeros(50, dtype=lb.token_data_dtype)
    cands["id"] = np.arange(100, 150)
    cands["logit"] = rng.standard_normal(50).astype(np.float32)
    original = cands.copy()

    out, selected = lb.SamplerChain().add_greedy().apply(cands)
    assert out.dtype == lb.token_data_dtype
    assert out[selected]["id"] == 100 + int(np.argmax(original["logit"]))
    np.testing.assert_array_equal(cands, original)  # apply() works on a copy

    out, selected = lb.SamplerChain().add_top_k(3).apply(cands)
    assert selected == -1, "top-k selects nothing"
    top3 = set((100 + np.argsort(original["logit"])[-3:]).tolist())
    assert set(out["id"].tolist()) == top3

    out, _ = lb.SamplerChain().add_logit_bias(200, {120: 5.0}).apply(cands)
    biased = out[out["id"] == 120]["logit"][0]
    assert biased == pytest.approx(original[20]["logit"] + 5.0)

    with pytest.raises(lb.InvalidArgumentError):
        lb.SamplerChain().add_greedy().apply(np.zeros(4, dtype=np.float32))
    with pytest.raises(lb.InvalidArgumentError):
        lb.SamplerChain().add_greedy().apply(cands[::2])  # not contiguous
    with pytest.raises(lb.OutOfRangeError):
        lb.SamplerChain().add_logit_bias(120, {1: 1.0}).add_greedy().apply(cands)  # ids >= n_vocab


class ForceToken:
    """A Python sampler that forces one token by editing the candidates."""

    name = "force"

    def __init__(self, token: int, select: bool) -> None:
        self.token = token
        self.select = select
        self.accepted: list[int] = []
        self.resets = 0

    def apply(self, cands: np.ndarray) -> int | None:
        assert cands.dtype == lb.token_data_dtype
        hit = np.flatnonzero(cands["id"] == self.token)
        if self.select:
            return int(hit[0])
        cands["logit"] = -np.inf
        cands["logit"][hit] = 0.0
        return None

    def accept(self, token: int) -> None:
        self.accepted.append(token)

    def reset(self) -> None:
        self.resets += 1


@pytest.mark.parametrize("select", [False, True], ids=["edits-logits", "selects-index"])
def test_custom_python_sampler_forces_token(decoded: lb.Context, select: bool) -> None:
    logits = decoded.logits_ith(-1)
    target = int(np.argmin(logits))
    sampler = ForceToken(target, select)
    chain = lb.SamplerChain().add_custom(sampler)
    if not select:
        chain.add_greedy()
    assert chain.names[0] == "force"
    assert chain.sample(decoded) == target
    assert chain.sample(decoded) == target
    assert sampler.accepted == [target, target]
    chain.reset()
    assert sampler.resets == 1


class PassThrough:
    """A custom sampler that changes nothing: it makes the chain take llama.cpp's general path."""

    def apply(self, cands: np.ndarray) -> None:
        return None


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_plain_greedy_chain_picks_what_llama_cpp_greedy_picks(request: pytest.FixtureRequest, which: str) -> None:
    # A chain holding only greedy takes a shortcut (argmax over the logits row, no candidate
    # array); it must choose exactly what llama.cpp's greedy sampler chooses over the full
    # candidate array, and what numpy's argmax (first maximum) says, at every step.
    model: lb.Model = request.getfixturevalue(which)
    ctx = lb.Context(model, n_ctx=256, n_batch=256, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    fast = lb.SamplerChain().add_greedy()
    general = lb.SamplerChain().add_custom(PassThrough()).add_greedy()
    tokens = model.vocab.tokenize("The three primary colors are", add_special=True)
    ctx.decode_tokens(tokens, pos0=0)
    pos = len(tokens)
    for _ in range(40):
        expected = int(np.argmax(ctx.logits_ith(-1)))
        chosen = fast.sample(ctx)
        assert chosen == general.sample(ctx) == expected
        ctx.decode_tokens([chosen], pos0=pos)
        pos += 1
    assert fast.perf()["n_sample"] == 40


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_biased_greedy_chain_picks_what_llama_cpp_picks(request: pytest.FixtureRequest, which: str) -> None:
    # Logit bias followed by greedy also skips the candidate array. Each step tries biases that
    # suppress the natural winner (and every end-of-generation token), lift another token to
    # an exact tie with it (the lower index must win), and stack duplicate biases on one token
    # (added one by one); llama.cpp's own path (forced by a pass-through sampler in front) and
    # numpy over the biased row must agree with the shortcut every time.
    model: lb.Model = request.getfixturevalue(which)
    vocab = model.vocab
    n_vocab = vocab.n_tokens
    eog = [t for t in range(n_vocab) if vocab.is_eog(t)]
    ctx = lb.Context(model, n_ctx=256, n_batch=256, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    tokens = vocab.tokenize("The three primary colors are", add_special=True)
    ctx.decode_tokens(tokens, pos0=0)
    pos = len(tokens)
    rng = np.random.default_rng(5)
    ties = 0
    for step in range(24):
        row = np.array(ctx.logits_ith(-1), dtype=np.float32)
        natural = int(np.argmax(row))
        other = int(rng.integers(0, n_vocab))
        lift = float(np.float32(row[natural]) - np.float32(row[other]))
        cases: list[list[tuple[int, float]]] = [
            [(natural, -1e9)] + [(t, float("-inf")) for t in eog],
            [(other, lift), (0, 0.5), (n_vocab - 1, -2.0)],
            [(other, lift / 2), (other, lift / 2), (other, 1e-3)],
            [(int(t), float(b)) for t, b in zip(rng.integers(0, n_vocab, 50), rng.normal(0, 3, 50))],
        ]
        for biases in cases:
            fast = lb.SamplerChain().add_logit_bias(n_vocab, biases).add_greedy()
            general = lb.SamplerChain().add_custom(PassThrough()).add_logit_bias(n_vocab, biases).add_greedy()
            expected_row = row.copy()
            for t, b in biases:
                expected_row[t] = expected_row[t] + np.float32(b)
            expected = int(np.argmax(expected_row))
            chosen = fast.sample(ctx)
            assert chosen == general.sample(ctx) == expected, (step, biases[:3])
            assert fast.clone().sample(ctx) == expected
            ties += int(expected_row[other] == expected_row[natural] and other != natural)
        ctx.decode_tokens([natural], pos0=pos)
        pos += 1
    assert ties > 0, "no exact tie was produced; the tie-breaking case went untested"


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
@pytest.mark.parametrize("top_k", [1, 40, 128, 200])
def test_top_k_first_chain_samples_what_llama_cpp_samples(request: pytest.FixtureRequest, which: str,
                                                          top_k: int) -> None:
    # Chains starting with top-k (k <= 128) hand the chain the k best candidates found in one
    # pass instead of a full, partially sorted candidate array. Same seeds must give the same
    # tokens as llama.cpp's own path (forced here by a pass-through sampler in front).
    model: lb.Model = request.getfixturevalue(which)
    ctx = lb.Context(model, n_ctx=256, n_batch=256, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    prompt = model.vocab.tokenize("Once upon a time", add_special=True)
    for seed in (1, 2, 3):
        def chain(front: bool) -> lb.SamplerChain:
            c = lb.SamplerChain()
            if front:
                c.add_custom(PassThrough())
            return c.add_top_k(top_k).add_top_p(0.95).add_min_p(0.05).add_temp(1.5).add_dist(seed)

        fast, general = chain(False), chain(True)
        ctx.memory_clear()
        ctx.decode_tokens(prompt, pos0=0)
        pos = len(prompt)
        seen = []
        for _ in range(24):
            chosen = fast.sample(ctx)
            assert chosen == general.sample(ctx)
            seen.append(chosen)
            ctx.decode_tokens([chosen], pos0=pos)
            pos += 1
        assert len(set(seen)) > 3 or top_k == 1  # really sampling, not stuck on one token


def test_custom_sampler_errors(decoded: lb.Context) -> None:
    class Boom:
        def apply(self, cands: np.ndarray) -> None:
            raise KeyError("boom")

    chain = lb.SamplerChain().add_custom(Boom()).add_greedy()
    with pytest.raises(KeyError, match="boom"):
        chain.sample(decoded)

    class BadIndex:
        def apply(self, cands: np.ndarray) -> int:
            return len(cands)

    with pytest.raises(lb.OutOfRangeError):
        lb.SamplerChain().add_custom(BadIndex()).sample(decoded)
    with pytest.raises(TypeError):
        lb.SamplerChain().add_custom(object())
    with pytest.raises(lb.InvalidArgumentError):
        lb.SamplerChain().add_custom(ForceToken(1, True)).clone()  # no clone() method
    # The context is still fine for other chains.
    assert lb.SamplerChain().add_greedy().sample(decoded) == int(np.argmax(decoded.logits_ith(-1)))


def chatml(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def generate(
    ctx: lb.Context, vocab: lb.Vocab, chain: lb.SamplerChain, prompt: str, limit: int
) -> tuple[list[int], bool]:
    """Decode -> sample loop; returns the tokens and whether an end-of-generation token ended it."""
    ids = vocab.tokenize(prompt, add_special=False, parse_special=True)
    ctx.decode_tokens(ids, pos0=0)
    pos = len(ids)
    out: list[int] = []
    for _ in range(limit):
        token = chain.sample(ctx)
        if vocab.is_eog(token):
            return out, True
        out.append(token)
        ctx.decode_tokens([token], pos0=pos)
        pos += 1
    return out, False


def test_greedy_follows_argmax_on_smollm2(smollm2_ctx: lb.Context, smollm2: lb.Model) -> None:
    vocab = smollm2.vocab
    chain = lb.SamplerChain().add_greedy()
    smollm2_ctx.decode_tokens(vocab.tokenize("The capital of France is"), pos0=0)
    pos = smollm2_ctx.seq_pos_max(0) + 1
    for _ in range(6):
        expected = int(np.argmax(smollm2_ctx.logits_ith(-1)))
        token = chain.sample(smollm2_ctx)
        assert token == expected
        smollm2_ctx.decode_tokens([token], pos0=pos)
        pos += 1


@pytest.mark.parametrize(
    ("grammar", "allowed"),
    [('root ::= "yes" | "no"', {b"yes", b"no"}), ('root ::= "purple"', {b"purple"})],
    ids=["yes-no", "forced-word"],
)
def test_grammar_constrains_smollm2(
    smollm2_ctx: lb.Context, smollm2: lb.Model, grammar: str, allowed: set[bytes]
) -> None:
    vocab = smollm2.vocab
    chain = lb.SamplerChain().add_grammar(vocab, grammar).add_greedy()
    out, ended = generate(smollm2_ctx, vocab, chain, chatml("Is the sky blue? Answer with one word."), limit=12)
    text = vocab.detokenize(out)
    assert text in allowed
    assert ended, "once the grammar is complete only an end-of-generation token is allowed"


@pytest.mark.parametrize(
    ("grammar", "reason"),
    [
        ("root ::= foo", "Undefined rule identifier 'foo'"),
        ('root ::= ("a"', "expecting ')'"),
        ('root = "a"', "expecting ::="),
    ],
    ids=["undefined-rule", "unclosed-group", "no-definition"],
)
def test_invalid_grammar_raises_grammar_error_with_reason(smollm2: lb.Model, grammar: str, reason: str) -> None:
    chain = lb.SamplerChain().add_greedy()
    with pytest.raises(lb.GrammarError) as err:
        chain.add_grammar(smollm2.vocab, grammar)
    assert isinstance(err.value, ValueError)
    assert reason in str(err.value), f"llama.cpp's reason {reason!r} is missing from: {err.value}"


def test_invalid_grammar_leaves_chain_usable(smollm2: lb.Model, decoded: lb.Context) -> None:
    chain = lb.SamplerChain().add_greedy()
    with pytest.raises(lb.GrammarError):
        chain.add_grammar(smollm2.vocab, "root ::= foo")
    with pytest.raises(lb.GrammarError):
        chain.add_grammar(smollm2.vocab, 'root ::= "a"', root="missing")
    assert len(chain) == 1 and chain.names == ["greedy"]
    assert chain.sample(decoded) == int(np.argmax(decoded.logits_ith(-1)))
