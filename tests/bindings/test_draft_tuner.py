"""DraftTuner, the adaptive mode's choice of draft lengths, driven with synthetic costs and
acceptance: the tokens per second it reaches are compared with plain decoding and with the
best fixed draft length, both computed here from the same costs."""

from __future__ import annotations

import random
from collections.abc import Callable

import llamabind as lb

V1 = 0.088  # seconds of one target token (Qwen2.5-Coder-1.5B on a 2-core Xeon)
N_TOKENS = 160


def verify_s(n: int) -> float:
    """A target decode of n tokens: each extra token costs a fifth of the first (about so on that Xeon)."""
    return V1 * (1.0 + 0.2 * (n - 1))


def accepting(p: float, seed: int) -> Callable[[int], int]:
    """Acceptance of a k-token draft: each position is accepted with chance p once the ones
    before it were (fixed seed)."""
    rng = random.Random(seed)

    def accepted(k: int) -> int:
        n = 0
        while n < k and rng.random() < p:
            n += 1
        return n
    return accepted


def simulate(tuner: lb.DraftTuner, draft_s: float, accepted: Callable[[int], int],
             first: list[int] | None = None) -> tuple[float, list[int]]:
    """Generates N_TOKENS with a draft model (cost per drafted token) the way Speculator does;
    `first` overrides the acceptance of the first drafts. Returns tokens per second and the
    draft length of every step."""
    first = list(first or [])
    tokens, seconds, lengths = 0, 0.0, []
    while tokens < N_TOKENS:
        k = tuner.choose(tuner.n_max, per_token=True)
        lengths.append(k)
        if k > 0:
            tuner.record_draft(k, k * draft_s)
            n = min(k, first.pop(0)) if first else accepted(k)
            tuner.record_acceptance(min(k, n + 1), n)
            seconds += k * draft_s
        else:
            n = 0
        tuner.record_verify(k + 1, verify_s(k + 1))
        seconds += verify_s(k + 1)
        tokens += n + 1
    return tokens / seconds, lengths


def best_fixed(draft_s: float, p: float, n_max: int) -> float:
    """Tokens per second of the best fixed draft length (0: plain), from the same costs."""
    def rate(k: int) -> float:
        return sum(p ** i for i in range(k + 1)) / (k * draft_s + verify_s(k + 1))
    return max(rate(k) for k in range(n_max + 1))


def test_a_draft_model_that_costs_as_much_as_the_target_is_ruled_out_at_once() -> None:
    # Drafting one token costs as much as a target token: even drafts that are always right
    # cannot pay, whatever the acceptance.
    for n_max in (4, 8):
        tuner = lb.DraftTuner(n_max)
        rate, lengths = simulate(tuner, V1, accepting(0.9, seed=n_max))
        assert rate >= 0.97 / V1, (rate * V1, lengths)
        assert lengths[0] <= 2 and sum(1 for k in lengths if k > 0) <= 2, lengths


def test_a_draft_that_pays_is_kept_after_an_unlucky_start() -> None:
    # Half a target token per drafted token, 92% acceptance per position: drafting 2-3 tokens
    # pays about 1.15x. The first drafts miss at once twice, as a real text can (the first
    # token of a reply, where draft and target disagree most): no slower than plain even so,
    # and drafting at the end.
    for n_max in (4, 8):
        tuner = lb.DraftTuner(n_max)
        rate, lengths = simulate(tuner, 0.5 * V1, accepting(0.92, seed=n_max), first=[2, 4, 0, 4, 0])
        ideal = best_fixed(0.5 * V1, 0.92, n_max)
        assert ideal * V1 > 1.1
        assert rate >= 1.0 / V1, (rate * V1, ideal * V1, lengths)
        assert sum(1 for k in lengths[-20:] if k > 0) >= 18, lengths


def test_drafts_that_are_never_right_are_given_up() -> None:
    tuner = lb.DraftTuner(8)
    rate, lengths = simulate(tuner, 0.3 * V1, lambda k: 0)
    assert rate >= 0.93 / V1, (rate * V1, lengths)
    assert sum(1 for k in lengths[20:] if k > 0) <= 3, lengths


def test_estimates_follow_the_measurements() -> None:
    tuner = lb.DraftTuner(4)
    tuner.record_verify(1, 0.1)
    tuner.record_verify(5, 0.2)
    tuner.record_draft(4, 0.08)
    for _ in range(40):
        tuner.record_acceptance(4, 4)
    est = tuner.estimates(per_token=True)
    assert est["verify_s"][0] == 0.1 and est["verify_s"][4] == 0.2
    assert abs(est["verify_s"][2] - 0.15) < 1e-9  # interpolated between measured sizes
    assert abs(est["draft_s_per_token"] - 0.02) < 1e-9
    assert est["expected_tokens"][0] == 1.0 and est["expected_tokens"][4] > 4.5
    assert abs(est["tokens_per_s"][0] - 10.0) < 1e-9
    assert tuner.choose(4, per_token=True) == 4
