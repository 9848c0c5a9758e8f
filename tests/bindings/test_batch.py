"""Batch: its entries, bulk fills, limits and the numpy views of its arrays.

One test decodes a batch filled through its views, in the tiny random-weight llama model of
tests/tiny_model.py, against a fresh decode of the same tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

import llamabind as lb
from logits_check import assert_logits_close


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
