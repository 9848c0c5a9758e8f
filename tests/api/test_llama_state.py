"""Llama's evaluated state: prompt-prefix reuse measured with llama.cpp's own counters
(perf()["n_p_eval"]), the RAM and disk state caches, save_state/load_state, and the
low-level-style methods reset, eval, sample and generate, against argmax of the raw logits
computed with the low-level API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from llamabind import Llama, LlamaGrammar, LogitsProcessorList, StoppingCriteriaList
from llamabind.llama_cache import LlamaDiskCache, LlamaRAMCache
from testutil import N_THREADS, greedy_reference_rows, llama_fixture, make_llama

PROMPT = "The history of the Roman Empire"
LONG_PROMPT = (
    "Rome began as a small settlement on the Tiber. Over centuries it grew into a republic, "
    "governed by elected magistrates and a senate, and then into an empire ruled by emperors. "
    "Its roads, laws, language and architecture shaped Europe for a thousand years. "
) * 2


def _llama(path: Path, **kw) -> Llama:
    """make_llama with llama.cpp's perf counters on (prompt_evals reads them)."""
    return make_llama(path, no_perf=False, **kw)


smol = llama_fixture("smollm2_path", no_perf=False)


def greedy_reference(model: lb.Model, tokens: list[int], n: int) -> list[int]:
    """Greedy continuation by argmax of the raw logits, one decode per token (low-level API),
    end-of-generation tokens included."""
    return greedy_reference_rows(model, tokens, n, stop_at_eog=False)[0]


