"""Llama features past llama-cpp-python's test surface: fill-in-the-middle prompt layout,
response_format with schemas (JSON Schema, OpenAI's json_schema, pydantic classes), the
openai package's types, every SamplingParams sampler, and a clean interpreter exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pydantic
import pytest

from llamabind import Llama, SamplingParams
from testutil import N_THREADS
from tiny_model import copy_gguf

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0,
                                                                        "maximum": 120}},
    "required": ["name", "age"],
}


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=120)


@pytest.fixture(scope="module")
def llm(smollm2_path: Path) -> Llama:
    with Llama(str(smollm2_path), n_ctx=1024, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False) as llm:
        yield llm


ASK = [{"role": "user", "content": "Describe a person as JSON with a name and an age."}]


@pytest.mark.parametrize("response_format", [
    {"type": "json_object", "schema": PERSON},
    {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    {"type": "json_schema", "json_schema": {"name": "person", "schema": Person}},
    Person,
])
def test_response_format_schemas_constrain_the_reply(llm: Llama, response_format: object) -> None:
    out = llm.create_chat_completion(ASK, response_format=response_format, temperature=0, max_tokens=60)
    data = json.loads(out["choices"][0]["message"]["content"])
    jsonschema.validate(data, PERSON)
    assert out["choices"][0]["finish_reason"] == "stop"


def test_unknown_response_format_type_raises(llm: Llama) -> None:
    with pytest.raises(ValueError, match="response_format"):
        llm.create_chat_completion(ASK, response_format={"type": "yaml"}, max_tokens=4)


def test_openai_v1_returns_openai_types(llm: Llama) -> None:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    out = llm.create_chat_completion_openai_v1(messages=ASK, temperature=0, max_tokens=8)
    assert isinstance(out, ChatCompletion)
    assert out.choices[0].message.role == "assistant" and out.usage is not None
    chunks = list(llm.create_chat_completion_openai_v1(messages=ASK, temperature=0, max_tokens=8, stream=True))
    assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == out.choices[0].message.content


SAMPLERS = {
    "xtc": SamplingParams(temperature=1.0, xtc_probability=1.0, xtc_threshold=0.05),
    "dry": SamplingParams(temperature=0.8, dry_multiplier=0.8),
    "top_n_sigma": SamplingParams(temperature=1.0, top_n_sigma=0.5),
    "adaptive_p": SamplingParams(temperature=1.0, adaptive_p_target=0.3),
    "dynatemp": SamplingParams(temperature=0.8, dynatemp_range=0.5),
    "mirostat2": SamplingParams(temperature=1.0, mirostat_mode=2),
    "typical": SamplingParams(temperature=0.9, typical_p=0.5),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_is_reproducible_with_a_seed(llm: Llama, name: str) -> None:
    params = SAMPLERS[name].replace(seed=11)
    runs = [llm.create_completion("Once upon a time", max_tokens=12, sampling=params)["choices"][0]["text"]
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]


def test_xtc_removes_the_most_likely_tokens(llm: Llama) -> None:
    """With probability 1, XTC drops every candidate above the threshold but the least likely
    of them, so the greedy token (far above 5%) never comes first."""
    prompt = "The capital of France is"
    greedy = llm.create_completion(prompt, max_tokens=1, temperature=0)["choices"][0]["text"]
    picked = {llm.create_completion(prompt, max_tokens=1, sampling=SAMPLERS["xtc"].replace(seed=s))
              ["choices"][0]["text"] for s in range(5)}
    assert greedy not in picked


def test_top_n_sigma_narrow_is_greedy(llm: Llama) -> None:
    """top-n-sigma keeps tokens within n standard deviations of the best logit; with a tiny n
    only the best survives whatever the temperature."""
    prompt = "The capital of France is"
    greedy = llm.create_completion(prompt, max_tokens=6, temperature=0)["choices"][0]["text"]
    narrow = SamplingParams(temperature=2.0, top_n_sigma=1e-6, top_k=0, top_p=1.0, min_p=0.0)
    for seed in range(3):
        assert llm.create_completion(prompt, max_tokens=6, sampling=narrow.replace(seed=seed))["choices"][0]["text"] \
            == greedy


def test_dry_reduces_verbatim_repetition(llm: Llama) -> None:
    prompt = "1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3,"
    plain = SamplingParams(temperature=0.0)
    dry = SamplingParams(temperature=0.0, dry_multiplier=2.0, dry_allowed_length=1)
    a = llm.create_completion(prompt, max_tokens=12, sampling=plain)["choices"][0]["text"]
    b = llm.create_completion(prompt, max_tokens=12, sampling=dry)["choices"][0]["text"]
    assert a.count(" 1, 2, 3") > b.count(" 1, 2, 3")


def test_fill_in_the_middle_layout(tiny_path: Path, tmp_path: Path) -> None:
    """With FIM tokens in the vocabulary, prompt+suffix become <pre> prefix <suf> suffix <mid>
    (or suffix first with spm_infill)."""
    pre, suf, mid = 10, 11, 12  # three ids of the tiny SPM vocabulary, declared FIM tokens
    (path,) = copy_gguf(tiny_path, tmp_path / "fim.gguf", set_uint32={
        "tokenizer.ggml.fim_pre_token_id": pre, "tokenizer.ggml.fim_suf_token_id": suf,
        "tokenizer.ggml.fim_mid_token_id": mid})
    for spm in (False, True):
        with Llama(str(path), n_ctx=128, spm_infill=spm, verbose=False, n_threads=N_THREADS) as llm:
            prefix = llm.tokenize(b"def f(", add_bos=False)
            suffix = llm.tokenize(b"return x", add_bos=False)
            out = llm.create_completion("def f(", suffix="return x", max_tokens=1, temperature=0)
            bos = [llm.token_bos()] if llm._vocab.add_bos else []
            expected = bos + ([suf, *suffix, pre, *prefix, mid] if spm else [pre, *prefix, suf, *suffix, mid])
            assert llm.input_ids[: len(expected)].tolist() == expected
            assert out["usage"]["prompt_tokens"] == len(expected)


def test_objects_alive_at_exit_shut_down_cleanly(smollm2_path: Path) -> None:
    code = (
        "import llamabind as lb, sys\n"
        f"llm = lb.Llama({str(smollm2_path)!r}, n_ctx=256, verbose=False)\n"
        "stream = llm.create_completion('Hello', max_tokens=8, stream=True)\n"
        "next(stream)\n"
        "ctx = llm.ctx; model = llm.model; view = ctx.logits()\n"
        "cycle = [llm]; cycle.append(cycle)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_progress_callback_reports_loading(smollm2_path: Path) -> None:
    seen: list[float] = []
    with Llama(str(smollm2_path), n_ctx=64, use_mmap=False, verbose=False,
               progress_callback=lambda p: seen.append(p) or True):
        pass
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    assert np.all(np.asarray(seen) >= 0)


def test_pickling_reloads_from_the_constructor_arguments(smollm2_path: Path) -> None:
    import pickle

    with Llama(str(smollm2_path), n_ctx=256, seed=5, verbose=False, n_threads=N_THREADS) as llm:
        clone = pickle.loads(pickle.dumps(llm))
        try:
            assert clone.n_ctx() == llm.n_ctx() and clone.model_path == llm.model_path
            a = llm("Hello", max_tokens=4, temperature=0)["choices"][0]["text"]
            assert clone("Hello", max_tokens=4, temperature=0)["choices"][0]["text"] == a
        finally:
            clone.close()
    with pytest.raises(TypeError, match="chat_handler"):
        pickle.dumps(Llama(str(smollm2_path), n_ctx=64, verbose=False, chat_handler=lambda **kw: None))
