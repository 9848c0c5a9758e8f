"""The C++ speculative decoding layer through _core: drafters, Speculator steps (greedy output
equal to plain decoding, rejected cells removed, drafts handed in, Python drafters and
samplers), the adaptive tuner's choices, and the vocabulary check."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from testutil import N_THREADS


def _ctx(model: lb.Model, **kw: object) -> lb.Context:
    params: dict[str, object] = {"n_ctx": 512, "n_threads": N_THREADS, "n_threads_batch": N_THREADS}
    params.update(kw)
    return lb.Context(model, **params)


def _plain(model: lb.Model, prompt: list[int], n: int, chain: lb.SamplerChain | None = None) -> list[int]:
    """Tokens by one decode per token, the chain sampling each from the last logits."""
    chain = chain or lb.SamplerChain().add_greedy()
    out: list[int] = []
    with _ctx(model) as ctx:
        ctx.decode_tokens(prompt, pos0=0)
        while len(out) < n:
            t = chain.sample(ctx, -1)
            if model.vocab.is_eog(t):
                break
            out.append(t)
            ctx.decode_tokens([t], pos0=len(prompt) + len(out) - 1)
    return out


def _speculate(spec: lb.Speculator, ctx: lb.Context, prompt: list[int], n: int,
               chain: lb.SamplerChain | None = None, drafts: object = None) -> tuple[list[int], list[lb.StepResult]]:
    chain = chain or lb.SamplerChain().add_greedy()
    ctx.decode_tokens(prompt, pos0=0)
    spec.begin(prompt)
    out: list[int] = []
    steps = []
    while len(out) < n:
        d = drafts(spec.tokens) if callable(drafts) else None
        r = spec.step(chain, n - len(out), d)
        steps.append(r)
        out += r.tokens
        # Sequence 0 holds exactly the evaluated tokens: rejected drafts' cells are gone.
        assert ctx.seq_pos_max(0) == r.n_evaluated - 1
        assert spec.n_evaluated == r.n_evaluated
        if r.eog:
            break
    return out, steps


PROMPT = ("<|im_start|>user\nCopy this list exactly: apple, banana, cherry, date, elderberry, fig, grape, "
          "honeydew, kiwi, lemon.<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def smol_prompt(smollm2: lb.Model) -> list[int]:
    return smollm2.vocab.tokenize(PROMPT, parse_special=True)


@pytest.mark.parametrize("adaptive", [False, True])
def test_ngram_greedy_equals_plain(smollm2: lb.Model, smol_prompt: list[int], adaptive: bool) -> None:
    expected = _plain(smollm2, smol_prompt, 40)
    with _ctx(smollm2) as ctx:
        spec = lb.Speculator(ctx, lb.NgramDrafter(3), n_draft=6, adaptive=adaptive)
        out, steps = _speculate(spec, ctx, smol_prompt, 40)
    assert out == expected
    stats = spec.stats
    assert stats["n_emitted"] == len(out) == sum(len(r.tokens) for r in steps)
    if not adaptive:  # (the adaptive mode drafts only where this machine's timings say it pays)
        assert stats["n_accepted"] > 10  # the answer copies the prompt: most drafts are right
        assert max(len(r.tokens) for r in steps) > 2  # several tokens from one decode


def test_draft_model_greedy_equals_plain(smollm2: lb.Model, smol_prompt: list[int]) -> None:
    """SmolLM2 drafting for itself: every draft is the target's own greedy choice."""
    expected = _plain(smollm2, smol_prompt, 32)
    with _ctx(smollm2) as ctx, _ctx(smollm2) as dctx:
        drafter = lb.ModelDrafter(dctx, smollm2)
        spec = lb.Speculator(ctx, drafter, n_draft=4, adaptive=False)
        out, steps = _speculate(spec, ctx, smol_prompt, 32)
        # The draft context follows: it holds a prefix of the sequence plus its last draft.
        held = drafter.held.tolist()
        tokens = spec.tokens.tolist()
        assert held[: len(tokens) - 2] == tokens[: len(held)][: len(tokens) - 2]
    assert out == expected
    assert spec.stats["acceptance"] > 0.9
    assert all(r.n_drafted == min(4, 32 - sum(len(s.tokens) for s in steps[:i]) - 1)
               for i, r in enumerate(steps) if i > 0)


