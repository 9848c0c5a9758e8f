"""Tool (function) calling for chat completions.

The call format follows the model's chat template when it has one:
- Hermes / Qwen (``<tool_call>`` in the template): ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``,
- Llama 3.x (``"parameters": dictionary`` or ``<|python_tag|>``): ``{"name": ..., "parameters": ...}``,
- Mistral (``[TOOL_CALLS]``): ``[TOOL_CALLS][{"name": ..., "arguments": ...}, ...]``,
and the Hermes format, described in a system message, for templates that do not render tools
at all (SmolLM2, Gemma, ...).

How the model is held to it:
- tool_choice "required" or a named function: a grammar constrains the whole reply to calls
  whose arguments follow each function's parameters schema.
- tool_choice "auto" (the default when tools are given): the model writes freely; once its
  output starts a call (the format's trigger), a lazy grammar takes over.
The reply is parsed back into OpenAI ``tool_calls``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from ._gbnf import GrammarParseError
from .json_schema._converter import parse_schema_gbnf, schema_gbnf
from .llama_grammar import LlamaGrammar


@dataclass(frozen=True)
class ToolFormat:
    name: str
    args_key: str  # "arguments" or "parameters"
    open: str  # text before the calls
    close: str  # text after each call (Hermes) or after the list (Mistral)
    trigger: str  # lazy-grammar pattern; its first group starts the constrained text
    listed: bool  # calls form one JSON array (Mistral)


HERMES = ToolFormat("hermes", "arguments", "<tool_call>", "</tool_call>", r"[\s\S]*?(<tool_call>[\s\S]*)", False)
LLAMA3 = ToolFormat("llama3", "parameters", "", "", r"^\s*((?:<\|python_tag\|>)?\{[\s\S]*)", False)
MISTRAL = ToolFormat("mistral", "arguments", "[TOOL_CALLS]", "", r"[\s\S]*?(\[TOOL_CALLS\][\s\S]*)", True)


def detect_format(template: str | None) -> ToolFormat | None:
    """The tool format a chat template uses, or None when it does not render tools."""
    if not template or not re.search(r"\btools\b|\btool_calls\b", template):
        return None
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if "<tool_call>" in template:
        return HERMES
    if "<|python_tag|>" in template or '"parameters": dictionary' in template:
        return LLAMA3
    return HERMES


@dataclass
class ToolPlan:
    grammar: LlamaGrammar
    forced: bool  # the reply must be calls
    format: ToolFormat
    names: list[str]


def normalize(tools: list[dict[str, Any]] | None, tool_choice: Any, functions: list[dict[str, Any]] | None,
              function_call: Any) -> tuple[list[dict[str, Any]], Any, bool]:
    """Tools and tool_choice, with the legacy functions/function_call mapped onto them.
    The flag says whether the legacy form was used (the reply then uses function_call)."""
    if functions and not tools:
        tools = [{"type": "function", "function": f} for f in functions]
        if isinstance(function_call, dict):
            tool_choice = {"type": "function", "function": {"name": function_call["name"]}}
        else:
            tool_choice = function_call
        return tools, tool_choice, True
    return list(tools or []), tool_choice, False


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type", "function") != "function" or "function" not in tool:
        raise ValueError(f"unsupported tool {tool!r}: only {{'type': 'function', 'function': {{...}}}} tools exist")
    fn = tool["function"]
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError("every tool function needs a non-empty name")
    return dict(fn)


def _literal(text: str) -> str:
    return json.dumps(text)  # GBNF string literals escape like JSON strings


def plan(tools: list[dict[str, Any]], tool_choice: Any, fmt: ToolFormat = HERMES) -> ToolPlan | None:
    """The grammar for these tools, this choice and this format; None for tool_choice "none"."""
    if tool_choice == "none" or not tools:
        return None
    functions = [_function(t) for t in tools]
    single = False  # one call only (a named function), else parallel calls are allowed
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        functions = [f for f in functions if f["name"] == wanted]
        if not functions:
            raise ValueError(f"tool_choice names {wanted!r}, which is not among the tools")
        forced = single = True
    elif tool_choice in (None, "auto"):
        forced = False
    elif tool_choice == "required":
        forced = True
    else:
        raise ValueError(f"tool_choice must be 'none', 'auto', 'required' or a named function, got {tool_choice!r}")
    options = [{
        "type": "object",
        "properties": {"name": {"const": f["name"]}, fmt.args_key: f.get("parameters") or {"type": "object"}},
        "required": ["name", fmt.args_key],
        "additionalProperties": False,
    } for f in functions]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    schema_text = schema_gbnf(schema)  # parsed once, below, inside the whole grammar
    call = re.sub(r"(?<![\w-])root(?![\w-])", "tool-call", schema_text)
    if fmt.listed:
        more = "" if single else ' ( "," space tool-call )*'
        body = f'{_literal(fmt.open)} "[" tool-call{more} "]"'
    elif fmt.open:
        one = f'{_literal(fmt.open)} space tool-call space {_literal(fmt.close)}'
        body = one if single else f"{one} ( space {one} )*"
    else:
        body = '"<|python_tag|>"? tool-call'
    text = f"root ::= {body}\nspace ::= [ \\n]{{0,2}}\n{call}"
    try:
        grammar = LlamaGrammar(text, lazy_patterns=() if forced else (fmt.trigger,))
    except GrammarParseError:
        # Only the schema's part can be at fault: report it as json_schema_to_gbnf does.
        parse_schema_gbnf(schema_text)
        raise
    return ToolPlan(grammar, forced, fmt, [f["name"] for f in functions])


def system_prompt(tools: list[dict[str, Any]], forced: bool) -> str:
    """Describes the tools (in the Hermes format) for templates that do not render them."""
    listing = "\n".join(json.dumps(_function(t), ensure_ascii=False) for t in tools)
    how = (f"Reply only with {HERMES.open}{{\"name\": <function name>, \"arguments\": <arguments object>}}"
           f"{HERMES.close}." if forced else
           f"To call a function, reply with {HERMES.open}{{\"name\": <function name>, \"arguments\": <arguments "
           f"object>}}{HERMES.close}. Otherwise answer normally.")
    return f"You can call these functions:\n<tools>\n{listing}\n</tools>\n{how}"


def with_system_prompt(messages: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{prompt}".strip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def prepare_messages(messages: list[dict[str, Any]], renders_tools: bool) -> list[dict[str, Any]]:
    """Messages of a conversation with tool calls and results, ready for a template.

    Templates that render tools get the OpenAI messages with each call's JSON-string
    arguments decoded (Hugging Face templates expect an object). Others get the calls written
    into the assistant's text in the Hermes format and every content as a string."""
    out = []
    for message in messages:
        m = dict(message)
        calls = m.get("tool_calls")
        if calls:
            if renders_tools:
                m["tool_calls"] = [
                    {**c, "function": {**c["function"], "arguments": _arguments_object(c["function"].get("arguments"))}}
                    for c in calls]
            else:
                text = "".join(
                    f"{HERMES.open}{json.dumps({'name': c['function']['name'], 'arguments': _arguments_object(c['function'].get('arguments'))}, ensure_ascii=False)}{HERMES.close}"
                    for c in calls)
                m.pop("tool_calls")
                m["content"] = f"{m.get('content') or ''}{text}"
        if not renders_tools and m.get("content") is None:
            m["content"] = ""
        out.append(m)
    return out


