"""Llama.create_chat_completion: prompts against the model's template rendered by plain
jinja2 (and llama.cpp's built-in formats for Gemma 3, which has no template), greedy content
against the low-level API, the OpenAI response and stream shapes, logprobs, JSON mode, stop,
seed, custom handlers and chat formats."""

from __future__ import annotations

import sys
import json
import logging
from pathlib import Path

import jinja2
import numpy as np
import pytest

import llamabind as lb
from llamabind import Llama
from testutil import N_THREADS, greedy_reference, llama_fixture, make_llama

QUESTION = [{"role": "user", "content": "What is 2+2?"}]

smol = llama_fixture("smollm2_path")
gemma = llama_fixture("gemma3_path", n_ctx=256)


def rendered_prompt(model: lb.Model, messages: list[dict]) -> str:
    """The model's chat template rendered by plain jinja2, as transformers does."""
    template = jinja2.Environment().from_string(model.metadata["tokenizer.chat_template"])
    return template.render(messages=messages, add_generation_prompt=True)


def content(out: dict) -> str:
    return out["choices"][0]["message"]["content"]


def test_chat_completion_follows_the_template_and_matches_greedy_decoding(smol: Llama, smollm2: lb.Model) -> None:
    prompt = rendered_prompt(smollm2, QUESTION)
    tokens = smollm2.vocab.tokenize(prompt, add_special=False, parse_special=True)
    expected = greedy_reference(smollm2, tokens, 40)
    assert len(expected) < 40, "the answer must end with the end-of-turn token"
    out = smol.create_chat_completion(QUESTION, max_tokens=40, temperature=0.0)
    assert set(out) == {"id", "object", "created", "model", "choices", "usage"}
    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion"
    assert isinstance(out["created"], int) and out["model"] == smol.model_path
    (choice,) = out["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["message"] == {"role": "assistant", "content": smollm2.vocab.detokenize(expected).decode()}
    assert choice["finish_reason"] == "stop"
    assert out["usage"] == {"prompt_tokens": len(tokens), "completion_tokens": len(expected),
                            "total_tokens": len(tokens) + len(expected)}
    short = smol.create_chat_completion(QUESTION, max_tokens=3, temperature=0.0)
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3
    assert content(out).startswith(content(short))
    assert short["id"] != out["id"]


def test_chat_stream_chunk_sequence(smol: Llama) -> None:
    full = smol.create_chat_completion(QUESTION, max_tokens=40, temperature=0.0)
    chunks = list(smol.create_chat_completion(QUESTION, max_tokens=40, temperature=0.0, stream=True))
    assert len(chunks) >= 3
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    for c in chunks:
        assert set(c) >= {"id", "object", "created", "model", "choices"}
        assert c["object"] == "chat.completion.chunk" and c["model"] == smol.model_path
        assert len(c["choices"]) == 1 and c["choices"][0]["index"] == 0
    first, middle, last = chunks[0]["choices"][0], chunks[1:-1], chunks[-1]["choices"][0]
    assert first["delta"] == {"role": "assistant"} and first["finish_reason"] is None
    assert all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    assert last["delta"] == {} and last["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == content(full)


def test_chat_logprobs_shape(smol: Llama, smollm2: lb.Model) -> None:
    out = smol.create_chat_completion(QUESTION, max_tokens=6, temperature=0.0, logprobs=True, top_logprobs=3)
    lp = out["choices"][0]["logprobs"]
    entries = lp["content"]
    assert len(entries) == out["usage"]["completion_tokens"] == 6
    assert "".join(e["token"] for e in entries) == content(out)
    for e in entries:
        assert set(e) >= {"token", "logprob", "bytes", "top_logprobs"}
        assert e["bytes"] == list(e["token"].encode("utf-8"))
        assert e["logprob"] <= 0.0
        tops = e["top_logprobs"]
        assert 1 <= len(tops) <= 3
        values = [t["logprob"] for t in tops]
        assert values == sorted(values, reverse=True)
        assert tops[0]["token"] == e["token"] and tops[0]["logprob"] == pytest.approx(e["logprob"])
    # The first token's logprob, from the raw logits after the rendered prompt.
    tokens = smollm2.vocab.tokenize(rendered_prompt(smollm2, QUESTION), add_special=False, parse_special=True)
    with lb.Context(smollm2, n_ctx=128, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                    flash_attn_type=lb.FlashAttnType.DISABLED) as ctx:
        ctx.decode_tokens(tokens, pos0=0)
        row = ctx.logits_ith(-1, copy=True).astype(np.float64)
    ref = row - row.max() - np.log(np.exp(row - row.max()).sum())
    assert entries[0]["logprob"] == pytest.approx(ref.max(), abs=2e-3)
    without = smol.create_chat_completion(QUESTION, max_tokens=2, temperature=0.0, logprobs=False, top_logprobs=3)
    assert without["choices"][0]["logprobs"] is None
    chunks = list(smol.create_chat_completion(QUESTION, max_tokens=4, temperature=0.0, logprobs=True,
                                              top_logprobs=2, stream=True))
    streamed = [e for c in chunks if c["choices"][0]["logprobs"] for e in c["choices"][0]["logprobs"]["content"]]
    assert [e["token"] for e in streamed] == [e["token"] for e in entries[:4]]


@pytest.mark.slow
def test_json_object_response_format_parses(smol: Llama) -> None:
    messages = [{"role": "user", "content": 'Reply with a JSON object with a single key "ok" set to true.'}]
    out = smol.create_chat_completion(messages, response_format={"type": "json_object"}, max_tokens=40,
                                      temperature=0.0)
    assert out["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(content(out)), dict)


def test_unknown_response_format_type_raises(smol: Llama) -> None:
    with pytest.raises(ValueError, match="response_format"):
        smol.create_chat_completion(QUESTION, response_format={"type": "yaml"}, max_tokens=2)


def test_chat_stop_and_seed(smol: Llama) -> None:
    full = content(smol.create_chat_completion(QUESTION, max_tokens=40, temperature=0.0))
    word = full.split()[2]
    out = smol.create_chat_completion(QUESTION, max_tokens=40, temperature=0.0, stop=[word])
    assert content(out) == full[: full.index(word)] and out["choices"][0]["finish_reason"] == "stop"
    out = smol.create_chat_completion(QUESTION, max_tokens=40, temperature=0.0, stop=word)
    assert content(out) == full[: full.index(word)]

    def sample(seed: int) -> str:
        return content(smol.create_chat_completion(QUESTION, max_tokens=10, temperature=1.0, seed=seed))

    assert sample(42) == sample(42)
    assert len({sample(s) for s in (1, 2, 3, 4)}) >= 2


def test_custom_chat_handler_receives_the_call(smollm2_path: Path) -> None:
    calls: list[dict] = []
    sentinel = {"object": "chat.completion", "from": "handler"}

    def handler(**kwargs):
        calls.append(kwargs)
        return sentinel

    with make_llama(smollm2_path, n_ctx=128, chat_handler=handler) as llm:
        assert llm.chat_handler is handler
        out = llm.create_chat_completion(QUESTION, temperature=0.3, max_tokens=7, stop=["x"], seed=9)
        assert out is sentinel
        (kw,) = calls
        assert kw["llama"] is llm and kw["messages"] == QUESTION
        assert kw["temperature"] == 0.3 and kw["max_tokens"] == 7 and kw["stop"] == ["x"] and kw["seed"] == 9
        assert kw["stream"] is False


def test_gemma_without_template_uses_the_builtin_gemma_format(gemma: Llama, gemma3: lb.Model,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    assert "tokenizer.chat_template" not in gemma3.metadata
    expected_prompt = lb.chat_apply_template("gemma", QUESTION, True)
    tokens = gemma3.vocab.tokenize(expected_prompt, add_special=True, parse_special=True)
    with caplog.at_level(logging.WARNING, logger="llamabind"):
        out = gemma.create_chat_completion(QUESTION, max_tokens=8, temperature=0.0)
    assert any("no chat template" in r.getMessage() for r in caplog.records)
    assert out["usage"]["prompt_tokens"] == len(tokens)
    ref = greedy_reference(gemma3, tokens, 8)
    assert content(out) == gemma3.vocab.detokenize(ref).decode()
    chunks = list(gemma.create_chat_completion(QUESTION, max_tokens=8, temperature=0.0, stream=True))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == content(out)


def test_chat_format_chatml_on_gemma(gemma3_path: Path, gemma3: lb.Model) -> None:
    prompt = lb.chat_apply_template("chatml", QUESTION, True)
    tokens = gemma3.vocab.tokenize(prompt, add_special=True, parse_special=True)
    with make_llama(gemma3_path, n_ctx=256, chat_format="chatml") as llm:
        assert llm.chat_format == "chatml"
        out = llm.create_chat_completion(QUESTION, max_tokens=6, temperature=0.0)
    assert out["usage"]["prompt_tokens"] == len(tokens)
    assert content(out) == gemma3.vocab.detokenize(greedy_reference(gemma3, tokens, 6)).decode()


def test_unknown_chat_format_raises(smollm2_path: Path) -> None:
    with make_llama(smollm2_path, n_ctx=128, chat_format="no-such-format") as llm:
        with pytest.raises(ValueError, match="no-such-format"):
            llm.create_chat_completion(QUESTION, max_tokens=2)


def test_openai_v1_needs_the_openai_package(smol: Llama, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import openai` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "openai", None)
    monkeypatch.setitem(sys.modules, "openai.types", None)
    monkeypatch.setitem(sys.modules, "openai.types.chat", None)
    with pytest.raises(ImportError, match="openai"):
        smol.create_chat_completion_openai_v1(QUESTION, max_tokens=2)
