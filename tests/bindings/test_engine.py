"""_core.Engine mechanics: slots and waiting requests, one batch per step, cancellation,
failures, context exhaustion and shared prefixes, with the KV cache checked empty after each
mix. Outputs are compared with a plain decode/sample loop over a one-sequence context."""

from __future__ import annotations

import numpy as np
import pytest

import llamabind as lb
from llamabind import _core
from testutil import N_THREADS

FR = _core.FinishReason


_EOG: dict[int, list[int]] = {}


def eog_tokens(model: lb.Model) -> list[int]:
    if id(model) not in _EOG:
        _EOG[id(model)] = [t for t in range(model.vocab.n_tokens) if model.vocab.is_eog(t)]
    return _EOG[id(model)]


def no_eog(model: lb.Model) -> lb.SamplerChain:
    """A chain that never picks an end-of-generation token (the random-weight model may well
    rank one first, which would end a sequence early)."""
    return lb.SamplerChain().add_logit_bias(model.vocab.n_tokens, {t: -1e9 for t in eog_tokens(model)})


def greedy(model: lb.Model) -> lb.SamplerChain:
    return no_eog(model).add_greedy()


def greedy_alone(model: lb.Model, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens of `prompt` in a context of its own (the reference)."""
    with lb.Context(model, n_ctx=256, n_threads=N_THREADS, n_threads_batch=N_THREADS) as ctx:
        chain = greedy(model)
        ctx.decode_tokens(prompt, 0)
        out: list[int] = []
        pos = len(prompt)
        for _ in range(n):
            t = chain.sample(ctx, -1)
            out.append(t)
            ctx.decode_tokens([t], pos)
            pos += 1
        return out


def run(engine: _core.Engine, max_steps: int = 500) -> tuple[dict[int, list[int]], dict[int, object], list[int]]:
    """Steps until idle; returns tokens per request, each request's finish reason, and the
    number of requests holding a slot at each step."""
    tokens: dict[int, list[int]] = {}
    finish: dict[int, object] = {}
    active: list[int] = []
    for _ in range(max_steps):
        if not engine.has_work:
            break
        for ev in engine.step():
            if ev.token >= 0:
                tokens.setdefault(ev.request, []).append(ev.token)
            if ev.finish != FR.NONE:
                finish[ev.request] = ev.finish
        active.append(engine.n_active)
    assert not engine.has_work
    return tokens, finish, active


def kv_clean(engine: _core.Engine, ctx: lb.Context) -> bool:
    """Every slot holds exactly the cells the engine keeps for later prompts: positions
    0..cached-1 of its last request, and nothing at all in a slot that keeps none."""
    cached = engine.cached_tokens
    return all(ctx.seq_pos_max(s) == cached[s] - 1 and ctx.seq_pos_min(s) == (0 if cached[s] else -1)
               for s in range(ctx.n_seq_max))


def prompts(model: lb.Model) -> list[list[int]]:
    texts = ["The quick brown fox", "Once upon a time", "In the beginning", "Hello there, how are you",
             "A B C D E F", "def main():"]
    return [model.vocab.tokenize(t) for t in texts]


def test_requests_share_slots_and_match_one_at_a_time(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    engine = _core.Engine(ctx)
    ps = prompts(tiny)
    ids = [engine.submit(p, greedy(tiny), max_tokens=5) for p in ps]
    assert engine.n_waiting == len(ps) and engine.n_slots == 2
    tokens, finish, active = run(engine)
    assert max(active) == 2  # never more than the slots, and both used
    for rid, p in zip(ids, ps):
        assert finish[rid] == FR.LENGTH
        assert tokens[rid] == greedy_alone(tiny, p, 5)
    assert engine.stats["tokens_generated"] == 5 * len(ps)
    assert engine.stats["max_active"] == 2
    assert kv_clean(engine, ctx)


def test_one_decode_per_step_for_all_sequences(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=4)
    engine = _core.Engine(ctx)
    for p in prompts(tiny)[:4]:
        engine.submit(p, greedy(tiny), max_tokens=6)
    run(engine)
    # All four prompts fit the first batch; then 5 steps each generate one token of every sequence.
    assert engine.stats["steps"] == 6
    assert engine.stats["max_active"] == 4


def test_submit_checks_its_arguments(tiny: lb.Model, make_tiny_ctx) -> None:
    engine = _core.Engine(make_tiny_ctx(n_seq_max=2))
    chain = lb.SamplerChain().add_greedy()
    with pytest.raises(ValueError, match="empty"):
        engine.submit([], chain)
    with pytest.raises(IndexError, match="outside the vocabulary"):
        engine.submit([1, tiny.vocab.n_tokens], chain)
    with pytest.raises(ValueError, match="does not fit"):
        engine.submit([1] * (engine.n_ctx_seq + 1), chain)
    assert not chain.closed  # a refused request leaves the chain to its owner
    with pytest.raises(ValueError, match="empty"):
        engine.submit([1, 2], lb.SamplerChain())
    engine.submit([1, 2], chain, max_tokens=1)
    assert chain.closed  # taken over by the engine
    with pytest.raises(lb.ClosedError):
        engine.submit([1, 2], chain)
    engine.close()
    with pytest.raises(lb.ClosedError):
        engine.submit([1, 2], lb.SamplerChain().add_greedy())
    with pytest.raises(ValueError):
        _core.Engine(make_tiny_ctx(), min_shared_prefix=-1)


def test_cancel_frees_the_slot_for_a_waiting_request(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=1)
    engine = _core.Engine(ctx)
    ps = prompts(tiny)
    first = engine.submit(ps[0], greedy(tiny), max_tokens=100)
    second = engine.submit(ps[1], greedy(tiny), max_tokens=4)
    waiting = engine.submit(ps[2], greedy(tiny), max_tokens=4)
    engine.step()
    engine.step()
    assert engine.n_active == 1 and ctx.seq_pos_max(0) >= len(ps[0])
    engine.cancel(first)
    engine.cancel(waiting)  # still waiting: dropped without ever taking a slot
    engine.cancel(12345)    # unknown ids are ignored
    events = engine.step()
    assert {(e.request, e.finish) for e in events if e.finish == FR.CANCELLED} == {(first, FR.CANCELLED),
                                                                                  (waiting, FR.CANCELLED)}
    assert all(e.token == -1 for e in events if e.finish == FR.CANCELLED)
    # The freed slot went to the next request in the same step.
    head = [e.token for e in events if e.request == second]
    assert len(head) == 1 and engine.n_active == 1
    tokens, finish, _ = run(engine)
    assert finish == {second: FR.LENGTH}
    assert head + tokens[second] == greedy_alone(tiny, ps[1], 4)
    assert kv_clean(engine, ctx)


def test_cancel_all(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    engine = _core.Engine(ctx)
    for p in prompts(tiny):
        engine.submit(p, greedy(tiny), max_tokens=50)
    engine.step()
    engine.cancel_all()
    events = engine.step()
    assert sum(e.finish == FR.CANCELLED for e in events) == len(prompts(tiny))
    assert not engine.has_work and kv_clean(engine, ctx)


def test_a_failing_sampler_ends_only_its_request(tiny: lb.Model, make_tiny_ctx) -> None:
    class Boom:
        def apply(self, candidates):
            raise RuntimeError("boom")

    ctx = make_tiny_ctx(n_seq_max=3)
    engine = _core.Engine(ctx)
    ps = prompts(tiny)
    ok = engine.submit(ps[0], greedy(tiny), max_tokens=4)
    bad = engine.submit(ps[1], lb.SamplerChain().add_custom(Boom()).add_greedy(), max_tokens=4)
    # A chain that never selects a token fails when it samples.
    none = engine.submit(ps[2], lb.SamplerChain().add_top_k(5), max_tokens=4)
    failed = {}
    tokens: dict[int, list[int]] = {}
    while engine.has_work:
        for ev in engine.step():
            if ev.finish == FR.ERROR:
                failed[ev.request] = ev.error
            elif ev.token >= 0:
                tokens.setdefault(ev.request, []).append(ev.token)
    assert set(failed) == {bad, none}
    assert "boom" in failed[bad] and "selected no token" in failed[none]
    assert tokens[ok] == greedy_alone(tiny, ps[0], 4)
    assert kv_clean(engine, ctx)


def test_python_sampler_and_logits_rows(tiny: lb.Model, make_tiny_ctx) -> None:
    class Argmax:
        def apply(self, candidates):
            return int(np.argmax(candidates["logit"]))

    ctx = make_tiny_ctx(n_seq_max=2)
    engine = _core.Engine(ctx)
    p = prompts(tiny)[0]
    a = engine.submit(p, no_eog(tiny).add_custom(Argmax()), max_tokens=4, return_logits=True)
    b = engine.submit(p[:-1], greedy(tiny), max_tokens=4)
    rows: list[np.ndarray] = []
    tokens: dict[int, list[int]] = {}
    while engine.has_work:
        for ev in engine.step():
            tokens.setdefault(ev.request, []).append(ev.token)
            if ev.request == a:
                assert ev.logits is not None and ev.logits.shape == (tiny.vocab.n_tokens,)
                rows.append(ev.logits)
            else:
                assert ev.logits is None
    expected = greedy_alone(tiny, p, 4)
    masked = [np.where(np.isin(np.arange(len(r)), eog_tokens(tiny)), -np.inf, r) for r in rows]
    assert tokens[a] == expected == [int(np.argmax(r)) for r in masked]
    assert tokens[b] == greedy_alone(tiny, p[:-1], 4)


def test_full_context_ends_one_sequence_with_length(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_ctx=512, n_seq_max=2)
    engine = _core.Engine(ctx)
    n_ctx_seq = engine.n_ctx_seq
    long_prompt = (prompts(tiny)[0] * 200)[: n_ctx_seq - 5]
    short = prompts(tiny)[1]
    full = engine.submit(long_prompt, greedy(tiny))  # no max_tokens: until full
    other = engine.submit(short, greedy(tiny), max_tokens=12)
    tokens, finish, _ = run(engine)
    assert finish[full] == FR.LENGTH
    # Positions n_ctx_seq-5 .. n_ctx_seq-1 take five generated tokens; the sixth needs no cell.
    assert len(tokens[full]) == 6
    assert finish[other] == FR.LENGTH and tokens[other] == greedy_alone(tiny, short, 12)
    assert kv_clean(engine, ctx)


def test_shared_prefix_is_copied_not_evaluated(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=3)
    engine = _core.Engine(ctx, min_shared_prefix=8)
    system = tiny.vocab.tokenize("You are a helpful assistant who answers every question briefly and politely.")
    assert len(system) >= 12
    a = system + tiny.vocab.tokenize(" What is the capital of France?", add_special=False)
    b = system + tiny.vocab.tokenize(" Name a colour.", add_special=False)
    c = tiny.vocab.tokenize("Unrelated prompt")
    ids = [engine.submit(p, greedy(tiny), max_tokens=5) for p in (a, b, c)]
    tokens, _, _ = run(engine)
    stats = engine.stats
    common = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)  # the system prompt and a bit more
    assert common >= len(system)
    assert stats["prompt_tokens_shared"] == common
    assert stats["prompt_tokens_evaluated"] == len(a) + len(b) + len(c) - common
    for rid, p in zip(ids, (a, b, c)):
        assert tokens[rid] == greedy_alone(tiny, p, 5)
    assert kv_clean(engine, ctx)


def test_no_sharing_when_disabled(tiny: lb.Model, make_tiny_ctx) -> None:
    engine = _core.Engine(make_tiny_ctx(n_seq_max=2), min_shared_prefix=0)
    p = prompts(tiny)[0] * 4
    for _ in range(2):
        engine.submit(p, greedy(tiny), max_tokens=2)
    run(engine)
    assert engine.stats["prompt_tokens_shared"] == 0
    assert engine.stats["prompt_tokens_evaluated"] == 2 * len(p)



def test_a_finished_request_leaves_its_prompt_for_the_next(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=3)
    engine = _core.Engine(ctx)
    first = prompts(tiny)[1]
    rid = engine.submit(first, greedy(tiny), max_tokens=4)
    tokens, _, _ = run(engine)
    # The prompt and the three generated tokens that were decoded stay in slot 0.
    kept = len(first) + 3
    assert engine.cached_tokens == [kept, 0, 0] and kv_clean(engine, ctx)
    # A follow-up (the conversation so far plus more) goes to that slot and evaluates only the rest.
    follow = first + tokens[rid] + tiny.vocab.tokenize(" and then", add_special=False)
    rid2 = engine.submit(follow, greedy(tiny), max_tokens=5)
    other = engine.submit(prompts(tiny)[3], greedy(tiny), max_tokens=5)
    tokens, _, _ = run(engine)
    assert engine.stats["prompt_tokens_cached"] == kept
    assert engine.stats["prompt_tokens_evaluated"] == len(first) + len(follow) - kept + len(prompts(tiny)[3])
    assert tokens[rid2] == greedy_alone(tiny, follow, 5)
    assert tokens[other] == greedy_alone(tiny, prompts(tiny)[3], 5)
    assert kv_clean(engine, ctx)
    engine.clear_cache()
    assert engine.cached_tokens == [0, 0, 0] and all(ctx.seq_pos_max(s) == -1 for s in range(3))


def test_an_unrelated_prompt_cuts_the_kept_cells(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=1)
    engine = _core.Engine(ctx)
    a, b = prompts(tiny)[0], prompts(tiny)[4]
    engine.submit(a + a, greedy(tiny), max_tokens=3)
    run(engine)
    rid = engine.submit(b, greedy(tiny), max_tokens=4)
    tokens, _, _ = run(engine)
    shared = next(i for i, (x, y) in enumerate(zip(a + a, b)) if x != y)  # the BOS token at most
    assert engine.stats["prompt_tokens_cached"] == shared
    assert tokens[rid] == greedy_alone(tiny, b, 4)
    assert engine.cached_tokens == [len(b) + 3] and kv_clean(engine, ctx)


def test_kept_cells_changed_from_outside_are_not_trusted(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=1)
    engine = _core.Engine(ctx)
    p = prompts(tiny)[2]
    engine.submit(p, greedy(tiny), max_tokens=2)
    run(engine)
    ctx.seq_rm(0, 2, -1)  # someone used the context directly
    rid = engine.submit(p + p, greedy(tiny), max_tokens=4)
    tokens, _, _ = run(engine)
    assert engine.stats["prompt_tokens_cached"] == 0
    assert tokens[rid] == greedy_alone(tiny, p + p, 4)


def test_cache_finished_off_frees_every_cell(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    engine = _core.Engine(ctx, cache_finished=False)
    for p in prompts(tiny)[:3]:
        engine.submit(p, greedy(tiny), max_tokens=3)
    run(engine)
    engine.submit(prompts(tiny)[0], greedy(tiny), max_tokens=3)
    run(engine)
    assert engine.stats["prompt_tokens_cached"] == 0 and engine.cached_tokens == [0, 0]
    assert all(ctx.seq_pos_max(s) == -1 for s in range(2))

def test_small_prompt_budget_keeps_generation_going(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    engine = _core.Engine(ctx, max_prompt_tokens_per_step=4)
    short = prompts(tiny)[1]
    first = engine.submit(short, greedy(tiny), max_tokens=30)
    while not any(ev.request == first for ev in engine.step()):
        pass
    long_prompt = prompts(tiny)[0] * 5
    second = engine.submit(long_prompt, greedy(tiny), max_tokens=3)
    got_first = 0
    while True:
        events = engine.step()
        got_first += sum(ev.request == first for ev in events)
        if any(ev.request == second for ev in events):
            break
    # While the long prompt went in 4 tokens a step, the first request got a token every step.
    assert got_first >= len(long_prompt) // 4 - 1
    run(engine)


def test_engine_on_a_closed_context_raises(tiny: lb.Model, make_tiny_ctx) -> None:
    ctx = make_tiny_ctx(n_seq_max=2)
    engine = _core.Engine(ctx)
    engine.submit(prompts(tiny)[0], greedy(tiny), max_tokens=3)
    ctx.close()
    with pytest.raises(lb.ClosedError):
        engine.step()
    engine.close()
    assert not engine.has_work