def _calls_from(objects: list[Any], args_key: str) -> list[dict[str, Any]]:
    calls = []
    for obj in objects:
        if isinstance(obj, dict) and isinstance(obj.get("name"), str):
            arguments = obj.get(args_key, obj.get("arguments", {}))
            calls.append({
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": obj["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
            })
    return calls


def _json_prefix(text: str) -> Any:
    """The JSON value at the start of text (ignoring what follows), or None."""
    try:
        value, _ = json.JSONDecoder().raw_decode(text.lstrip())
        return value
    except json.JSONDecodeError:
        return None


def parse(text: str, fmt: ToolFormat = HERMES) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) from a reply; text that is not a complete call stays content."""
    if fmt.listed:
        at = text.find(fmt.open)
        body = text[at + len(fmt.open):] if at >= 0 else text.lstrip()
        if at < 0 and not body.startswith("[{"):
            return text, []
        value = _json_prefix(body)
        calls = _calls_from(value if isinstance(value, list) else [], fmt.args_key)
        content = text[:at].strip() if at >= 0 else ""
    elif fmt.open:
        at = text.find(fmt.open)
        if at < 0:
            return text, []
        blobs = re.findall(re.escape(fmt.open) + r"\s*(.*?)\s*(?:" + re.escape(fmt.close) + r"|$)", text[at:], flags=re.S)
        calls = _calls_from([_json_prefix(b) for b in blobs], fmt.args_key)
        content = text[:at].strip()
    else:
        body = text.lstrip()
        if body.startswith("<|python_tag|>"):
            body = body[len("<|python_tag|>"):]
        if not body.startswith("{"):
            return text, []
        calls = _calls_from([_json_prefix(body)], fmt.args_key)
        content = ""
    if not calls:
        return text, []
    return content or None, calls