def test_rejected_drafts_leave_no_cells(tiny: lb.Model, toks: list[int]) -> None:
    """Drafts handed in that are always wrong: every step emits the target's own token and the
    cells of the drafts are removed (the helper checks seq_pos_max after each step)."""
    expected = _plain(tiny, toks, 12)
    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, None, n_draft=4, adaptive=False)
        wrong = lambda toks: [(int(toks[-1]) + 1 + i) % 32000 for i in range(4)]  # noqa: E731
        out, steps = _speculate(spec, ctx, toks, 12, drafts=wrong)
    assert out == expected
    assert all(len(r.tokens) == 1 for r in steps)


def test_drafts_handed_in_and_python_drafter(tiny: lb.Model, toks: list[int]) -> None:
    """Right drafts (the plain output itself) are all accepted, whether handed to step() or
    returned by a Python callable given as the drafter; the callable sees the sequence with
    its pending token."""
    expected = _plain(tiny, toks, 16)
    full = toks + expected
    seen: list[np.ndarray] = []

    def oracle(tokens: np.ndarray) -> list[int]:
        seen.append(tokens.copy())
        return full[len(tokens): len(tokens) + 5]

    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, None, n_draft=5, adaptive=False)
        out, steps = _speculate(spec, ctx, toks, 16, drafts=lambda toks: full[len(toks): len(toks) + 5])
        assert out == expected and len(steps) <= 5
    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, oracle, n_draft=5, adaptive=False)
        assert spec.drafter is oracle
        out, _ = _speculate(spec, ctx, toks, 16)
    assert out == expected
    assert spec.stats["acceptance"] == 1.0
    assert seen[0].dtype == np.int32 and seen[0].tolist() == full[: len(seen[0])]


def test_python_drafter_errors_propagate(tiny: lb.Model, toks: list[int]) -> None:
    def broken(tokens: np.ndarray) -> list[int]:
        raise RuntimeError("draft failed")

    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, broken, n_draft=3, adaptive=False)
        ctx.decode_tokens(toks, pos0=0)
        spec.begin(toks)
        chain = lb.SamplerChain().add_greedy()
        spec.step(chain, 8)  # the first token needs no draft
        with pytest.raises(RuntimeError, match="draft failed"):
            spec.step(chain, 8)
        with pytest.raises(lb.OutOfRangeError):
            spec.step(chain, 8, [10**6])
        # Still usable.
        assert len(spec.step(chain, 8, []).tokens) == 1


def test_python_sampler_sees_the_tokens_its_draw_follows(tiny: lb.Model, toks: list[int]) -> None:
    """A sampler written in Python runs inside the step (with the GIL) once per emitted token,
    and Speculator.tokens is then the sequence the draw continues."""
    expected = _plain(tiny, toks, 10)
    full = toks + expected
    calls: list[list[int]] = []
    spec_box: list[lb.Speculator] = []

    class Recorder:
        def apply(self, candidates: np.ndarray) -> None:
            calls.append(spec_box[0].tokens.tolist())

    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, None, n_draft=4, adaptive=False)
        spec_box.append(spec)
        chain = lb.SamplerChain().add_custom(Recorder()).add_greedy()
        out, _ = _speculate(spec, ctx, toks, 10, chain=chain,
                            drafts=lambda toks: full[len(toks): len(toks) + 4])
    assert out == expected
    assert len(calls) == len(out)
    assert all(c == full[: len(c)] and len(c) == len(toks) + i for i, c in enumerate(calls))


def test_step_releases_the_gil(smollm2: lb.Model, smol_prompt: list[int]) -> None:
    ticks = 0
    done = threading.Event()

    def heartbeat() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    with _ctx(smollm2) as ctx:
        spec = lb.Speculator(ctx, lb.NgramDrafter(3), n_draft=8, adaptive=False)
        ctx.decode_tokens(smol_prompt, pos0=0)
        spec.begin(smol_prompt)
        chain = lb.SamplerChain().add_greedy()
        spec.step(chain, 64)
        t = threading.Thread(target=heartbeat)
        t.start()
        try:
            start = time.perf_counter()
            while time.perf_counter() - start < 0.5:
                spec.step(chain, 64)
        finally:
            done.set()
            t.join()
    assert ticks > 20