def last_logits(model: lb.Model, tokens: list[int]) -> np.ndarray:
    with lb.Context(model, n_ctx=512, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                    flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
        ctx.decode_tokens(tokens, pos0=0)
        return ctx.logits_ith(-1, copy=True)


def text(out: dict) -> str:
    return out["choices"][0]["text"]


def fresh(llm: Llama) -> None:
    """An empty context. reset() alone leaves the KV cache holding the old tokens, and the
    next evaluation at position 0 fails (see test_reset_forgets_the_evaluated_tokens)."""
    llm.reset()
    llm.ctx.memory_clear()


def prompt_evals(llm: Llama) -> int:
    """Tokens llama.cpp evaluated in multi-token batches since the last perf_reset (llama.cpp
    reports at least 1)."""
    return int(llm.ctx.perf()["n_p_eval"])


# ---------------------------------------------------------------------------------------
# Prefix reuse


def test_extending_prompt_evaluates_only_the_new_tokens(smol: Llama, smollm2: lb.Model) -> None:
    p1 = smol.tokenize(PROMPT.encode())
    gen = greedy_reference(smollm2, p1, 8)
    first = smol.create_completion(PROMPT, max_tokens=8, temperature=0.0)
    assert text(first) == smollm2.vocab.detokenize(gen).decode()
    second_prompt = PROMPT + text(first) + " In the third century, the empire"
    p2 = smol.tokenize(second_prompt.encode())
    # The context holds the prompt and every generated token but the last (which was never
    # fed back); that last one is evaluated with the new tokens.
    held = p1 + gen[:-1]
    assert p2[: len(held)] == held
    smol.ctx.perf_reset()
    second = smol.create_completion(second_prompt, max_tokens=4, temperature=0.0)
    perf = smol.ctx.perf()
    assert perf["n_p_eval"] == len(p2) - len(held) >= 2
    assert perf["n_eval"] == 3  # the generated tokens fed back one at a time
    assert text(second) == smollm2.vocab.detokenize(greedy_reference(smollm2, p2, 4)).decode()
    # Exactly the same prompt again: only the last prompt token is evaluated again.
    smol.ctx.perf_reset()
    again = smol.create_completion(second_prompt, max_tokens=4, temperature=0.0)
    assert text(again) == text(second)
    assert smol.ctx.perf()["n_p_eval"] <= 1


def test_reset_forgets_the_evaluated_tokens(smollm2_path: Path) -> None:
    """llama-cpp-python's reset() sets n_tokens = 0 and its eval() removes the stale KV cells
    (kv_cache_seq_rm(-1, n_tokens, -1)) before decoding. Here _prepare only removes cells
    below self.n_tokens, so after reset() the KV cache still holds the old tokens and the
    next decode at position 0 fails with InvalidBatchError (inconsistent positions)."""
    with _llama(smollm2_path, n_ctx=128) as llm:
        first = llm.create_completion(PROMPT, max_tokens=2, temperature=0.0)
        assert llm.n_tokens > 0
        llm.reset()
        assert llm.n_tokens == 0 and len(llm.eval_tokens) == 0
        llm.ctx.perf_reset()
        assert text(llm.create_completion(PROMPT, max_tokens=2, temperature=0.0)) == text(first)
        assert prompt_evals(llm) == len(llm.tokenize(PROMPT.encode()))
        llm.reset()
        llm.eval(llm.tokenize(PROMPT.encode()))
        assert llm.n_tokens == len(llm.tokenize(PROMPT.encode()))


def test_multi_turn_chat_does_not_reprocess_the_history(smol: Llama) -> None:
    messages = [{"role": "user", "content": "What is 2+2?"}]
    first = smol.create_chat_completion(messages, max_tokens=24, temperature=0.0)
    new_turn = "And what is 3+3?"
    messages += [first["choices"][0]["message"], {"role": "user", "content": new_turn}]
    smol.ctx.perf_reset()
    second = smol.create_chat_completion(messages, max_tokens=4, temperature=0.0)
    history = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    new_tokens = second["usage"]["prompt_tokens"] - history
    assert new_tokens > len(smol.tokenize(new_turn.encode(), add_bos=False))
    # At most one token of the first turn (its last generated one) is evaluated again.
    assert prompt_evals(smol) <= new_tokens + 1
    assert prompt_evals(smol) < second["usage"]["prompt_tokens"] // 2


# ---------------------------------------------------------------------------------------
# State caches


@pytest.fixture(scope="module")
def cache_reference(smollm2_path: Path) -> tuple[str, str, int]:
    """(first prompt, extended prompt, greedy text of the extended prompt without a cache)."""
    extended = LONG_PROMPT + "In the end,"
    with _llama(smollm2_path, n_ctx=256) as llm:
        out = llm.create_completion(extended, max_tokens=6, temperature=0.0)
        n = len(llm.tokenize(extended.encode()))
    return LONG_PROMPT, extended, (text(out), n)  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_cache_restores_a_state_instead_of_recomputing(kind: str, smollm2_path: Path, tmp_path: Path,
                                                       cache_reference) -> None:
    first, extended, (expected, n_extended) = cache_reference
    cache = LlamaRAMCache() if kind == "ram" else LlamaDiskCache(tmp_path / "states")
    with _llama(smollm2_path, n_ctx=256) as llm:
        llm.set_cache(cache)
        assert llm.cache is cache
        llm.create_completion(first, max_tokens=2, temperature=0.0)
        # Move the context away from the first prompt; only the cache still holds it.
        llm.create_completion("Unrelated words about cooking pasta", max_tokens=2, temperature=0.0)
        assert cache.cache_size > 0
        if kind == "disk":
            assert len(list((tmp_path / "states").glob("*.npz"))) == 2
        llm.ctx.perf_reset()
        out = llm.create_completion(extended, max_tokens=6, temperature=0.0)
        n_first = len(llm.tokenize(first.encode()))
        evaluated = prompt_evals(llm)
    assert text(out) == expected
    # The new tokens, give or take the last cached one (which may be evaluated again to
    # refresh its logits): far fewer than the whole prompt.
    assert evaluated <= n_extended - n_first + 2 < n_extended // 2
    # Without the cache the same sequence evaluates the whole extended prompt.
    with _llama(smollm2_path, n_ctx=256) as llm:
        llm.create_completion(first, max_tokens=2, temperature=0.0)
        llm.create_completion("Unrelated words about cooking pasta", max_tokens=2, temperature=0.0)
        llm.ctx.perf_reset()
        assert text(llm.create_completion(extended, max_tokens=6, temperature=0.0)) == expected
        assert prompt_evals(llm) == n_extended


def test_disk_cache_persists_across_instances(smollm2_path: Path, tmp_path: Path, cache_reference) -> None:
    first, extended, (expected, n_extended) = cache_reference
    with _llama(smollm2_path, n_ctx=256) as llm:
        llm.set_cache(LlamaDiskCache(tmp_path))
        llm.create_completion(first, max_tokens=2, temperature=0.0)
    with _llama(smollm2_path, n_ctx=256) as llm:
        llm.set_cache(LlamaDiskCache(tmp_path))
        llm.ctx.perf_reset()
        assert text(llm.create_completion(extended, max_tokens=6, temperature=0.0)) == expected
        assert prompt_evals(llm) < n_extended // 2
        llm.set_cache(None)
        assert llm.cache is None


# ---------------------------------------------------------------------------------------
# save_state / load_state


def test_save_and_load_state_round_trip(smol: Llama, smollm2: lb.Model, smollm2_path: Path) -> None:
    p1 = smol.tokenize(PROMPT.encode())
    expected = smollm2.vocab.detokenize(greedy_reference(smollm2, p1, 6)).decode()
    fresh(smol)
    smol.eval(p1)
    state = smol.save_state()
    assert state.n_tokens == len(p1) and list(state.input_ids[: len(p1)]) == p1
    assert state.llama_state_size == len(state.llama_state) > 0
    smol.create_completion("Something else entirely, about cooking", max_tokens=3, temperature=0.0)
    smol.load_state(state)
    assert smol.n_tokens == len(p1) and list(smol.eval_tokens) == p1
    smol.ctx.perf_reset()
    assert text(smol.create_completion(p1, max_tokens=6, temperature=0.0)) == expected
    assert prompt_evals(smol) <= 2  # the restored tokens were not evaluated again
    # A state loads into another Llama on the same model.
    with _llama(smollm2_path) as other:
        other.load_state(state)
        assert text(other.create_completion(p1, max_tokens=6, temperature=0.0)) == expected


def test_load_state_then_sample_continues_from_the_saved_logits(smol: Llama, smollm2: lb.Model) -> None:
    """llama.cpp's state holds the last logits; llama-cpp-python samples from them right
    after load_state. Here sample() raises OutOfRangeError ('the last decode produced no
    outputs'): Context.state_set resets the output count to 0."""
    p1 = smol.tokenize(PROMPT.encode())
    best = int(np.argmax(last_logits(smollm2, p1)))
    fresh(smol)
    smol.eval(p1)
    state = smol.save_state()
    assert smol.sample(temp=0.0) == best
    smol.eval(smol.tokenize(b" and more tokens", add_bos=False))
    smol.load_state(state)
    assert smol.sample(temp=0.0) == best


def test_state_of_another_model_raises_state_error(smol: Llama, smollm2: lb.Model, gemma3_path: Path) -> None:
    with _llama(gemma3_path, n_ctx=256) as gemma:
        gemma.eval(gemma.tokenize(b"Hello"))
        foreign = gemma.save_state()
    smol.eval(smol.tokenize(b"Hello there"))
    with pytest.raises(lb.StateError):
        smol.load_state(foreign)
    p1 = smol.tokenize(PROMPT.encode())
    expected = smollm2.vocab.detokenize(greedy_reference(smollm2, p1, 4)).decode()
    assert text(smol.create_completion(PROMPT, max_tokens=4, temperature=0.0)) == expected


# ---------------------------------------------------------------------------------------
# eval / sample / generate


def test_eval_and_sample(smol: Llama, smollm2: lb.Model) -> None:
    p1 = smol.tokenize(PROMPT.encode())
    row = last_logits(smollm2, p1)
    order = np.argsort(-row)
    fresh(smol)
    smol.eval(p1[:3])
    smol.eval(p1[3:])
    assert smol.n_tokens == len(p1) and list(smol.eval_tokens) == p1
    assert smol.sample(temp=0.0) == order[0]
    assert smol.sample(temp=1.0, top_k=1) == order[0]

    def forbid_best(input_ids, scores):
        scores = scores.copy()
        scores[order[0]] = -np.inf
        return scores

    assert smol.sample(temp=0.0, logits_processor=LogitsProcessorList([forbid_best])) == order[1]
    piece = smollm2.vocab.token_to_piece(int(order[3])).decode()
    grammar = LlamaGrammar.from_string(f"root ::= {piece!r}".replace("'", '"'))
    assert smol.sample(temp=0.0, grammar=grammar) == order[3]
    with pytest.raises(ValueError, match="exceed"):
        smol.eval([p1[0]] * (smol.n_ctx() - smol.n_tokens + 1))


def test_generate_yields_greedy_tokens_and_accepts_sent_tokens(smol: Llama, smollm2: lb.Model) -> None:
    p1 = smol.tokenize(PROMPT.encode())
    ref = greedy_reference(smollm2, p1, 6)
    gen = smol.generate(p1, temp=0.0)
    assert [next(gen) for _ in range(6)] == ref
    gen.close()
    # reset=False appends to what is evaluated.
    fresh(smol)
    smol.eval(p1[:2])
    gen = smol.generate(p1[2:], temp=0.0, reset=False)
    assert [next(gen) for _ in range(3)] == ref[:3]
    gen.close()
    # send(tokens): the sampled token and the sent ones are evaluated before the next sample.
    extra = smol.tokenize(b" and the", add_bos=False)
    gen = smol.generate(p1, temp=0.0)
    first = next(gen)
    after = gen.send(extra)
    gen.close()
    assert first == ref[0]
    assert after == int(np.argmax(last_logits(smollm2, p1 + [first] + extra)))
    # reset=True with a prompt extending the evaluated tokens reuses them.
    smol.ctx.perf_reset()
    gen = smol.generate(p1 + [first] + extra, temp=0.0)
    assert next(gen) == after
    gen.close()
    assert prompt_evals(smol) <= len(extra) + 1


def test_generate_stopping_criteria(smol: Llama, smollm2: lb.Model) -> None:
    p1 = smol.tokenize(PROMPT.encode())
    ref = greedy_reference(smollm2, p1, 3)
    stop_after_3 = StoppingCriteriaList([lambda ids, logits: len(ids) - len(p1) >= 3])
    tokens = list(smol.generate(p1, temp=0.0, stopping_criteria=stop_after_3))
    # The generator ends by itself, after 2 or 3 tokens depending on whether input_ids
    # already holds the token just sampled (llama-cpp-python releases differ).
    assert tokens == ref[: len(tokens)] and len(tokens) in (2, 3)


def test_generate_with_seed_and_cancel_event(smol: Llama) -> None:
    import threading

    p1 = smol.tokenize(PROMPT.encode())

    def take(seed: int) -> list[int]:
        gen = smol.generate(p1, temp=1.0, seed=seed)
        out = [next(gen) for _ in range(5)]
        gen.close()
        return out

    assert take(3) == take(3)
    cancel = threading.Event()
    gen = smol.generate(p1, temp=0.0, cancel=cancel)
    next(gen)
    cancel.set()
    with pytest.raises(lb.AbortedError):
        next(gen)
    assert text(smol.create_completion(PROMPT, max_tokens=2, temperature=0.0))


def test_logits_all_keeps_every_row(smollm2_path: Path, smollm2: lb.Model) -> None:
    p1 = smollm2.vocab.tokenize(PROMPT)
    with lb.Context(smollm2, n_ctx=128, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                    flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
        ctx.decode_tokens(p1, pos0=0, all_logits=True)
        rows = ctx.logits(copy=True)
    with _llama(smollm2_path, n_ctx=128, logits_all=True) as llm:
        llm.eval(p1)
        assert llm.scores.shape == (llm.n_ctx(), llm.n_vocab())
        assert np.allclose(llm.scores[: len(p1)], rows, atol=1e-3)
        assert len(llm.eval_logits) == len(p1)
        assert np.allclose(np.array(llm.eval_logits), rows, atol=1e-3)
