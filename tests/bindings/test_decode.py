"""Decoding: chunked and multi-sequence decodes, outputs, and the batches and tokens that decode
refuses (leaving the context as it was).

The tests run a tiny random-weight llama model (tests/tiny_model.py), where a decode takes
milliseconds; references are computed independently in the test (a fresh context), never
copied from an earlier run.
"""

from __future__ import annotations

import numpy as np
import pytest

import llamabind as lb
from logits_check import assert_logits_close, last_logits, reference_logits


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