def test_context_full_and_budget(tiny: lb.Model, toks: list[int]) -> None:
    """Drafts never run past the context or the step's token budget; a full context raises."""
    with _ctx(tiny, n_ctx=256) as ctx:
        spec = lb.Speculator(ctx, lb.NgramDrafter(1), n_draft=8, adaptive=False)
        ctx.decode_tokens(toks, pos0=0)
        spec.begin(toks)
        chain = lb.SamplerChain().add_greedy()
        while spec.n_evaluated < ctx.n_ctx:
            r = spec.step(chain, 3)
            assert 1 <= len(r.tokens) + r.eog <= 3 and r.n_drafted <= 2
            assert ctx.seq_pos_max(0) == r.n_evaluated - 1
        with pytest.raises(lb.ContextFullError):
            spec.step(chain, 3)
        with pytest.raises(ValueError, match="max_tokens"):
            spec.step(chain, 0)


def test_resume_with_pending_token(tiny: lb.Model, toks: list[int]) -> None:
    """begin(evaluated, pending) resumes a sequence whose last emitted token is not evaluated
    (also how llama.cpp's examples start: the prompt's last token pending)."""
    expected = _plain(tiny, toks, 8)
    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, lb.NgramDrafter(2), n_draft=3)
        ctx.decode_tokens(toks[:-1], pos0=0)
        spec.begin(toks[:-1], toks[-1])
        chain = lb.SamplerChain().add_greedy()
        out: list[int] = []
        while len(out) < 8:
            out += spec.step(chain, 8 - len(out)).tokens
    assert out == expected


def test_closed_and_bad_arguments(tiny: lb.Model) -> None:
    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, lb.NgramDrafter())
        spec.close()
        spec.close()
        with pytest.raises(lb.ClosedError):
            spec.begin([1, 2])
        with pytest.raises(TypeError, match="drafter must be"):
            lb.Speculator(ctx, 42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="n_draft"):
            lb.Speculator(ctx, None, n_draft=-1)
    with pytest.raises(ValueError, match="min_ngram"):
        lb.NgramDrafter(max_ngram=1, min_ngram=2)
    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, None)
    with pytest.raises(lb.ClosedError):
        spec.begin([1])
        spec.step(lb.SamplerChain().add_greedy(), 4)


def test_ngram_drafter() -> None:
    d = lb.NgramDrafter(max_ngram=3, min_ngram=1)
    #            0  1  2  3  4  5  6  7  8  9
    seq = [1, 2, 3, 4, 5, 9, 2, 3, 4, 7, 2, 3]
    # The latest earlier "2 3" (longest n first: "7 2 3" occurs nowhere else) is at 6: "4 7 2 3"
    assert d.draft(seq, 3) == [4, 7, 2]
    assert d.draft(seq, 1) == [4]
    assert d.draft([5, 6, 7], 4) == []
    assert d.draft([1, 2, 1], 4) == [2, 1]  # up to the end of the sequence
    # Following a stretch: once the sequence reproduces what was proposed, the next draft
    # continues from there without a search.
    text = list(range(100, 140))
    d = lb.NgramDrafter(max_ngram=2)
    assert d.draft(text + [100, 101], 4) == [102, 103, 104, 105]
    assert d.draft(text + [100, 101, 102, 103, 104], 4) == [105, 106, 107, 108]


def test_vocab_check(qwen05_path: Path, qwen15_path: Path, gemma3_path: Path, smollm2: lb.Model) -> None:
    q05 = lb.Model(str(qwen05_path), vocab_only=True)
    q15 = lb.Model(str(qwen15_path), vocab_only=True)
    gemma = lb.Model(str(gemma3_path), vocab_only=True)
    lb.check_draft_vocab(q15, q05)
    lb.check_draft_vocab(q05, q15)
    with pytest.raises(ValueError, match=r"cannot draft for .*qwen.*(vocabulary|BOS|EOS|token)"):
        lb.check_draft_vocab(q15, gemma)
    with pytest.raises(ValueError, match="cannot draft for"):
        lb.check_draft_vocab(smollm2, q05)
    with _ctx(smollm2) as ctx, pytest.raises(ValueError, match="cannot draft for"):
        lb.ModelDrafter(ctx, q05)


