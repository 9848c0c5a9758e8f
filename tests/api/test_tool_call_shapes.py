"""Tool calls recognised in every shape models write them, without a model: parsing, the
lazy grammar's trigger and what it accepts, streaming deltas (accumulated by the `openai`
package's own stream state), and the grammar's rule names."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from llamabind import _responses, _tool_calls, _tools
from llamabind.json_schema._converter import schema_gbnf, schemas_gbnf

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]}}}
EMAIL = {"type": "function", "function": {"name": "send_email", "parameters": {
    "type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
    "required": ["to", "body"]}}}
TOOLS = [WEATHER, EMAIL]
NAMES = ("get_weather", "send_email")

W = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
W_PRETTY = '{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris",\n    "unit": "celsius"\n  }\n}'
E = '{"name": "send_email", "parameters": {"to": "a@b.co", "body": "Brace } and \\"quote\\" inside"}}'
W_CALL = ("get_weather", {"city": "Paris", "unit": "celsius"})
E_CALL = ("send_email", {"to": "a@b.co", "body": 'Brace } and "quote" inside'})

# (text, format, content, calls): replies the tool grammar allows, from the point a call opens.
CALL_SHAPES = {
    "hermes-tag": (f"<tool_call>\n{W}\n</tool_call>", _tools.HERMES, None, [W_CALL]),
    "hermes-tags": (f"<tool_call>\n{W}\n</tool_call>\n<tool_call>\n{E}\n</tool_call>", _tools.HERMES, None,
                    [W_CALL, E_CALL]),
    "fenced-json": (f"```json\n{W_PRETTY}\n```", _tools.HERMES, None, [W_CALL]),
    "fenced-upper": (f"```JSON\n{W}\n```", _tools.HERMES, None, [W_CALL]),
    "fenced-plain": (f"```\n{W}\n```", _tools.HERMES, None, [W_CALL]),
    "fenced-list": (f"```json\n[{W}, {E}]\n```", _tools.HERMES, None, [W_CALL, E_CALL]),
    "fenced-two": (f"```json\n{W}\n{E}\n```", _tools.HERMES, None, [W_CALL, E_CALL]),
    "bare": (W, _tools.HERMES, None, [W_CALL]),
    "bare-parameters": (E, _tools.HERMES, None, [E_CALL]),
    "bare-pretty": (W_PRETTY, _tools.HERMES, None, [W_CALL]),
    "bare-list": (f"[{W},\n {E}]", _tools.HERMES, None, [W_CALL, E_CALL]),
    "bare-lines": (f"{W}\n{E}", _tools.HERMES, None, [W_CALL, E_CALL]),
    "content-first": (f"Let me check that.\n\n```json\n{W}\n```", _tools.HERMES, "Let me check that.", [W_CALL]),
    "mistral": (f"[TOOL_CALLS][{W}, {E}]", _tools.MISTRAL, None, [W_CALL, E_CALL]),
    "llama3": ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
               _tools.LLAMA3, None, [W_CALL]),
    "llama3-bare": ('{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}', _tools.LLAMA3,
                    None, [W_CALL]),
}
# Replies a model may write without the grammar (it only constrains from a call's opening on).
LOOSE_SHAPES = {
    "tag-unclosed": (f"<tool_call>\n{W}", _tools.HERMES, None, [W_CALL]),
    "content-around": (f"First {W} then {E} done.", _tools.HERMES, "First  then  done.", [W_CALL, E_CALL]),
    "python-fence": (f"```python\n{W}\n```", _tools.HERMES, "```python", [W_CALL]),
    "string-arguments": ('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"celsius\\"}"}',
                         _tools.HERMES, None, [W_CALL]),
    "extra-keys": ('{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}, "id": "x{"}',
                   _tools.HERMES, None, [W_CALL]),
    "hermes-tag-in-llama3": (f"<tool_call>{W}</tool_call>", _tools.LLAMA3, None, [W_CALL]),
}
NOT_CALLS = {
    "unknown-name": '{"name": "reverse_string", "arguments": {"text": "abc"}}',
    "no-arguments": '{"name": "get_weather", "city": "Paris"}',
    "other-json": 'Here: {"name": "Ann", "age": 3} and [{"a": "}"}]',
    "code": "```python\nprint({'name': 'get_weather'})\n```",
    "cut-short": '```json\n{"name": "get_weather", "arguments": {"city": "Pa',
    "plain": "  Paris is sunny today.  \n",
}


def decoded(calls: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize("case", [*CALL_SHAPES, *LOOSE_SHAPES])
def test_every_shape_parses(case: str) -> None:
    text, fmt, content, calls = {**CALL_SHAPES, **LOOSE_SHAPES}[case]
    got_content, got_calls = _tool_calls.parse(text, fmt, NAMES)
    assert got_content == content
    assert decoded(got_calls) == calls
    assert all(c["type"] == "function" and re.fullmatch(r"call_[0-9a-f]{24}", c["id"]) for c in got_calls)
    assert len({c["id"] for c in got_calls}) == len(got_calls)
    # The arguments are compact JSON text, as OpenAI returns them.
    assert all(c["function"]["arguments"] == json.dumps(args, separators=(",", ":"), ensure_ascii=False)
               for c, (_, args) in zip(got_calls, calls))


@pytest.mark.parametrize("case", NOT_CALLS)
def test_text_that_is_no_call_stays_content(case: str) -> None:
    text = NOT_CALLS[case]
    assert _tool_calls.parse(text, _tools.HERMES, NAMES) == (text, [])


@pytest.mark.parametrize("case", CALL_SHAPES)
def test_the_trigger_fires_at_the_opening_and_the_grammar_accepts_the_rest(case: str) -> None:
    """As llama.cpp does it: the pattern is searched in the output after each token (here:
    each character, the finest split); the text from its group on, that token's rest
    included, is replayed into the grammar, which must accept it and then the whole reply."""
    text, fmt, content, _ = CALL_SHAPES[case]
    plan = _tools.plan(TOOLS, "auto", fmt)
    assert plan is not None and not plan.forced
    (pattern,) = plan.grammar.lazy_patterns
    for end in range(1, len(text) + 1):
        match = re.search(pattern, text[:end])
        if match:
            break
    assert match is not None, "the trigger never fired"
    start = match.start(1)
    assert start == (0 if content is None else text.index("```"))
    assert plan.grammar.matches(text[start:end], prefix=True)
    assert plan.grammar.matches(text[start:])


def test_json_that_names_no_tool_sets_no_trigger() -> None:
    plan = _tools.plan(TOOLS, "auto", _tools.HERMES)
    assert plan is not None
    for case in ("unknown-name", "other-json", "code", "plain"):
        assert not re.search(plan.grammar.lazy_patterns[0], NOT_CALLS[case]), case
    assert not re.search(plan.grammar.lazy_patterns[0], '```json\n{"name": "get_time", "arguments": {}}\n```')


def test_forced_grammar_is_the_templates_format_from_the_first_token() -> None:
    plan = _tools.plan(TOOLS, "required", _tools.HERMES)
    assert plan is not None and plan.forced and not plan.grammar.lazy_patterns
    assert plan.grammar.matches(f"<tool_call>\n{W}\n</tool_call>\n<tool_call>{E}</tool_call>")
    assert not plan.grammar.matches(W)
    named = _tools.plan(TOOLS, {"type": "function", "function": {"name": "send_email"}}, _tools.HERMES)
    assert named is not None and named.names == ("send_email",)
    assert named.grammar.matches(f"<tool_call>{E}</tool_call>")
    assert not named.grammar.matches(f"<tool_call>{W}</tool_call>")
    assert not named.grammar.matches(f"<tool_call>{E}</tool_call><tool_call>{E}</tool_call>")


def completion_chunks(pieces: list[str], finish: str = "stop") -> Iterator[dict[str, Any]]:
    for i, piece in enumerate(pieces):
        yield {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "_n": (5, 1),
               "choices": [{"text": piece, "index": 0, "logprobs": None,
                            "finish_reason": finish if i == len(pieces) - 1 else None}]}


def splits(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, len(text) // 3))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def accumulate(chunks: list[dict[str, Any]]) -> Any:
    """The final message of a stream, as the openai client accumulates it (its snapshot: the
    client's get_final_completion refuses a reply cut short by the length limit)."""
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.current_completion_snapshot.choices[0]


@pytest.mark.parametrize("case", [*CALL_SHAPES, *LOOSE_SHAPES, *(c for c in NOT_CALLS if c != "cut-short")])
@pytest.mark.parametrize("seed", [0, 1, -1])
def test_streaming_accumulates_to_the_whole_reply(case: str, seed: int) -> None:
    """Streamed in random pieces (seed -1: a character at a time), the chunks accumulate, in
    the openai package's own stream state, to the message of the reply read whole."""
    text, fmt = (NOT_CALLS[case], _tools.HERMES) if case in NOT_CALLS else {**CALL_SHAPES, **LOOSE_SHAPES}[case][:2]
    pieces = list(text) if seed < 0 else splits(text, seed)
    chunks = list(_responses.chat_tool_stream(completion_chunks(pieces), fmt, NAMES, False, False))
    whole = _responses.chat_with_tools(
        {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}, fmt, NAMES, False)
    final = accumulate(chunks)
    message = whole["choices"][0]["message"]
    assert final.finish_reason == whole["choices"][0]["finish_reason"]
    assert final.message.content == message["content"]
    streamed = [(t.function.name, t.function.arguments) for t in final.message.tool_calls or []]
    assert streamed == [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls", [])]


def test_stream_sends_id_and_name_first_then_arguments_as_they_grow() -> None:
    text = f"Checking.\n```json\n{W_PRETTY}\n```"
    deltas = [c["choices"][0]["delta"] for c in
              _responses.chat_tool_stream(completion_chunks(list(text)), _tools.HERMES, NAMES, False, False)]
    assert deltas[0] == {"role": "assistant"}
    assert "".join(d.get("content", "") for d in deltas) == "Checking."
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    first, rest = calls[0], calls[1:]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert len(rest) == len('{"city":"Paris","unit":"celsius"}')  # one delta per character fed
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in rest)
    # Content ends before the call's first delta; nothing follows the arguments but the finish.
    assert deltas.index({"tool_calls": [first]}) > max(i for i, d in enumerate(deltas) if "content" in d)


def test_a_call_cut_short_streams_with_finish_reason_length() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Pa'
    chunks = list(_responses.chat_tool_stream(completion_chunks([text[:30], text[30:]], "length"), _tools.HERMES,
                                              NAMES, False, False))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert accumulate(chunks).message.tool_calls[0].function.arguments == '{"city":"Pa'


def test_legacy_function_call_streams_as_deltas() -> None:
    chunks = list(_responses.chat_tool_stream(completion_chunks(list(W)), _tools.HERMES, NAMES, True, False))
    deltas = [c["choices"][0]["delta"]["function_call"] for c in chunks if "function_call" in c["choices"][0]["delta"]]
    assert deltas[0] == {"name": "get_weather", "arguments": ""}
    assert json.loads("".join(d["arguments"] for d in deltas)) == W_CALL[1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"


def test_logprobs_ride_on_the_next_chunk_sent() -> None:
    def chunks() -> Iterator[dict[str, Any]]:
        for chunk in completion_chunks(["Hi ", W]):
            text = chunk["choices"][0]["text"]
            chunk["choices"][0]["logprobs"] = {"tokens": [text], "text_offset": [0], "token_logprobs": [-0.5],
                                               "top_logprobs": [{text: -0.5}]}
            yield chunk
    sent = [c["choices"][0]["logprobs"] for c in _responses.chat_tool_stream(chunks(), _tools.HERMES, NAMES, False, True)]
    tokens = [t["token"] for lp in sent if lp for t in lp["content"]]
    assert tokens == ["Hi ", W]


def test_start_rules_take_chosen_names_and_strings_are_left_alone() -> None:
    """The old tool grammar renamed `root` to `tool-call` everywhere in the schema's grammar,
    string literals included, and a $defs entry could take a wrapper rule's name."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "$defs": {"tool-call": {"type": "integer"}, "root": {"const": "root"},
                                    "tool-ws": {"enum": ["tool-call", "space"]}, "space": {"type": "boolean"}},
        "properties": {"a": {"$ref": "#/$defs/tool-call"}, "b": {"$ref": "#/$defs/root"},
                       "c": {"$ref": "#/$defs/tool-ws"}, "d": {"$ref": "#/$defs/space"}},
        "required": ["a", "b", "c", "d"]}}}
    for choice in ("auto", "required"):
        plan = _tools.plan([tool], choice, _tools.HERMES)
        assert plan is not None
        call = '{"name": "f", "arguments": {"a": 7, "b": "root", "c": "space", "d": true}}'
        assert plan.grammar.matches(call if choice == "auto" else f"<tool_call>{call}</tool_call>")
        assert not plan.grammar.matches(call.replace('"root"', '"tool-call"'), prefix=True)
        assert not plan.grammar.matches(call.replace("7", '"x"'), prefix=True)


def test_each_tools_refs_resolve_within_its_own_parameters() -> None:
    def tool(name: str, item: dict[str, Any]) -> dict[str, Any]:
        return {"type": "function", "function": {"name": name, "parameters": {
            "type": "object", "$defs": {"Item": item}, "properties": {"x": {"$ref": "#/$defs/Item"}}, "required": ["x"]}}}
    plan = _tools.plan([tool("ints", {"type": "integer"}), tool("strs", {"type": "string"})], "auto", _tools.HERMES)
    assert plan is not None
    assert plan.grammar.matches('{"name": "ints", "arguments": {"x": 1}}')
    assert plan.grammar.matches('{"name": "strs", "arguments": {"x": "a"}}')
    assert not plan.grammar.matches('{"name": "ints", "arguments": {"x": "a"}}', prefix=True)


def test_one_schema_under_root_is_what_schema_gbnf_writes() -> None:
    for schema in [WEATHER["function"]["parameters"], {"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a"},
                   {"type": "array", "items": {"$ref": "#"}}, True]:
        assert schemas_gbnf({"root": schema}) == schema_gbnf(schema)


def test_a_bad_tool_schema_is_named() -> None:
    bad = {"type": "function", "function": {"name": "bad", "parameters": {"type": "object", "not": {}}}}
    with pytest.raises(ValueError, match="tool 'bad'.*'not'"):
        _tools.plan([WEATHER, bad], "auto", _tools.HERMES)
