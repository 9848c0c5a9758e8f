"""Samplers: chains of llama.cpp's samplers, Python samplers, the fast paths for greedy, logit
bias and top-k chains, and grammar-constrained sampling.

The tests run a tiny random-weight llama model (tests/tiny_model.py), where a decode takes
milliseconds; references are computed independently in the test (numpy's argmax), never
copied from an earlier run. Some tests use the real SmolLM2 and Gemma 3, where the behaviour
must hold for a real model's output (grammar-constrained answers, greedy decoding, the fast
paths against llama.cpp's own).
"""

from __future__ import annotations

import numpy as np
import pytest

import llamabind as lb
from testutil import N_THREADS


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
