"""Tool calling in create_chat_completion, checked with jsonschema against each tool's
parameters (the independent reference) on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from llamabind import Llama
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
    out = llm.create_chat_completion(ASK, tools=[WEATHER, TIME], temperature=0, max_tokens=80,
                                     tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    check_call(call, [WEATHER])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_tool_choice_picks_one_of_the_tools(llm: Llama, seed: int) -> None:
    out = llm.create_chat_completion(ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=0.9,
                                     seed=seed, max_tokens=80)
    (call,) = out["choices"][0]["message"]["tool_calls"]
    check_call(call, [WEATHER, TIME])
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_call_ids_are_unique(llm: Llama) -> None:
    ids = {llm.create_chat_completion(ASK, tools=[WEATHER], tool_choice="required", temperature=0,
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
    (call,) = choice["message"]["tool_calls"]
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
    chunks = list(llm.create_chat_completion(ASK, tools=[WEATHER], tool_choice="required", temperature=0,
                                             max_tokens=80, stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if "tool_calls" in c["choices"][0]["delta"]]
    assert len(calls) == 1 and calls[0][0]["index"] == 0
    check_call(calls[0][0], [WEATHER])
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