def test_adaptive_stops_drafting_when_drafts_are_wrong(tiny: lb.Model, toks: list[int]) -> None:
    """Drafts that are always rejected cost a batch each: the adaptive mode soon verifies none
    (plain decoding), trying again only now and then."""
    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, None, n_draft=6, adaptive=True)
        wrong = lambda toks: [(int(toks[-1]) + 1 + i) % 32000 for i in range(6)]  # noqa: E731
        _, steps = _speculate(spec, ctx, toks, 120, drafts=wrong)
        est = spec.estimates()
    drafted = [r.n_drafted for r in steps]
    assert sum(1 for n in drafted[40:] if n > 0) <= 6, drafted
    assert len(est["verify_s"]) == 7 and est["expected_tokens"][0] == 1.0
    assert est["expected_tokens"][6] < 1.2


def test_adaptive_keeps_drafts_that_pay(tiny: lb.Model, toks: list[int]) -> None:
    expected = _plain(tiny, toks, 120)
    full = toks + expected
    with _ctx(tiny) as ctx:
        spec = lb.Speculator(ctx, None, n_draft=6, adaptive=True)
        out, steps = _speculate(spec, ctx, toks, 120, drafts=lambda toks: full[len(toks): len(toks) + 6])
    assert out == expected
    # Always right, and a batch of 7 costs this tiny model little more than one token: drafting wins.
    assert sum(len(r.tokens) for r in steps[-10:]) > 30


def test_catch_up_learns_acceptance_in_hindsight(smollm2: lb.Model, smol_prompt: list[int]) -> None:
    """In the adaptive mode (max_catch_up > 0) a draft model that catches up over generated
    tokens reports, for each, whether its greedy choice was the token that came. Reference:
    its argmax after each prefix, one token per decode in a context of its own."""
    gen = _plain(smollm2, smol_prompt, 40)
    assert len(gen) >= 20
    tokens = smol_prompt + gen
    for i in (4, 9, 15):  # tokens it would not have proposed
        tokens[len(smol_prompt) + i] = (tokens[len(smol_prompt) + i] + 7) % smollm2.vocab.n_tokens
    with _ctx(smollm2) as ref:
        ref.decode_tokens(smol_prompt, pos0=0)
        expected = []
        for j in range(len(smol_prompt), len(tokens)):
            expected.append(int(np.argmax(ref.logits_ith(-1))) == tokens[j])
            ref.decode_tokens([tokens[j]], pos0=j)
    with _ctx(smollm2) as dctx, _ctx(smollm2) as tctx:
        drafter = lb.ModelDrafter(dctx, smollm2, max_catch_up=64)
        spec = lb.Speculator(tctx, drafter, n_draft=4)
        spec.begin(smol_prompt)          # the drafter learns where the prompt ends
        drafter.draft(smol_prompt, 1)    # evaluates the prompt: nothing in hindsight
        assert drafter.last_hindsight == []
        drafter.draft(tokens, 2)         # catches up over the generated tokens
        seen = drafter.last_hindsight
    # Row i predicts generated token i + 1 (token 0 was predicted by the prompt's draft).
    assert len(seen) == len(gen) - 1
    agree = sum(a == b for a, b in zip(seen, expected[1:]))
    assert agree >= len(seen) - 1, (seen, expected[1:])  # a near tie may round the other way in a batch
    assert all(seen[i - 1] == 0 for i in (4, 9, 15))
    assert sum(seen) >= len(seen) // 2


def test_hindsight_moves_the_estimates() -> None:
    right, wrong = lb.DraftTuner(4), lb.DraftTuner(4)
    right.record_hindsight([1] * 30)
    wrong.record_hindsight([0] * 30)
    assert right.estimates(per_token=True)["expected_tokens"][4] > 4.5
    assert wrong.estimates(per_token=True)["expected_tokens"][4] < 1.2
    mixed = lb.DraftTuner(4)
    mixed.record_hindsight([1, 1, 0] * 10)  # runs of two: position 1 accepted 2/3, 2: 1/2, 3: never
    e = mixed.estimates(per_token=True)["expected_tokens"]
    assert 1.55 < e[1] < 1.75 and 0.25 < e[2] - e[1] < 0.4 and e[3] - e[2] < 0.1
