"""Tool (function) calling for chat completions: the grammar that holds calls to the tools'
parameters, the prompt for templates that do not render tools, and the messages of a
conversation with calls.

The call format follows the model's chat template when it has one (see _tool_calls for the
formats and every shape a call is recognised in), and the Hermes format, described in a
system message, for templates that do not render tools at all (SmolLM2, Gemma, ...).

How the model is held to it:
- tool_choice "required" or a named function: a grammar constrains the whole reply to calls in
  the template's format whose arguments follow each function's parameters schema.
- tool_choice "auto" (the default when tools are given): the model writes freely; once its
  output opens a call in any recognised shape (a tag; a fence, a list or an object naming one
  of the tools), a lazy grammar takes over from that opening, so the name is a tool's and the
  arguments follow its schema.
The reply is parsed back into OpenAI ``tool_calls`` (_tool_calls.CallScanner).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ._gbnf import GrammarParseError
from ._tool_calls import FENCE, HERMES, LLAMA3, MISTRAL, TAG_CLOSE, TAG_OPEN, WS_MAX, ToolFormat, shapes, trigger_pattern
from .json_schema._converter import parse_schema_gbnf, schema_gbnf, schemas_gbnf
from .llama_grammar import LlamaGrammar

__all__ = ["HERMES", "LLAMA3", "MISTRAL", "ToolFormat", "ToolPlan", "detect_format", "normalize", "plan",
           "prepare_messages", "system_prompt", "with_system_prompt"]


def detect_format(template: str | None) -> ToolFormat | None:
    """The tool format a chat template uses, or None when it does not render tools."""
    if not template or not re.search(r"\btools\b|\btool_calls\b", template):
        return None
    if "[TOOL_CALLS]" in template:
        return MISTRAL
    if TAG_OPEN in template:
        return HERMES
    if "<|python_tag|>" in template or '"parameters": dictionary' in template:
        return LLAMA3
    return HERMES


@dataclass(frozen=True)
class ToolPlan:
    grammar: LlamaGrammar
    forced: bool  # the reply must be calls
    format: ToolFormat
    names: tuple[str, ...]


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
    return json.dumps(text, ensure_ascii=False)  # GBNF string literals escape like JSON strings


# The rules the tool grammar writes around the schemas' (which must not take these names).
_RULES = ("root", "tool-list", "tool-call", "tool-ws", "tool-args-key")


def _start_names(functions: list[dict[str, Any]]) -> list[str]:
    """A rule name for each function's arguments, distinct and readable."""
    out: list[str] = []
    for f in functions:
        base = (re.sub(r"[^A-Za-z0-9-]+", "-", f["name"]).strip("-") or "tool") + "-args"
        name, n = base, 1
        while name in out:
            n += 1
            name = f"{base}-{n}"
        out.append(name)
    return out


def _schema_rules(functions: list[dict[str, Any]], starts: list[str]) -> str:
    """The GBNF rules of every function's parameters, each under its start name. A schema
    that cannot be converted is named in the error."""
    schemas = {start: f.get("parameters") or {"type": "object"} for start, f in zip(starts, functions)}
    try:
        return schemas_gbnf(schemas, reserved=_RULES)
    except (ValueError, TypeError):
        _blame(functions)
        raise


def _blame(functions: list[dict[str, Any]]) -> None:
    """Raises ValueError naming the first function whose parameters give no usable grammar."""
    for f in functions:
        try:
            parse_schema_gbnf(schema_gbnf(f.get("parameters") or {"type": "object"}))
        except (ValueError, TypeError) as err:
            raise ValueError(f"tool {f['name']!r}: its parameters: {err}") from None


def _grammar_text(functions: list[dict[str, Any]], fmt: ToolFormat, forced: bool, single: bool) -> str:
    starts = _start_names(functions)
    calls = " | ".join(f"{_literal(_literal(f['name']))} tool-ws \",\" tool-ws tool-args-key tool-ws \":\" tool-ws {start}"
                       for f, start in zip(functions, starts))
    rules = [f'tool-call ::= "{{" tool-ws "\\"name\\"" tool-ws ":" tool-ws ( {calls} ) tool-ws "}}"',
             'tool-args-key ::= "\\"arguments\\"" | "\\"parameters\\""']
    if forced:
        # The template's own format only, from the first token; whitespace kept short (an
        # untrained model fills any room it is given).
        rules.append("tool-ws ::= [ \\n]{0,2}")
        if fmt.listed:
            more = "" if single else ' ( "," tool-ws tool-call )*'
            body = f'{_literal(fmt.open)} "[" tool-call{more} "]"'
        elif fmt.close:
            one = f"{_literal(fmt.open)} tool-ws tool-call tool-ws {_literal(fmt.close)}"
            body = one if single else f"{one} ( tool-ws {one} )*"
        else:
            body = f"{_literal(fmt.open)}? tool-call"
        rules.insert(0, f"root ::= {body}")
    else:
        # From the trigger on: calls in one of the shapes. Only tags may follow one another
        # (Hermes' parallel calls); after a fence or a bare call the reply ends, or the model,
        # wanting to write on, would be made to open another call. The whitespace bound is the
        # trigger pattern's, so the text that set the trigger off is always accepted.
        blocks = []
        for shape in shapes(fmt):
            opening = " | ".join(_literal(o) for o in shape.opening if o)
            if shape.listed:
                continue  # a list is one of tool-list's forms
            if not opening:  # ending a fence the text opened, if it did
                blocks.append(f'tool-list ( "\\n" tool-list )* ( tool-ws {_literal(FENCE)} )?')
            elif shape.close == FENCE:
                blocks.append(f"( {opening} ) tool-ws tool-list ( tool-ws tool-list )* tool-ws {_literal(FENCE)}")
            elif shape.close:
                one = f"{_literal(shape.opening[0])} tool-ws tool-list tool-ws {_literal(shape.close)}"
                blocks.append(f"{one} ( tool-ws {one} )*")
            else:
                blocks.append(f"{_literal(shape.opening[0])} tool-ws tool-list")
        rules[:0] = ["root ::= " + " | ".join(f"( {b} )" for b in blocks),
                     'tool-list ::= tool-call | "[" tool-ws tool-call ( tool-ws "," tool-ws tool-call )* tool-ws "]"']
        rules.append(f"tool-ws ::= [ \\t\\r\\n]{{0,{WS_MAX}}}")
    return "\n".join(rules) + "\n" + _schema_rules(functions, starts)


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
    names = tuple(f["name"] for f in functions)
    text = _grammar_text(functions, fmt, forced, single)
    try:
        grammar = LlamaGrammar(text, lazy_patterns=() if forced else (trigger_pattern(fmt, names),))
    except GrammarParseError:
        _blame(functions)  # only a schema's part can be at fault: name its tool
        raise
    return ToolPlan(grammar, forced, fmt, names)


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
                    f"{TAG_OPEN}{json.dumps({'name': c['function']['name'], 'arguments': _arguments_object(c['function'].get('arguments'))}, ensure_ascii=False)}{TAG_CLOSE}"
                    for c in calls)
                m.pop("tool_calls")
                m["content"] = f"{m.get('content') or ''}{text}"
        if not renders_tools and m.get("content") is None:
            m["content"] = ""
        out.append(m)
    return out
