"""Tool (function) calling for chat completions, independent of the model's training format.

How a call is made:
- tool_choice "required" or a named function: the whole reply is constrained by a grammar to
  one JSON object {"name": ..., "arguments": {...}} whose arguments follow the function's
  parameters schema.
- tool_choice "auto" (the default when tools are given): the model writes text freely; once
  it writes ``<tool_call>``, a lazy grammar takes over and holds it to
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``.
If the chat template does not render `tools` itself, the tool list and this format are
described in a system message. The reply is parsed back into OpenAI `tool_calls`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from .json_schema import json_schema_to_gbnf
from .llama_grammar import LlamaGrammar

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
# llama.cpp's lazy grammars match trigger patterns against the whole output so far and feed
# the grammar from the first group on.
TRIGGER = r"[\s\S]*?(<tool_call>[\s\S]*)"


@dataclass
class ToolPlan:
    grammar: LlamaGrammar
    forced: bool  # the whole reply is a call (no <tool_call> tags)
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


def plan(tools: list[dict[str, Any]], tool_choice: Any) -> ToolPlan | None:
    """The grammar for these tools and this choice, or None for tool_choice "none"."""
    if tool_choice == "none" or not tools:
        return None
    functions = [_function(t) for t in tools]
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        functions = [f for f in functions if f["name"] == wanted]
        if not functions:
            raise ValueError(f"tool_choice names {wanted!r}, which is not among the tools")
        forced = True
    elif tool_choice in (None, "auto"):
        forced = False
    elif tool_choice == "required":
        forced = True
    else:
        raise ValueError(f"tool_choice must be 'none', 'auto', 'required' or a named function, got {tool_choice!r}")
    options = [{
        "type": "object",
        "properties": {"name": {"const": f["name"]}, "arguments": f.get("parameters") or {"type": "object"}},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for f in functions]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    call = re.sub(r"(?<![\w-])root(?![\w-])", "tool-call", json_schema_to_gbnf(schema))
    if forced:
        text = "root ::= tool-call\n" + call
    else:
        text = f'root ::= "{OPEN}" space tool-call space "{CLOSE}"\nspace ::= [ \\n]{{0,2}}\n' + call
    return ToolPlan(LlamaGrammar(text, lazy_patterns=() if forced else (TRIGGER,)), forced,
                    [f["name"] for f in functions])


def system_prompt(tools: list[dict[str, Any]], forced: bool) -> str:
    """Describes the tools for templates that do not render them."""
    listing = "\n".join(json.dumps(_function(t), ensure_ascii=False) for t in tools)
    how = ("Reply with one JSON object: {\"name\": <function name>, \"arguments\": <arguments object>}."
           if forced else
           f"To call a function, reply with {OPEN}{{\"name\": <function name>, \"arguments\": <arguments "
           f"object>}}{CLOSE}. Otherwise answer normally.")
    return f"You can call these functions:\n<tools>\n{listing}\n</tools>\n{how}"


def template_renders_tools(template: str | None) -> bool:
    return bool(template) and re.search(r"\btools\b", template or "") is not None


def with_system_prompt(messages: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{prompt}".strip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def parse(text: str, forced: bool) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) from a reply."""
    calls: list[dict[str, Any]] = []
    if forced:
        blobs, content = [text], None
    else:
        at = text.find(OPEN)
        if at < 0:
            return text, []
        content = text[:at].strip() or None
        blobs = re.findall(re.escape(OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CLOSE) + r"|$)", text[at:], flags=re.S)
    for blob in blobs:
        try:
            call = json.loads(blob)
        except json.JSONDecodeError:
            continue  # cut off by max_tokens; the text stays in content
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            calls.append({
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}),
                                                                          ensure_ascii=False)},
            })
    if not calls:
        return text, []
    return content, calls
