"""Reference check of the chat-template renderer: every template bundled with llama.cpp, rendered
by our sandbox and by Hugging Face transformers' own renderer (``render_jinja_template``, what
``apply_chat_template`` calls), must give the same prompt for the same inputs, or both must
raise for the same reason.

The inputs are plain JSON data (no reasoning fields, no dataclasses), so transformers' input
normalisation leaves them as they are and both renderers see the same messages.
"""

from __future__ import annotations

import copy
import datetime
import json
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, cast

import jinja2
import pytest
from transformers.utils import chat_template_utils

import llamabind._jinja_sandbox as jinja_sandbox
from llamabind.llama_chat_format import ChatTemplateError, Jinja2ChatFormatter, render_chat_template

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "extern" / "llama.cpp" / "models" / "templates"
TEMPLATES = sorted(TEMPLATE_DIR.glob("*.jinja"))

# Generic texts rather than each family's own: the renderers pass them through untouched, and
# distinct markers show where each template puts them.
BOS = "<s>"
EOS = "</s>"

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city (°C or °F)",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current local time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string", "description": "IANA time zone name"}},
                "required": ["timezone"],
            },
        },
    },
]

SYSTEM = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "4"}
USER2 = {"role": "user", "content": "And 3+3?"}
WEATHER_QUESTION = {"role": "user", "content": "What is the weather in Paris?"}
# Arguments as a dict, as transformers' documentation specifies. Content is "" (OpenAI sends
# null): Qwen 3, QwQ, Granite 3.3, Devstral and the R1 distills call string methods on the
# content of every assistant message and fail on a missing or null one in both renderers.
TOOL_CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ],
}
TOOL_RESULT = {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "22 C"}
FINAL_ANSWER = {"role": "assistant", "content": "It is 22 C in Paris."}

CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    # No system message: the templates' own default system prompts (several print today's
    # date) and Gemma 2, which rejects system messages.
    "user_only": [USER],
    "system_user": [SYSTEM, USER],
    "multi_turn": [SYSTEM, USER, ASSISTANT, USER2],
    "tools": [SYSTEM, WEATHER_QUESTION, TOOL_CALL, TOOL_RESULT, FINAL_ANSWER],
}

# Where a template expects the tool round trip in another shape, it gets that shape (otherwise
# both renderers raise, and the tool part of the template goes unchecked):
# functionary v3.2 writes `'>>>' + name + '\n' + arguments`, so arguments are a JSON string;
ARGUMENTS_AS_JSON_STRING = frozenset({"meetkai-functionary-medium-v3.2"})
# Mistral's templates raise_exception() unless a call id is 9 alphanumeric characters.
NINE_CHARACTER_CALL_IDS = frozenset({"Mistral-Small-3.2-24B-Instruct-2506", "mistralai-Mistral-Nemo-Instruct-2407"})

# A clock both renderers read (strftime_now calls datetime.now() in each): templates that print
# today's date render the same text whatever the day, and the summary checks they print this one.
class _FrozenClock(datetime.datetime):
    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _FrozenClock:
        return cls(2031, 3, 7, 9, 30)


FROZEN_YEAR = "2031"


@pytest.fixture(scope="module", autouse=True)
def frozen_clock() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        # transformers: `from datetime import datetime`; ours: `import datetime`.
        mp.setattr(chat_template_utils, "datetime", _FrozenClock)
        mp.setattr(jinja_sandbox, "datetime", types.SimpleNamespace(datetime=_FrozenClock))
        yield


def supports_tools(source: str) -> bool:
    return "tools" in source or "tool_calls" in source


def messages_for(template: str, kind: str) -> list[dict[str, Any]]:
    messages = copy.deepcopy(CONVERSATIONS[kind])
    for message in messages:
        if template in NINE_CHARACTER_CALL_IDS and "tool_call_id" in message:
            message["tool_call_id"] = "call00001"
        for call in message.get("tool_calls", ()):
            if template in NINE_CHARACTER_CALL_IDS:
                call["id"] = "call00001"
            if template in ARGUMENTS_AS_JSON_STRING:
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    return messages


class Case(NamedTuple):
    template: Path
    kind: str
    add_generation_prompt: bool

    @property
    def id(self) -> str:
        return f"{self.template.stem}-{self.kind}-{'gen' if self.add_generation_prompt else 'nogen'}"


CASES = [
    Case(path, kind, add_generation_prompt)
    for path in TEMPLATES
    for kind in CONVERSATIONS
    if kind != "tools" or supports_tools(path.read_text())
    for add_generation_prompt in (True, False)
]


class Outcome(NamedTuple):
    status: str  # "equal": the same prompt; "both raise": the same failure; "mismatch"
    detail: str
    prompt: str | None


