"""Logits and embeddings come out as read-only zero-copy views owned by the context (valid
until the next decode), or as independent copies with copy=True."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import llamabind
from testutil import N_THREADS, OOM_CHILD_PRELUDE

PROMPT = "The quick brown fox jumps over the lazy dog while the cat sleeps"


def data_ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


@pytest.fixture(scope="module")
def tokens(smollm2: llamabind.Model) -> list[int]:
    toks = smollm2.vocab.tokenize(PROMPT)
    assert len(toks) >= 10
    return toks


@pytest.fixture
def ctx(smollm2: llamabind.Model) -> Iterator[llamabind.Context]:
    # n_seq_max=1: the output buffer starts with room for one row.
    with llamabind.Context(
        smollm2, n_ctx=256, n_batch=256, n_seq_max=1, n_threads=N_THREADS, n_threads_batch=N_THREADS
    ) as c:
        yield c


# ---------------------------------------------------------------------------------------
# Logits


def test_logits_views_are_read_only(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:4], pos0=0)
    for view in (ctx.logits(), ctx.logits_ith(-1), ctx.logits_ith(3)):
        assert view.dtype == np.float32
        assert not view.flags.writeable
        assert not view.flags.owndata
        with pytest.raises(ValueError):
            view[..., 0] = 1.0
        with pytest.raises(ValueError):
            view.setflags(write=True)  # the owner is not a writable buffer, so this is refused too


def test_logits_view_shape_and_rows(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:4], pos0=0)
    assert ctx.n_outputs == 1
    assert ctx.logits().shape == (1, ctx.n_vocab)
    assert ctx.logits_ith(-1).shape == (ctx.n_vocab,)

    ctx.decode_tokens(tokens[4:9], pos0=4, all_logits=True)
    assert ctx.n_outputs == 5
    all_rows = ctx.logits()
    assert all_rows.shape == (5, ctx.n_vocab)
    for i in range(5):
        np.testing.assert_array_equal(ctx.logits_ith(i), all_rows[i])
        np.testing.assert_array_equal(ctx.logits_ith(i - 5), all_rows[i])


def test_logits_and_logits_ith_share_memory(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:5], pos0=0, all_logits=True)
    full = ctx.logits()
    last = ctx.logits_ith(-1)
    assert np.shares_memory(full, last)
    assert np.shares_memory(full, ctx.logits_ith(0))
    assert data_ptr(last) == data_ptr(full) + 4 * full.shape[1] * 4
    assert np.shares_memory(ctx.logits(), full)  # a second call views the same memory


def test_view_buffer_stays_put_and_contents_follow_decodes(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:3], pos0=0)
    view = ctx.logits_ith(-1)
    ptr = data_ptr(view)
    snapshots = [view.copy()]
    for pos in range(3, 7):
        ctx.decode_tokens([tokens[pos]], pos0=pos)
        fresh = ctx.logits_ith(-1)
        assert data_ptr(fresh) == ptr, "the output buffer moved between single-token decodes"
        # The old view aliases the buffer: it shows the newest logits.
        np.testing.assert_array_equal(view, fresh)
        assert not np.array_equal(view, snapshots[-1]), "logits did not change after a decode of a new token"
        snapshots.append(view.copy())


def test_copy_is_independent_and_writable(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:3], pos0=0)
    view = ctx.logits()
    copies = [ctx.logits(copy=True), ctx.logits_ith(-1, copy=True)]
    for c in copies:
        assert c.flags.writeable
        assert not np.shares_memory(c, view)
    np.testing.assert_array_equal(copies[0], view)
    np.testing.assert_array_equal(copies[1], view[-1])
    frozen = [c.copy() for c in copies]

    ctx.decode_tokens([tokens[3]], pos0=3)
    assert not np.array_equal(view, frozen[0])  # the view follows the context
    for c, f in zip(copies, frozen):
        np.testing.assert_array_equal(c, f)  # the copies do not

    copies[0][0, :10] = 0.0  # writing a copy leaves the context alone
    assert not np.array_equal(ctx.logits()[0, :10], np.zeros(10, np.float32))


def test_view_stays_readable_after_close_and_model_drop(smollm2_path: Path, tokens: list[int]) -> None:
    model = llamabind.Model(smollm2_path)
    ctx = llamabind.Context(model, n_ctx=128, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    ctx.decode_tokens(tokens[:5], pos0=0, all_logits=True)
    view = ctx.logits()
    row = ctx.logits_ith(-1)
    saved = view.copy()

    ctx.close()
    np.testing.assert_array_equal(view, saved)
    del ctx, model
    gc.collect()
    np.testing.assert_array_equal(view, saved)
    np.testing.assert_array_equal(row, saved[-1])
    assert float(np.abs(view).sum()) > 0


def test_decode_needing_a_bigger_output_buffer_refused_while_a_view_lives(
    ctx: llamabind.Context, tokens: list[int]
) -> None:
    ctx.decode_tokens(tokens[:4], pos0=0)
    view = ctx.logits()
    saved = view.copy()
    before = ctx.seq_pos_max(0)

    with pytest.raises(llamabind.InvalidArgumentError, match="view"):
        ctx.decode_tokens(tokens[4:7], pos0=4, all_logits=True)  # 3 rows > any earlier decode
    assert ctx.seq_pos_max(0) == before, "a refused decode changed the KV cache"
    np.testing.assert_array_equal(view, saved)  # nothing was written under the view

    # As many rows as before is fine, with the view alive.
    ctx.decode_tokens([tokens[4]], pos0=4)
    assert ctx.seq_pos_max(0) == 4

    # logits_ith views hold the buffer too.
    del view
    row = ctx.logits_ith(-1)
    with pytest.raises(llamabind.InvalidArgumentError):
        ctx.decode_tokens(tokens[5:8], pos0=5, all_logits=True)
    del row
    gc.collect()

    ctx.decode_tokens(tokens[5:8], pos0=5, all_logits=True)
    assert ctx.logits().shape == (3, ctx.n_vocab)
    assert ctx.seq_pos_max(0) == 7

    # Now the buffer has room for 3 rows: 2 rows under a live view is allowed.
    view = ctx.logits()
    ptr = data_ptr(view)
    ctx.decode_tokens(tokens[8:10], pos0=8, all_logits=True)
    assert data_ptr(ctx.logits()) == ptr


def test_copies_do_not_hold_the_output_buffer(ctx: llamabind.Context, tokens: list[int]) -> None:
    ctx.decode_tokens(tokens[:4], pos0=0)
    kept = [ctx.logits(copy=True), ctx.logits_ith(-1, copy=True)]
    ctx.decode_tokens(tokens[4:8], pos0=4, all_logits=True)
    assert ctx.logits().shape == (4, ctx.n_vocab)
    assert kept[0].shape == (1, ctx.n_vocab)


# ---------------------------------------------------------------------------------------
# Embeddings


def test_token_embeddings_views(smollm2: llamabind.Model, tokens: list[int]) -> None:
    toks = tokens[:7]
    with llamabind.Context(
        smollm2,
        n_ctx=128,
        embeddings=True,
        pooling_type=llamabind.PoolingType.NONE,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
    ) as ctx:
        ctx.decode_tokens(toks, pos0=0)
        emb = ctx.embeddings()
        assert emb.shape == (len(toks), ctx.n_embd)  # embeddings: every token is an output row
        assert ctx.n_embd == smollm2.n_embd_out
        assert emb.dtype == np.float32
        assert not emb.flags.writeable
        with pytest.raises(ValueError):
            emb[0, 0] = 0.0
        last = ctx.embeddings_ith(-1)
        assert last.shape == (ctx.n_embd,)
        assert np.shares_memory(emb, last)
        np.testing.assert_array_equal(last, emb[-1])
        assert np.isfinite(emb).all()

        copy = ctx.embeddings(copy=True)
        assert copy.flags.writeable and not np.shares_memory(copy, emb)
        saved = copy.copy()
        ctx.decode_tokens([toks[0]], pos0=len(toks))
        np.testing.assert_array_equal(copy, saved)


def test_pooled_sequence_embedding(smollm2: llamabind.Model, tokens: list[int]) -> None:
    toks = tokens[:7]
    common = dict(n_ctx=128, embeddings=True, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    with llamabind.Context(smollm2, pooling_type=llamabind.PoolingType.NONE, **common) as per_token:
        per_token.decode_tokens(toks, pos0=0)
        rows = per_token.embeddings(copy=True)
    with llamabind.Context(smollm2, pooling_type=llamabind.PoolingType.MEAN, **common) as pooled:
        pooled.decode_tokens(toks, pos0=0)
        vec = pooled.embeddings_seq(0)
        assert vec.shape == (pooled.n_embd,)
        assert vec.dtype == np.float32
        assert vec.flags.writeable and vec.flags.owndata  # a copy: llama.cpp rebuilds it per decode
        np.testing.assert_allclose(vec, rows.mean(axis=0), atol=1e-4, rtol=1e-4)
        with pytest.raises(llamabind.InvalidArgumentError):
            pooled.embeddings()  # per-token rows do not exist with pooling


# ---------------------------------------------------------------------------------------
# Output buffer tracking after a failed decode


FATAL_THEN_GROW = "import faulthandler\nfaulthandler.enable()\n" + OOM_CHILD_PRELUDE + textwrap.dedent(
    """
    out = {}
    ctx.decode_tokens(toks[:4], pos0=0, all_logits=True)  # output buffer: 4 rows

    # 250 rows of logits (~47 MiB) cannot be allocated under this limit: llama.cpp frees its
    # output buffer, fails to allocate the new one and llama_decode returns -2.
    cap_address_space()
    try:
        ctx.decode_tokens(toks[4:254], pos0=4, all_logits=True)
        out["fatal"] = None
    except lb.FatalDecodeError as e:
        out["fatal"] = e.code
    uncap_address_space()

    ctx.decode_tokens(toks[4:5], pos0=4)  # llama.cpp allocates a fresh, 1-row buffer
    view = ctx.logits()
    saved = view.copy()
    ptr = view.__array_interface__["data"][0]
    try:
        ctx.decode_tokens(toks[5:8], pos0=5, all_logits=True)  # 3 rows, with the view alive
        out["second"] = "decoded"
        out["buffer_moved"] = ctx.logits_ith(0).__array_interface__["data"][0] != ptr
    except lb.InvalidArgumentError:
        out["second"] = "refused"
        out["buffer_moved"] = False
    print(json.dumps(out), flush=True)
    out["view_intact"] = bool(np.array_equal(view, saved))  # reads freed memory if it moved
    print(json.dumps(out), flush=True)
    """
)


def test_view_safe_after_a_failed_output_allocation(smollm2_path: Path) -> None:
    """After llama.cpp failed to allocate a bigger output buffer (FatalDecodeError -2) it holds
    a smaller one than before; a view taken then must still keep any growing decode out."""
    proc = subprocess.run(
        [sys.executable, "-c", FATAL_THEN_GROW, str(smollm2_path)], capture_output=True, text=True, timeout=120
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"child failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert result["fatal"] == -2, result
    assert not result["buffer_moved"], (
        f"{result}: the decode reallocated llama.cpp's output buffer under a live logits view "
        "(the view now points to freed memory)"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
