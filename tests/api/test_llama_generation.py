"""Llama completions on the real models: greedy output against llama.cpp's own llama-simple
and a token-by-token loop over the low-level API, log-probabilities against numpy's
log-softmax of the raw logits, and every create_completion keyword by its effect: stop
sequences (including ones split across tokens), echo, seeds, samplers, logit bias, grammars,
stopping criteria, logits processors, streaming, and UTF-8 characters split across tokens."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import llamabind as lb
from llamabind import Llama, LlamaGrammar, LogitsProcessorList, StoppingCriteriaList
from native import run_reference_simple
from testutil import N_THREADS, greedy_reference_rows, llama_fixture, make_llama

PROMPT = "The history of the Roman Empire"
CAPITAL = "The capital of France is"

smol = llama_fixture("smollm2_path")
gemma = llama_fixture("gemma3_path")


def log_softmax(row: np.ndarray) -> np.ndarray:
    row = np.asarray(row, np.float64)
    m = row.max()
    return row - m - np.log(np.exp(row - m).sum())


def text_of(out: dict) -> str:
    return out["choices"][0]["text"]


def greedy(llm: Llama, prompt, n: int, **kw) -> dict:
    return llm.create_completion(prompt, max_tokens=n, temperature=0.0, **kw)


def forcing(prompt_len: int, sequence: list[int]):
    """A logits processor that makes token i of `sequence` the only choice at step i."""

    def force(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        step = len(input_ids) - prompt_len
        forced = np.full_like(scores, -np.inf)
        forced[sequence[min(step, len(sequence) - 1)]] = 0.0
        return forced

    return force


# ---------------------------------------------------------------------------------------
# Greedy output against independent generators


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_greedy_equals_llama_simple(name: str, request: pytest.FixtureRequest, reference_build) -> None:
    path = request.getfixturevalue(f"{name}_path")
    stdout = run_reference_simple(reference_build, path, PROMPT, 64)
    # llama-simple uses llama.cpp's default flash-attention setting (auto: on for the CPU);
    # the two attention kernels round differently, so compare with the same kernel.
    with make_llama(path, flash_attn=True) as llm:
        out = greedy(llm, PROMPT, 64)
        printed_prompt = b"".join(llm.model.vocab.token_to_piece(t, special=True)
                                  for t in llm.tokenize(PROMPT.encode(), add_bos=True, special=True))
    assert out["usage"]["completion_tokens"] == 64, "the prompt must not reach EOS early"
    expected = stdout.encode("utf-8")
    assert expected.startswith(printed_prompt) and expected.endswith(b"\n")
    assert text_of(out) == expected[len(printed_prompt):-1].decode("utf-8")


@pytest.mark.parametrize("name, n", [("smollm2", 48), ("gemma3", 24)])
def test_greedy_equals_low_level_generation(name: str, n: int, request: pytest.FixtureRequest) -> None:
    llm: Llama = request.getfixturevalue({"smollm2": "smol", "gemma3": "gemma"}[name])
    model: lb.Model = request.getfixturevalue(name)
    tokens = model.vocab.tokenize(PROMPT, add_special=True, parse_special=True)
    ref, _ = greedy_reference_rows(model, tokens, n)
    out = greedy(llm, PROMPT, n)
    assert text_of(out) == model.vocab.detokenize(ref).decode("utf-8")
    assert out["usage"] == {"prompt_tokens": len(tokens), "completion_tokens": len(ref),
                            "total_tokens": len(tokens) + len(ref)}
    assert llm(PROMPT, max_tokens=n, temperature=0.0)["choices"][0]["text"] == text_of(out)
    # A prompt given as token ids is the same prompt.
    assert text_of(greedy(llm, tokens, n)) == text_of(out)


# ---------------------------------------------------------------------------------------
# max_tokens, usage, response shape


smol64 = llama_fixture("smollm2_path", n_ctx=64)


@pytest.mark.parametrize("max_tokens", [None, -1, 0])
def test_max_tokens_none_or_not_positive_fills_the_context(smol64: Llama, max_tokens) -> None:
    n_ctx = smol64.n_ctx()
    assert 64 <= n_ctx <= 512  # llama.cpp rounds the requested size up
    # A prompt of token ids leaving room for 12 tokens keeps filling the context cheap.
    prompt = smol64.tokenize(b"The capital of France is Paris. " * 80)[: n_ctx - 12]
    no_end = {smol64.token_eos(): -100.0, smol64.model.vocab.eot: -100.0}
    out = smol64.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, logit_bias=no_end)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["prompt_tokens"] == len(prompt)
    assert out["usage"]["completion_tokens"] == n_ctx - len(prompt) == 12
    # More than fits is cut to what fits.
    out = smol64.create_completion(prompt, max_tokens=100, temperature=0.0, logit_bias=no_end)
    assert out["usage"]["completion_tokens"] == 12


def test_max_tokens_counts_generated_tokens(smol: Llama) -> None:
    for n in (1, 5):
        out = greedy(smol, CAPITAL, n, logprobs=0)
        assert out["usage"]["completion_tokens"] == n == len(out["choices"][0]["logprobs"]["tokens"])
        assert out["choices"][0]["finish_reason"] == "length"


def test_response_shape_ids_and_model_field(smol: Llama) -> None:
    a = greedy(smol, CAPITAL, 3)
    b = greedy(smol, CAPITAL, 3, model="my-model")
    assert set(a) == {"id", "object", "created", "model", "choices", "usage"}
    assert a["object"] == "text_completion" and isinstance(a["created"], int)
    assert a["id"].startswith("cmpl-") and a["id"] != b["id"]
    assert a["model"] == smol.model_path and b["model"] == "my-model"
    assert a["choices"][0].keys() == {"text", "index", "logprobs", "finish_reason"}
    assert a["choices"][0]["index"] == 0 and a["choices"][0]["logprobs"] is None
    u = a["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_stream_chunks_have_completion_shape_and_join_to_the_text(smol: Llama) -> None:
    full = greedy(smol, CAPITAL, 20)
    chunks = list(smol.create_completion(CAPITAL, max_tokens=20, temperature=0.0, stream=True))
    assert len(chunks) > 1
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert chunks[0]["id"] != full["id"]
    for c in chunks:
        assert set(c) == {"id", "object", "created", "model", "choices"}
        assert c["object"] == "text_completion" and c["model"] == smol.model_path
        assert isinstance(c["created"], int)
        (choice,) = c["choices"]
        assert choice.keys() == {"text", "index", "logprobs", "finish_reason"}
        assert choice["index"] == 0 and choice["logprobs"] is None and isinstance(choice["text"], str)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["text"] for c in chunks) == text_of(full)


# ---------------------------------------------------------------------------------------
# Stop sequences


def test_stop_str_and_list(smol: Llama) -> None:
    full = text_of(greedy(smol, CAPITAL, 40))
    assert "\n\n" in full and "United" in full
    out = greedy(smol, CAPITAL, 40, stop="\n\n")
    assert text_of(out) == full[: full.index("\n\n")]
    assert out["choices"][0]["finish_reason"] == "stop"
    # The earliest of several stop sequences wins; the others may never occur.
    out = greedy(smol, CAPITAL, 40, stop=["United", "never-in-the-output", "\n\n"])
    assert text_of(out) == full[: full.index("\n\n")]
    out = greedy(smol, CAPITAL, 40, stop=["United"])
    assert text_of(out) == full[: full.index("United")] and "United" not in text_of(out)
    # usage counts what was generated before stopping, not max_tokens.
    assert 0 < out["usage"]["completion_tokens"] < 40


@pytest.fixture(scope="module")
def split_stop(smol: Llama, smollm2: lb.Model) -> tuple[str, str, int]:
    """(full greedy text, a stop string made of the end of one generated token and the start
    of the next, where it first occurs in the text)."""
    tokens = smollm2.vocab.tokenize(PROMPT, add_special=True, parse_special=True)
    ids, _ = greedy_reference_rows(smollm2, tokens, 40)
    pieces = [smollm2.vocab.token_to_piece(t).decode("utf-8") for t in ids]
    full = "".join(pieces)
    offset = 0
    for a, b in zip(pieces, pieces[1:]):
        offset += len(a)
        if len(a) >= 3 and len(b) >= 3 and offset >= 12:
            stop = a[-2:] + b[:2]
            if full.find(stop) == offset - 2:
                return full, stop, offset - 2
    pytest.fail(f"no stop string spanning two tokens in {pieces}")


def test_stop_spanning_two_tokens_never_leaks(smol: Llama, split_stop: tuple[str, str, int]) -> None:
    full, stop, at = split_stop
    out = greedy(smol, PROMPT, 40, stop=[stop])
    assert text_of(out) == full[:at]
    assert out["choices"][0]["finish_reason"] == "stop"
    chunks = list(smol.create_completion(PROMPT, max_tokens=40, temperature=0.0, stop=[stop], stream=True))
    texts = [c["choices"][0]["text"] for c in chunks]
    assert "".join(texts) == full[:at]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # A stop string that starts like the generated text but then differs is held back only
    # until it is ruled out: nothing is lost.
    near_miss = stop[:3] + "\x07"
    out = greedy(smol, PROMPT, 40, stop=near_miss)
    assert text_of(out) == full and out["choices"][0]["finish_reason"] == "length"
    chunks = list(smol.create_completion(PROMPT, max_tokens=40, temperature=0.0, stop=near_miss, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == full


# ---------------------------------------------------------------------------------------
# Echo and log-probabilities


def test_echo_prefixes_the_prompt(smol: Llama) -> None:
    plain = text_of(greedy(smol, CAPITAL, 8))
    out = greedy(smol, CAPITAL, 8, echo=True)
    assert text_of(out) == CAPITAL + plain
    chunks = list(smol.create_completion(CAPITAL, max_tokens=8, temperature=0.0, echo=True, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == CAPITAL + plain


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_logprobs_are_log_softmax_of_the_raw_logits(name: str, request: pytest.FixtureRequest) -> None:
    llm: Llama = request.getfixturevalue({"smollm2": "smol", "gemma3": "gemma"}[name])
    model: lb.Model = request.getfixturevalue(name)
    k = 5
    tokens = model.vocab.tokenize(CAPITAL, add_special=True, parse_special=True)
    ids, rows = greedy_reference_rows(model, tokens, 6)
    out = greedy(llm, CAPITAL, 6, logprobs=k)
    lp = out["choices"][0]["logprobs"]
    assert set(lp) == {"tokens", "text_offset", "token_logprobs", "top_logprobs"}
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(ids)
    assert lp["tokens"] == [model.vocab.token_to_piece(t).decode("utf-8") for t in ids]
    assert "".join(lp["tokens"]) == text_of(out)
    for i, (token, row) in enumerate(zip(ids, rows)):
        ref = log_softmax(row)
        assert lp["token_logprobs"][i] == pytest.approx(ref[token], abs=2e-3)
        top = lp["top_logprobs"][i]
        values = list(top.values())
        assert 1 <= len(top) <= k and values == sorted(values, reverse=True)
        # Greedy picks the argmax: the chosen token is the most likely one.
        assert top[lp["tokens"][i]] == pytest.approx(values[0]) == pytest.approx(lp["token_logprobs"][i])
        best = np.sort(ref)[::-1][: len(top)]
        assert np.allclose(values, best, atol=2e-3)
    # Offsets advance by each token's text.
    offsets = lp["text_offset"]
    assert [b - a for a, b in zip(offsets, offsets[1:])] == [len(t) for t in lp["tokens"][:-1]]


def test_stream_logprobs_match_non_stream(smol: Llama) -> None:
    full = greedy(smol, CAPITAL, 6, logprobs=3)["choices"][0]["logprobs"]
    chunks = list(smol.create_completion(CAPITAL, max_tokens=6, temperature=0.0, logprobs=3, stream=True))
    joined: dict[str, list] = {key: [] for key in full}
    for c in chunks:
        for key in full:
            joined[key].extend(c["choices"][0]["logprobs"][key])
    assert joined["tokens"] == full["tokens"]
    assert joined["text_offset"] == full["text_offset"]
    assert np.allclose(joined["token_logprobs"], full["token_logprobs"], atol=1e-5)


def test_text_offset_counts_from_the_start_of_the_prompt_like_llama_cpp_python(smol: Llama) -> None:
    """llama-cpp-python (after OpenAI's legacy completions) gives offsets into prompt + text:
    without echo the first offset is len(prompt) (``text_offset = 0 if echo else len(prompt)``)."""
    lp = greedy(smol, CAPITAL, 4, logprobs=1)["choices"][0]["logprobs"]
    text = CAPITAL + "".join(lp["tokens"])
    assert lp["text_offset"][0] == len(CAPITAL)
    for off, tok in zip(lp["text_offset"], lp["tokens"]):
        assert text[off:off + len(tok)] == tok


def test_echo_with_logprobs_scores_the_prompt_tokens(smol: Llama, smollm2: lb.Model) -> None:
    tokens = smollm2.vocab.tokenize(CAPITAL, add_special=True, parse_special=True)
    out = greedy(smol, CAPITAL, 3, echo=True, logprobs=2)
    lp = out["choices"][0]["logprobs"]
    text = text_of(out)
    assert text.startswith(CAPITAL)
    assert len(lp["tokens"]) == len(tokens) + 3
    assert lp["token_logprobs"][0] is None
    assert all(isinstance(v, float) for v in lp["token_logprobs"][1:])
    for off, tok in zip(lp["text_offset"], lp["tokens"]):
        assert text[off:off + len(tok)] == tok
    # The prompt's logprobs: the logits after each prefix, computed independently.
    with lb.Context(smollm2, n_ctx=128, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                    flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
        ctx.decode_tokens(tokens, pos0=0, all_logits=True)
        rows = ctx.logits(copy=True)
    for j in range(1, len(tokens)):
        assert lp["token_logprobs"][j] == pytest.approx(log_softmax(rows[j - 1])[tokens[j]], abs=2e-3)


def test_logits_to_logprobs_is_log_softmax() -> None:
    x = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32) * 10
    got = Llama.logits_to_logprobs(x)
    assert np.allclose(got, np.stack([log_softmax(r) for r in x]), atol=1e-5)
    assert np.allclose(np.exp(got).sum(axis=-1), 1.0, atol=1e-5)
    assert Llama.longest_token_prefix([1, 2, 3, 4], [1, 2, 9]) == 2
    assert Llama.longest_token_prefix([], [1]) == 0
    assert Llama.longest_token_prefix(np.array([5, 6]), [5, 6, 7]) == 2


# ---------------------------------------------------------------------------------------
# Seeds and samplers


def test_seed_reproducibility(smol: Llama) -> None:
    def sample(seed):
        return text_of(smol.create_completion(CAPITAL, max_tokens=12, temperature=0.9, seed=seed))

    assert sample(1234) == sample(1234)
    assert len({sample(s) for s in (1, 2, 3, 4)}) >= 2


def test_constructor_seed_and_set_seed_are_the_default_seed(smollm2_path: Path, smol: Llama) -> None:
    with make_llama(smollm2_path, n_ctx=128, seed=77) as seeded:
        a = text_of(seeded.create_completion(CAPITAL, max_tokens=10, temperature=1.0))
        seeded.set_seed(5)
        b = text_of(seeded.create_completion(CAPITAL, max_tokens=10, temperature=1.0))
    assert a == text_of(smol.create_completion(CAPITAL, max_tokens=10, temperature=1.0, seed=77))
    assert b == text_of(smol.create_completion(CAPITAL, max_tokens=10, temperature=1.0, seed=5))


def test_truncating_samplers_reduce_to_greedy(smol: Llama) -> None:
    """top_k=1, top_p=0 and min_p=1 each leave only the most likely token, whatever the
    temperature and seed."""
    expected = text_of(greedy(smol, CAPITAL, 10))
    for kw in ({"top_k": 1}, {"top_p": 0.0, "top_k": 0}, {"min_p": 1.0, "top_k": 0}):
        for seed in (1, 2):
            out = smol.create_completion(CAPITAL, max_tokens=10, temperature=1.5, seed=seed, **kw)
            assert text_of(out) == expected, kw


@pytest.mark.parametrize("kw", [{"typical_p": 0.5}, {"top_p": 0.5, "min_p": 0.1, "top_k": 20},
                                {"frequency_penalty": 0.5, "presence_penalty": 0.5},
                                {"mirostat_mode": 1}, {"mirostat_mode": 2, "mirostat_tau": 3.0}])
def test_samplers_run_and_are_reproducible(smol: Llama, kw: dict) -> None:
    a = smol.create_completion(CAPITAL, max_tokens=8, temperature=0.8, seed=11, **kw)
    b = smol.create_completion(CAPITAL, max_tokens=8, temperature=0.8, seed=11, **kw)
    assert text_of(a) == text_of(b) and a["usage"]["completion_tokens"] >= 1


def test_invalid_mirostat_mode_raises(smol: Llama) -> None:
    with pytest.raises(ValueError, match="mirostat"):
        smol.create_completion(CAPITAL, max_tokens=2, temperature=0.8, mirostat_mode=3)


def repeated_trigrams(tokens: list[str]) -> int:
    grams = [tuple(tokens[i:i + 3]) for i in range(len(tokens) - 2)]
    return len(grams) - len(set(grams))


def test_repeat_penalty_reduces_repetition(smol: Llama) -> None:
    plain = greedy(smol, CAPITAL, 48, logprobs=0)
    penalised = greedy(smol, CAPITAL, 48, logprobs=0, repeat_penalty=1.5)
    r_plain = repeated_trigrams(plain["choices"][0]["logprobs"]["tokens"])
    r_pen = repeated_trigrams(penalised["choices"][0]["logprobs"]["tokens"])
    assert r_plain >= 10, "the greedy continuation of this prompt loops"
    assert r_pen <= r_plain // 3


def test_last_n_tokens_size_zero_disables_the_penalty_window(smollm2_path: Path, smol: Llama) -> None:
    plain = text_of(greedy(smol, CAPITAL, 24))
    with make_llama(smollm2_path, n_ctx=128, last_n_tokens_size=0) as llm:
        assert text_of(greedy(llm, CAPITAL, 24, repeat_penalty=1.5)) == plain


def test_logit_bias_forces_and_forbids_tokens(smol: Llama) -> None:
    banana = smol.tokenize(b" banana", add_bos=False)
    assert len(banana) == 1
    out = greedy(smol, CAPITAL, 4, logit_bias={banana[0]: 100.0})
    assert text_of(out) == " banana" * 4
    first = smol.create_completion(CAPITAL, max_tokens=1, temperature=0.0, logprobs=2)
    lp = first["choices"][0]["logprobs"]
    best, second = list(lp["top_logprobs"][0])[:2]
    (best_id,) = smol.tokenize(best.encode(), add_bos=False)
    out = greedy(smol, CAPITAL, 1, logit_bias={best_id: -float("inf")})
    assert text_of(out) == second


def test_grammar_constrains_the_output(smol: Llama) -> None:
    yes_no = LlamaGrammar.from_string('root ::= "yes" | "no"')
    out = greedy(smol, "Is the sky blue? Answer:", 8, grammar=yes_no)
    assert text_of(out) in ("yes", "no")
    assert out["choices"][0]["finish_reason"] == "stop"
    digits = LlamaGrammar.from_string("root ::= [0-9] [0-9] [0-9] \"!\"")
    out = smol.create_completion(CAPITAL, max_tokens=12, temperature=0.9, seed=3, grammar=digits)
    assert re.fullmatch(r"[0-9]{3}!", text_of(out))
    with pytest.raises(TypeError):
        greedy(smol, CAPITAL, 2, grammar='root ::= "yes"')


def test_stopping_criteria_stops_after_n_tokens(smol: Llama, smollm2: lb.Model) -> None:
    full = greedy(smol, CAPITAL, 12, logprobs=0)
    n_prompt = full["usage"]["prompt_tokens"]
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def after_four(input_ids: np.ndarray, logits: np.ndarray) -> bool:
        seen.append((np.array(input_ids), np.array(logits)))
        return len(input_ids) - n_prompt >= 4

    out = greedy(smol, CAPITAL, 12, stopping_criteria=StoppingCriteriaList([after_four]))
    assert out["choices"][0]["finish_reason"] == "stop"
    # Whether input_ids already holds the token just sampled differs between
    # llama-cpp-python releases: 3 or 4 tokens.
    n = out["usage"]["completion_tokens"]
    assert n in (3, 4)
    assert text_of(out) == "".join(full["choices"][0]["logprobs"]["tokens"][:n])
    prompt_ids = smollm2.vocab.tokenize(CAPITAL)
    for ids, logits in seen:
        assert list(ids[:n_prompt]) == prompt_ids
        assert logits.shape == (smol.n_vocab(),)


def test_logits_processor_that_forbids_the_greedy_token(smol: Llama, smollm2: lb.Model) -> None:
    tokens = smollm2.vocab.tokenize(CAPITAL)
    (best,), (row,) = greedy_reference_rows(smollm2, tokens, 1)
    calls = []

    def forbid(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        calls.append(len(input_ids))
        scores = scores.copy()
        scores[best] = -np.inf
        return scores

    out = greedy(smol, CAPITAL, 1, logits_processor=LogitsProcessorList([forbid]))
    row = row.copy()
    row[best] = -np.inf
    assert text_of(out) == smollm2.vocab.token_to_piece(int(np.argmax(row))).decode("utf-8")
    assert calls == [len(tokens)]


def test_suffix_needs_fim_tokens(smol: Llama, gemma: Llama) -> None:
    for llm in (smol, gemma):
        with pytest.raises(ValueError, match="FIM|fill-in-the-middle"):
            llm.create_completion("def f(", suffix="    return x\n", max_tokens=4)


# ---------------------------------------------------------------------------------------
# UTF-8


TRICKY = {"smollm2": "日本語 🦙 café 𠜎", "gemma3": "🦙 café 𠜎 𝔘𝔫𝔦"}


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_stream_never_splits_a_utf8_character(name: str, request: pytest.FixtureRequest) -> None:
    """Makes the model emit, token by token, a text whose characters are split across
    byte-level tokens, and checks every streamed chunk is whole characters."""
    llm: Llama = request.getfixturevalue({"smollm2": "smol", "gemma3": "gemma"}[name])
    target = TRICKY[name]
    sequence = llm.tokenize(target.encode(), add_bos=False)
    pieces = [llm.model.vocab.token_to_piece(t) for t in sequence]

    def valid(b: bytes) -> bool:
        try:
            b.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    assert sum(not valid(p) for p in pieces) >= 3, "the target must split characters across tokens"
    prompt_len = len(llm.tokenize(CAPITAL.encode()))
    kw = dict(max_tokens=len(sequence), temperature=0.0, logits_processor=[forcing(prompt_len, sequence)])
    chunks = list(llm.create_completion(CAPITAL, stream=True, **kw))
    texts = [c["choices"][0]["text"] for c in chunks]
    assert all(isinstance(t, str) and "\ufffd" not in t for t in texts)
    assert "".join(texts) == target
    assert text_of(llm.create_completion(CAPITAL, **kw)) == target
    # With logprobs too: token texts never carry half characters as U+FFFD.
    lp = llm.create_completion(CAPITAL, logprobs=1, **kw)["choices"][0]["logprobs"]
    assert all("\ufffd" not in t for t in lp["tokens"])


def test_stream_of_natural_multibyte_text(gemma: Llama) -> None:
    prompt = "日本の首都は東京です。日本の有名な食べ物は"
    full = text_of(greedy(gemma, prompt, 24))
    assert any(ord(c) > 0x3000 for c in full)
    chunks = list(gemma.create_completion(prompt, max_tokens=24, temperature=0.0, stream=True))
    texts = [c["choices"][0]["text"] for c in chunks]
    assert all("\ufffd" not in t for t in texts)
    assert "".join(texts) == full


# ---------------------------------------------------------------------------------------
# llamabind's additions: SamplingParams, MinTokensLogitsProcessor

CHAT_PROMPT = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"


def test_min_tokens_processor_delays_the_end(smol: Llama) -> None:
    plain = greedy(smol, CHAT_PROMPT, 40)
    assert plain["choices"][0]["finish_reason"] == "stop" and plain["usage"]["completion_tokens"] < 20
    at_least = lb.MinTokensLogitsProcessor(20, smol.token_eos())
    out = greedy(smol, CHAT_PROMPT, 40, logits_processor=LogitsProcessorList([at_least]))
    assert out["usage"]["completion_tokens"] >= 20
    assert text_of(out).startswith(text_of(plain))


def test_sampling_params_object(smol: Llama) -> None:
    expected = text_of(greedy(smol, CAPITAL, 10))
    assert text_of(smol.create_completion(CAPITAL, max_tokens=10, sampling=lb.SamplingParams(temperature=0.0))) \
        == expected
    # The object replaces the individual sampler keywords.
    out = smol.create_completion(CAPITAL, max_tokens=10, temperature=1.5,
                                 sampling=lb.SamplingParams(temperature=1.0, top_k=1, seed=4))
    assert text_of(out) == expected
    # Samplers llama-cpp-python does not expose run and are reproducible.
    params = lb.SamplingParams(temperature=1.0, dry_multiplier=0.8, xtc_probability=0.5, top_n_sigma=1.0,
                               dynatemp_range=0.5, seed=3)
    a = smol.create_completion(CAPITAL, max_tokens=10, sampling=params)
    b = smol.create_completion(CAPITAL, max_tokens=10, sampling=params)
    assert text_of(a) == text_of(b) and a["usage"]["completion_tokens"] >= 1
