"""Tool calling in create_chat_completion, checked with jsonschema against each tool's
parameters (the independent reference) on SmolLM2."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from llamabind import Llama, _tool_calls, _tools
from llamabind.llama_chat_format import render_chat_template
from testutil import N_THREADS

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}},
                       "required": ["timezone"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]


@pytest.fixture(scope="module")
def llm(smollm2_path: Path) -> Llama:
    with Llama(str(smollm2_path), n_ctx=1024, n_threads=N_THREADS, n_threads_batch=N_THREADS, verbose=False) as llm:
        yield llm


def check_call(call: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    assert call["type"] == "function" and call["id"].startswith("call_")
    (tool,) = [t for t in tools if t["function"]["name"] == call["function"]["name"]]
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, tool["function"]["parameters"])
    return arguments


def test_named_tool_choice_forces_a_valid_call(llm: Llama) -> None:
    out = llm.create_chat_completion(ASK, tools=[WEATHER, TIME], temperature=0, max_tokens=120,
                                     tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    check_call(call, [WEATHER])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_tool_choice_makes_valid_calls(llm: Llama, seed: int) -> None:
    """"required" allows parallel calls; each must name a tool and fit its parameters."""
    out = llm.create_chat_completion(ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=0.9,
                                     seed=seed, max_tokens=120)
    calls = out["choices"][0]["message"]["tool_calls"]
    assert calls
    for call in calls:
        check_call(call, [WEATHER, TIME])
    assert len({c["id"] for c in calls}) == len(calls)
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_call_ids_are_unique(llm: Llama) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    ids = {llm.create_chat_completion(ASK, tools=[WEATHER], tool_choice=named, temperature=0,
                                      max_tokens=80)["choices"][0]["message"]["tool_calls"][0]["id"]
           for _ in range(2)}
    assert len(ids) == 2


def test_auto_lets_the_model_answer_in_text(llm: Llama) -> None:
    out = llm.create_chat_completion([{"role": "user", "content": "Say hello."}], tools=[WEATHER], temperature=0,
                                     max_tokens=12)
    choice = out["choices"][0]
    if "tool_calls" not in choice["message"]:
        assert choice["finish_reason"] in ("stop", "length")
        assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]


class ForcePrefix:
    """A logits processor making the reply start with given tokens."""

    def __init__(self, tokens: list[int], start: int) -> None:
        self.tokens = tokens
        self.start = start

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        i = len(input_ids) - self.start
        if 0 <= i < len(self.tokens):
            forced = np.full_like(scores, -np.inf)
            forced[self.tokens[i]] = 0.0
            return forced
        return scores


def test_auto_mode_grammar_takes_over_after_the_trigger(llm: Llama) -> None:
    """Once the model writes <tool_call>, the lazy grammar holds it to a valid call."""
    opener = llm.tokenize(b"<tool_call>", add_bos=False, special=False)
    # When the reply starts, input_ids holds exactly the prompt.
    prompt_tokens = llm.create_chat_completion(ASK, tools=[WEATHER], temperature=0, max_tokens=1)["usage"]["prompt_tokens"]
    out = llm.create_chat_completion(ASK, tools=[WEATHER], temperature=0, max_tokens=120,
                                     logits_processor=[ForcePrefix(opener, prompt_tokens)])
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["tool_calls"]
    for call in choice["message"]["tool_calls"]:
        check_call(call, [WEATHER])


def test_legacy_functions_give_a_function_call(llm: Llama) -> None:
    out = llm.create_chat_completion(ASK, functions=[WEATHER["function"]], function_call={"name": "get_weather"},
                                     temperature=0, max_tokens=80)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"
    jsonschema.validate(json.loads(choice["message"]["function_call"]["arguments"]),
                        WEATHER["function"]["parameters"])


def test_streamed_tool_call_has_the_chunk_shape(llm: Llama) -> None:
    """The call streams as deltas: id, type and name first, then the arguments in pieces."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    chunks = list(llm.create_chat_completion(ASK, tools=[WEATHER], tool_choice=named, temperature=0,
                                             max_tokens=80, stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert all(c["index"] == 0 for c in calls) and len(calls) > 3
    first = calls[0]
    assert first["function"] == {"name": "get_weather", "arguments": ""} and first["type"] == "function"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    check_call({**first, "function": {"name": "get_weather", "arguments": arguments}}, [WEATHER])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"][0]["delta"] == {}


