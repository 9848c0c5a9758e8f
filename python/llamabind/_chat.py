"""The chat pipeline: OpenAI-style messages to a completion request and back.

Tools and tool_choice become a tool plan (a grammar, lazy unless a call is forced) and, for
templates that do not render tools themselves, a system prompt describing them; the messages
are formatted with the model's chat template (or a named chat format); the template's turn
stops join the caller's; response_format becomes a grammar. The completion's chunks are then
shaped as chat.completion(.chunk) dicts, with tool calls parsed from the reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import _tools
from ._core import Vocab
from ._request import CompletionRequest
from ._responses import chat_collect, chat_stream, chat_tool_stream, chat_with_tools
from .llama_grammar import JSON_GBNF, LlamaGrammar

# create_chat_completion's keywords that go on to the completion unchanged.
_COMPLETION_KEYWORDS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "seed", "max_tokens",
                        "presence_penalty", "frequency_penalty", "repeat_penalty", "tfs_z", "mirostat_mode",
                        "mirostat_tau", "mirostat_eta", "model", "logits_processor", "logit_bias", "sampling",
                        "cancel")


def grammar_for_response_format(response_format: Any) -> LlamaGrammar | None:
    """The grammar a response_format asks for: {"type": "json_object"} (any JSON object),
    {"type": "json_object", "schema": ...} (llama-cpp-python), {"type": "json_schema",
    "json_schema": {"schema": ...}} (OpenAI), or a pydantic model class itself."""
    if isinstance(response_format, type):
        return LlamaGrammar.from_json_schema(response_format)
    if not isinstance(response_format, dict):
        raise TypeError(f"response_format must be a dict or a pydantic model class, got {type(response_format).__name__}")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    schema = response_format.get("schema")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is None:
            raise ValueError("response_format type 'json_schema' needs json_schema.schema")
    elif kind != "json_object":
        raise ValueError(f"unknown response_format type {kind!r} (text, json_object or json_schema)")
    if schema is None:
        return LlamaGrammar(JSON_GBNF)
    return LlamaGrammar.from_json_schema(schema)


def chat_prompt_tokens(vocab: Vocab, prompt: str) -> list[int]:
    """Chat prompts carry their special tokens as text; BOS is added only if the template did
    not already write it."""
    bos = vocab.bos
    starts_with_bos = bos >= 0 and prompt.startswith(vocab.text(bos))
    return vocab.tokenize(prompt, add_special=not starts_with_bos, parse_special=True)


@dataclass(frozen=True)
class ChatPlan:
    """A chat call turned into a completion: the request, and how to read its reply."""

    request: CompletionRequest
    tool_plan: _tools.ToolPlan | None
    legacy_functions: bool
    with_logprobs: bool


def plan_chat(arguments: Mapping[str, Any], *, formatter: Any, template: str | None, vocab: Vocab,
              make_request: Callable[[dict[str, Any]], CompletionRequest]) -> ChatPlan:
    """Plans one create_chat_completion call (its keywords in `arguments`): `formatter` is the
    chat formatter, `template` the model's own template text (None when a chat format is
    named), `make_request` builds the completion request from completion keywords."""
    grammar = arguments.get("grammar")
    response_format = arguments.get("response_format")
    tools, tool_choice, legacy = _tools.normalize(arguments.get("tools"), arguments.get("tool_choice"),
                                                  arguments.get("functions"), arguments.get("function_call"))
    template_format = _tools.detect_format(template)
    tool_format = template_format or _tools.HERMES
    tool_plan = (_tools.plan(tools, tool_choice, tool_format)
                 if grammar is None and response_format is None else None)
    messages = _tools.prepare_messages(arguments["messages"], renders_tools=template_format is not None)
    if tool_plan is not None and template_format is None:
        messages = _tools.with_system_prompt(messages, _tools.system_prompt(tools, tool_plan.forced))
    formatted = formatter(messages=messages, tools=tools or None, tool_choice=tool_choice)
    stop = arguments.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if formatted.stop:
        stops += [formatted.stop] if isinstance(formatted.stop, str) else list(formatted.stop)
    if response_format is not None and grammar is None:
        grammar = grammar_for_response_format(response_format)
    if tool_plan is not None:
        grammar = tool_plan.grammar
    logprobs = bool(arguments.get("logprobs"))
    completion = {k: arguments[k] for k in _COMPLETION_KEYWORDS if k in arguments}
    completion.update(prompt=chat_prompt_tokens(vocab, formatted.prompt), suffix=None, echo=False, stop=stops,
                      logprobs=(arguments.get("top_logprobs") or 0) if logprobs else None,
                      stopping_criteria=formatted.stopping_criteria, grammar=grammar)
    return ChatPlan(make_request(completion), tool_plan, legacy, logprobs)


def chat_response(plan: ChatPlan, chunks: Iterator[dict[str, Any]], stream: bool) -> Any:
    """The chat.completion dict (or, streamed, its chunks) of the completion's chunk dicts."""
    tools = plan.tool_plan
    if tools is not None:
        if stream:
            return chat_tool_stream(chunks, tools.format, tools.names, plan.legacy_functions, plan.with_logprobs)
        return chat_with_tools(chat_collect(chunks, plan.with_logprobs), tools.format, tools.names,
                               plan.legacy_functions)
    if stream:
        return chat_stream(chunks, plan.with_logprobs)
    return chat_collect(chunks, plan.with_logprobs)
