"""Lifetimes are expressed in C++: children keep their model alive, close() is deterministic
and idempotent, and using a closed object raises ClosedError instead of crashing."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import llamabind
from testutil import N_THREADS

PROMPT = "The capital of France is"


def make_ctx(model: llamabind.Model, **kw: object) -> llamabind.Context:
    params: dict = dict(n_ctx=128, n_batch=128, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    params.update(kw)
    return llamabind.Context(model, **params)


def greedy(ctx: llamabind.Context, prompt: list[int], n: int) -> list[int]:
    sampler = llamabind.SamplerChain().add_greedy()
    ctx.decode_tokens(prompt, pos0=0)
    out = []
    for i in range(n):
        tok = sampler.sample(ctx)
        out.append(tok)
        ctx.decode_tokens([tok], pos0=len(prompt) + i)
    sampler.close()
    return out


@pytest.fixture(scope="module")
def prompt(smollm2: llamabind.Model) -> list[int]:
    return smollm2.vocab.tokenize(PROMPT)


@pytest.fixture(scope="module")
def reference(smollm2: llamabind.Model, prompt: list[int]) -> list[int]:
    with make_ctx(smollm2) as ctx:
        return greedy(ctx, prompt, 6)


# ---------------------------------------------------------------------------------------
# Model outlived by its children


def test_context_works_after_model_is_dropped(smollm2_path: Path, prompt: list[int], reference: list[int]) -> None:
    model = llamabind.Model(smollm2_path)
    ctx = make_ctx(model)
    del model
    gc.collect()
    assert greedy(ctx, prompt, 6) == reference
    assert ctx.model.n_vocab == 49152  # the context still reaches its model
    ctx.close()


def test_context_made_in_a_function_survives_its_model(smollm2_path: Path, prompt: list[int]) -> None:
    def build() -> llamabind.Context:
        return make_ctx(llamabind.Model(smollm2_path))

    ctx = build()
    gc.collect()
    ctx.decode_tokens(prompt, pos0=0)
    assert np.isfinite(ctx.logits_ith(-1)).all()
    ctx.close()


def test_vocab_outlives_its_model(smollm2_path: Path) -> None:
    model = llamabind.Model(smollm2_path)
    vocab = model.vocab
    expected = vocab.tokenize("Hello, world")
    del model
    gc.collect()
    assert vocab.tokenize("Hello, world") == expected
    assert vocab.detokenize(expected) == b"Hello, world"
    assert vocab.n_tokens == 49152


def test_vocab_from_a_temporary_model(smollm2_path: Path) -> None:
    vocab = llamabind.Model(smollm2_path).vocab
    gc.collect()
    assert vocab.token_to_piece(vocab.tokenize("Paris", add_special=False)[0]) == b"Paris"


def test_model_close_then_use_raises_but_children_keep_working(
    smollm2_path: Path, prompt: list[int], reference: list[int]
) -> None:
    model = llamabind.Model(smollm2_path)
    ctx = make_ctx(model)
    vocab = model.vocab
    model.close()
    assert model.closed
    model.close()  # idempotent

    for use in (
        lambda: model.n_vocab,
        lambda: model.vocab,
        lambda: model.desc,
        lambda: model.metadata,
        lambda: model.chat_template(),
        lambda: make_ctx(model),
    ):
        with pytest.raises(llamabind.ClosedError):
            use()
    assert "closed" in repr(model)

    assert greedy(ctx, prompt, 6) == reference
    assert vocab.tokenize(PROMPT) == prompt
    ctx.close()


def test_model_context_manager_closes(smollm2_path: Path) -> None:
    with llamabind.Model(smollm2_path) as model:
        assert not model.closed
    assert model.closed
    with pytest.raises(llamabind.ClosedError):
        model.n_layer


# ---------------------------------------------------------------------------------------
# Context


def closed_context_calls(ctx: llamabind.Context, batch: llamabind.Batch, tmp: Path) -> dict[str, Callable[[], object]]:
    s = str(tmp / "state.bin")
    return {
        "decode": lambda: ctx.decode(batch),
        "encode": lambda: ctx.encode(batch),
        "decode_tokens": lambda: ctx.decode_tokens([1, 2], pos0=0),
        "logits": lambda: ctx.logits(),
        "logits(copy=True)": lambda: ctx.logits(copy=True),
        "logits_ith": lambda: ctx.logits_ith(-1),
        "embeddings": lambda: ctx.embeddings(),
        "embeddings_ith": lambda: ctx.embeddings_ith(-1),
        "embeddings_seq": lambda: ctx.embeddings_seq(0),
        "memory_clear": lambda: ctx.memory_clear(),
        "seq_rm": lambda: ctx.seq_rm(0),
        "seq_cp": lambda: ctx.seq_cp(0, 0),
        "seq_keep": lambda: ctx.seq_keep(0),
        "seq_add": lambda: ctx.seq_add(0, 0, -1, 1),
        "seq_div": lambda: ctx.seq_div(0, 0, -1, 2),
        "seq_pos_min": lambda: ctx.seq_pos_min(0),
        "seq_pos_max": lambda: ctx.seq_pos_max(0),
        "state_get": lambda: ctx.state_get(),
        "state_set": lambda: ctx.state_set(b"state"),
        "state_save_file": lambda: ctx.state_save_file(s),
        "state_load_file": lambda: ctx.state_load_file(s),
        "state_seq_get": lambda: ctx.state_seq_get(0),
        "state_seq_set": lambda: ctx.state_seq_set(b"state", 0),
        "state_seq_save_file": lambda: ctx.state_seq_save_file(s, 0),
        "state_seq_load_file": lambda: ctx.state_seq_load_file(s, 0),
        "set_threads": lambda: ctx.set_threads(1),
        "perf": lambda: ctx.perf(),
        "perf_reset": lambda: ctx.perf_reset(),
        "set_lora_adapters": lambda: ctx.set_lora_adapters([]),
        "clear_lora_adapters": lambda: ctx.clear_lora_adapters(),
        "set_control_vector": lambda: ctx.set_control_vector(np.zeros((30, 576), np.float32), 1, 2),
        "clear_control_vector": lambda: ctx.clear_control_vector(),
        "n_ctx": lambda: ctx.n_ctx,
        "n_ctx_seq": lambda: ctx.n_ctx_seq,
        "n_batch": lambda: ctx.n_batch,
        "n_ubatch": lambda: ctx.n_ubatch,
        "n_seq_max": lambda: ctx.n_seq_max,
        "n_threads": lambda: ctx.n_threads,
        "pooling_type": lambda: ctx.pooling_type,
        "can_shift": lambda: ctx.can_shift,
        "causal_attn": lambda: ctx.causal_attn,
        "set embeddings_enabled": lambda: setattr(ctx, "embeddings_enabled", True),
        "set causal_attn": lambda: setattr(ctx, "causal_attn", False),
        "SamplerChain.sample": lambda: llamabind.SamplerChain().add_greedy().sample(ctx),
    }


def test_every_context_method_raises_closed_after_close(
    smollm2: llamabind.Model, prompt: list[int], tmp_path: Path
) -> None:
    ctx = make_ctx(smollm2)
    ctx.decode_tokens(prompt, pos0=0)
    ctx.close()
    assert ctx.closed
    batch = llamabind.Batch.from_tokens(prompt)
    public = {n for n in dir(llamabind.Context) if not n.startswith("_") and callable(getattr(llamabind.Context, n))}
    calls = closed_context_calls(ctx, batch, tmp_path)
    # cancel()/clear_cancel() only flip an atomic flag and may be called from any thread at
    # any time (e.g. a UI racing a close), so they are deliberately not guarded.
    assert public - set(calls) - {"close", "cancel", "clear_cancel"} == set(), "untested Context methods"
    for name, call in calls.items():
        with pytest.raises(llamabind.ClosedError):
            call()
            pytest.fail(f"{name} did not raise ClosedError")
    assert "closed" in repr(ctx)


def test_context_close_is_idempotent_and_context_manager_closes(smollm2: llamabind.Model, prompt: list[int]) -> None:
    ctx = make_ctx(smollm2)
    ctx.close()
    ctx.close()
    assert ctx.closed

    with make_ctx(smollm2) as ctx2:
        ctx2.decode_tokens(prompt, pos0=0)
        assert not ctx2.closed
    assert ctx2.closed
    with pytest.raises(llamabind.ClosedError):
        ctx2.seq_pos_max(0)

    # The context manager closes on an exception too.
    with pytest.raises(RuntimeError, match="boom"):
        with make_ctx(smollm2) as ctx3:
            raise RuntimeError("boom")
    assert ctx3.closed


def test_dropping_contexts_in_any_order_is_safe(smollm2_path: Path, prompt: list[int]) -> None:
    model = llamabind.Model(smollm2_path)
    contexts = [make_ctx(model) for _ in range(3)]
    batch = llamabind.Batch.from_tokens(prompt)
    sampler = llamabind.SamplerChain().add_greedy()
    for c in contexts:
        c.decode(batch)
    views = [c.logits() for c in contexts]
    tokens = {sampler.sample(c) for c in contexts}
    assert len(tokens) == 1
    del model, batch
    contexts[1].close()
    del contexts[0]
    gc.collect()
    del sampler
    contexts.clear()
    gc.collect()
    for v in views:
        assert v.shape == (1, 49152) and np.isfinite(v).all()


# ---------------------------------------------------------------------------------------
# Batch


def test_batch_close_then_use_raises_but_views_stay_valid(
    smollm2: llamabind.Model, prompt: list[int]
) -> None:
    batch = llamabind.Batch(16)
    batch.add_sequence(prompt, pos0=0)
    token_view, pos_view, logits_view, nseq_view = batch.token, batch.pos, batch.logits, batch.n_seq_id
    n = len(prompt)
    batch.close()
    batch.close()  # idempotent
    assert batch.closed
    assert "closed" in repr(batch)

    for use in (
        lambda: batch.n_tokens,
        lambda: len(batch),
        lambda: batch.capacity,
        lambda: batch.token,
        lambda: batch.pos,
        lambda: batch.add(1, 0),
        lambda: batch.add_sequence([1, 2], pos0=0),
        lambda: batch.set_tokens([1, 2]),
        lambda: batch.clear(),
        lambda: batch.seq_ids(0),
        lambda: setattr(batch, "n_tokens", 1),
    ):
        with pytest.raises(llamabind.ClosedError):
            use()

    with make_ctx(smollm2) as ctx:
        with pytest.raises(llamabind.ClosedError):
            ctx.decode(batch)

    # The views own the batch memory: still readable and writable.
    assert list(token_view[:n]) == prompt
    assert list(pos_view[:n]) == list(range(n))
    assert list(logits_view[:n]) == [0] * (n - 1) + [1]
    assert list(nseq_view[:n]) == [1] * n
    token_view[0] = 42
    pos_view[:] = 7
    del batch
    gc.collect()
    assert token_view[0] == 42 and (pos_view == 7).all()


def test_batch_context_manager_closes(prompt: list[int]) -> None:
    with llamabind.Batch.from_tokens(prompt) as batch:
        assert len(batch) == len(prompt)
    assert batch.closed
    with pytest.raises(llamabind.ClosedError):
        len(batch)


def test_batch_views_write_through_to_decode(smollm2: llamabind.Model, prompt: list[int]) -> None:
    """The writable views really are the batch arrays: filling them by hand decodes the same."""
    n = len(prompt)
    with make_ctx(smollm2) as ctx:
        ctx.decode_tokens(prompt, pos0=0)
        expected = ctx.logits_ith(-1, copy=True)
        ctx.memory_clear()

        batch = llamabind.Batch(n)
        batch.token[:n] = prompt
        batch.pos[:n] = np.arange(n)
        batch.n_seq_id[:n] = 1
        batch.logits[:n] = 0
        batch.logits[n - 1] = 1
        batch.n_tokens = n
        ctx.decode(batch)
        np.testing.assert_allclose(ctx.logits_ith(-1), expected, atol=1e-4)


# ---------------------------------------------------------------------------------------
# SamplerChain


def test_sampler_chain_close(smollm2: llamabind.Model, prompt: list[int]) -> None:
    sampler = llamabind.SamplerChain().add_top_k(5).add_greedy()
    with make_ctx(smollm2) as ctx:
        ctx.decode_tokens(prompt, pos0=0)
        tok = sampler.sample(ctx)
        sampler.close()
        sampler.close()  # idempotent
        assert sampler.closed
        assert "closed" in repr(sampler)
        for use in (
            lambda: sampler.sample(ctx),
            lambda: sampler.add_greedy(),
            lambda: sampler.accept(tok),
            lambda: sampler.reset(),
            lambda: sampler.clone(),
            lambda: len(sampler),
            lambda: sampler.names,
        ):
            with pytest.raises(llamabind.ClosedError):
                use()

        with llamabind.SamplerChain() as chain:
            chain.add_greedy()
            assert chain.sample(ctx) == tok
        assert chain.closed
        with pytest.raises(llamabind.ClosedError):
            chain.sample(ctx)


def test_sampler_outlives_context_and_context_outlives_sampler(smollm2: llamabind.Model, prompt: list[int]) -> None:
    sampler = llamabind.SamplerChain().add_greedy()
    ctx = make_ctx(smollm2)
    ctx.decode_tokens(prompt, pos0=0)
    first = sampler.sample(ctx)
    ctx.close()
    del ctx
    gc.collect()
    assert sampler.names == ["greedy"]
    with make_ctx(smollm2) as ctx2:
        ctx2.decode_tokens(prompt, pos0=0)
        assert sampler.sample(ctx2) == first
        del sampler
        gc.collect()
        ctx2.decode_tokens([first], pos0=len(prompt))