def test_tool_choice_none_is_plain_chat(llm: Llama) -> None:
    out = llm.create_chat_completion(ASK, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=10)
    assert "tool_calls" not in out["choices"][0]["message"]


def test_bad_tool_choices_raise(llm: Llama) -> None:
    with pytest.raises(ValueError, match="not among the tools"):
        llm.create_chat_completion(ASK, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "x"}})
    with pytest.raises(ValueError, match="tool_choice must be"):
        llm.create_chat_completion(ASK, tools=[WEATHER], tool_choice="sometimes")
    with pytest.raises(ValueError, match="unsupported tool"):
        llm.create_chat_completion(ASK, tools=[{"type": "retrieval"}], tool_choice="required")


TEMPLATES = Path(__file__).resolve().parents[2] / "extern" / "llama.cpp" / "models" / "templates"
CALLED = [{"id": "call00001", "type": "function",  # Mistral templates want 9 alphanumerics
           "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]


@pytest.mark.parametrize(("template", "fmt"), [
    ("Qwen-Qwen2.5-7B-Instruct.jinja", _tools.HERMES),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", _tools.HERMES),
    ("meta-llama-Llama-3.3-70B-Instruct.jinja", _tools.LLAMA3),
    ("mistralai-Mistral-Nemo-Instruct-2407.jinja", _tools.MISTRAL),
])
def test_template_formats_round_trip(template: str, fmt: _tools.ToolFormat) -> None:
    """The model's own format is detected from its template, and a call written by the
    template itself (the reference for what the model was trained to emit) parses back."""
    source = (TEMPLATES / template).read_text()
    assert _tools.detect_format(source) is fmt
    history = [{"role": "user", "content": "Weather in Paris?"}]
    before = render_chat_template(source, _tools.prepare_messages(history, True), tools=[WEATHER],
                                  add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
    after = render_chat_template(
        source, _tools.prepare_messages([*history, {"role": "assistant", "content": None, "tool_calls": CALLED}], True),
        tools=[WEATHER], add_generation_prompt=False, bos_token="<s>", eos_token="</s>")
    common = len(os.path.commonprefix([before, after]))
    reply = after[common:]
    for end in ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "</s>"):
        reply = reply.split(end)[0]
    content, calls = _tool_calls.parse(reply, fmt, ["get_weather"])
    assert [c["function"]["name"] for c in calls] == ["get_weather"], reply
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize("fmt", [_tools.HERMES, _tools.LLAMA3, _tools.MISTRAL], ids=lambda f: f.name)
def test_each_format_constrains_smollm2(llm: Llama, fmt: _tools.ToolFormat) -> None:
    """The grammar of each format holds even an untrained model to well-formed calls."""
    plan = _tools.plan([WEATHER, TIME], "required", fmt)
    assert plan is not None
    prompt = "User: What is the weather in Paris, in celsius? Call a function.\nAssistant: "
    text = llm.create_completion(prompt, grammar=plan.grammar, temperature=0, max_tokens=120)["choices"][0]["text"]
    content, calls = _tool_calls.parse(text, fmt, ["get_weather", "get_time"])
    assert calls, text
    for call in calls:
        check_call(call, [WEATHER, TIME])


def test_multi_turn_with_a_tool_result_continues(llm: Llama) -> None:
    """A tool result fed back renders (SmolLM2's template knows no tools: the call is written
    into the assistant turn) and the model answers in text."""
    conversation = [*ASK, {"role": "assistant", "content": None, "tool_calls": CALLED},
                    {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "22 C, sunny"}]
    out = llm.create_chat_completion(conversation, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=24)
    assert out["choices"][0]["message"]["content"]
    rendered = render_chat_template((TEMPLATES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(),
                                    _tools.prepare_messages(conversation, True), tools=[WEATHER])
    assert "22 C, sunny" in rendered and "<tool_response>" in rendered and '"city": "Paris"' in rendered