def _first_difference(ours: str, ref: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), min(len(ours), len(ref)))
    window = slice(max(at - 40, 0), at + 40)
    return f"differs at character {at}: ours {ours[window]!r}, transformers {ref[window]!r}"


def _same_failure(ours: ChatTemplateError, ref: Exception) -> bool:
    if type(ref) is jinja2.TemplateError:  # transformers' raise_exception()
        return ours.__cause__ is None and str(ours).endswith(f"the template rejected the messages: {ref}")
    return type(ours.__cause__) is type(ref)


def compare(case: Case) -> Outcome:
    """Renders one case with transformers, render_chat_template and Jinja2ChatFormatter."""
    source = case.template.read_text()
    messages = messages_for(case.template.stem, case.kind)
    tools: list[Any] | None = TOOLS if case.kind == "tools" else None
    agp = case.add_generation_prompt
    ref: str | None = None
    ref_error: Exception | None = None
    try:
        # Annotated `-> str`, it returns (one prompt per conversation, generation indices).
        prompts, _ = cast(
            "tuple[list[str], list[Any]]",
            chat_template_utils.render_jinja_template(
                [messages], tools=tools, chat_template=source, add_generation_prompt=agp, bos_token=BOS, eos_token=EOS
            ),
        )
        ref = prompts[0]
    except Exception as exc:  # the reference's own failure is the outcome to match
        ref_error = exc

    def ours_direct() -> str:
        return render_chat_template(
            source, messages, tools=tools, add_generation_prompt=agp, bos_token=BOS, eos_token=EOS
        )

    def ours_formatter() -> str:
        formatter = Jinja2ChatFormatter(source, eos_token=EOS, bos_token=BOS, add_generation_prompt=agp)
        return formatter(messages=messages, tools=tools).prompt

    for name, render in (("render_chat_template", ours_direct), ("Jinja2ChatFormatter", ours_formatter)):
        try:
            prompt = render()
        except ChatTemplateError as exc:
            if ref_error is None:
                return Outcome("mismatch", f"{name} raised {exc!r}; transformers rendered", None)
            if not _same_failure(exc, ref_error):
                detail = f"{name} raised {exc!r} (cause {exc.__cause__!r}); transformers raised {ref_error!r}"
                return Outcome("mismatch", detail, None)
            continue
        if ref is None:
            return Outcome("mismatch", f"{name} rendered; transformers raised {ref_error!r}", None)
        if prompt != ref:
            return Outcome("mismatch", f"{name} {_first_difference(prompt, ref)}", None)
    if ref_error is not None:
        return Outcome("both raise", f"{type(ref_error).__name__}: {ref_error}", None)
    return Outcome("equal", "", ref)


def test_templates_found() -> None:
    assert len(TEMPLATES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_matches_transformers(case: Case) -> None:
    outcome = compare(case)
    assert outcome.status != "mismatch", outcome.detail


def test_summary() -> None:
    """All cases at once: the counts per conversation kind, and which cases raise in both
    (shown with pytest -s)."""
    totals: Counter[str] = Counter()
    counts: Counter[tuple[str, str]] = Counter()
    failed_templates: set[str] = set()
    mismatches: list[str] = []
    both_raise: dict[tuple[str, str], str] = {}
    dated: dict[str, bool] = {}
    for case in CASES:
        outcome = compare(case)
        totals[case.kind] += 1
        counts[case.kind, outcome.status] += 1
        if outcome.status == "mismatch":
            failed_templates.add(case.template.stem)
            mismatches.append(f"{case.id}: {outcome.detail}")
        elif outcome.status == "both raise":
            both_raise[case.template.stem, case.kind] = outcome.detail
        if "strftime_now" in case.template.read_text():
            printed = FROZEN_YEAR in (outcome.prompt or "")
            dated[case.template.stem] = dated.get(case.template.stem, False) or printed

    lines = ["", "chat templates against transformers' render_jinja_template:"]
    for kind, total in totals.items():
        equal, raised = counts[kind, "equal"], counts[kind, "both raise"]
        lines.append(f"  {kind:12} {equal + raised}/{total} match ({equal} equal prompts, {raised} both raise)")
    n_cases = sum(totals.values())
    lines.append(f"  cases        {n_cases - len(mismatches)}/{n_cases} match")
    n_templates = len(TEMPLATES)
    lines.append(f"  templates    {n_templates - len(failed_templates)}/{n_templates} match in every case")
    lines.append("raising in both (either add_generation_prompt):")
    lines.extend(f"  {stem} [{kind}]: {reason[:100]}" for (stem, kind), reason in both_raise.items())
    print("\n".join(lines))

    assert not mismatches, "\n".join(mismatches)
    # The frozen clock reached both renderers: every template that reads the date printed it.
    assert dated and all(dated.values()), dated
