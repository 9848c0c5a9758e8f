"""Chat formats: the models' own Jinja templates against their published formats, every
template bundled with llama.cpp, llama.cpp's built-in formats against llama-chat.cpp, and the
sandbox against template injection (CVE-2024-34359) and resource exhaustion."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jinja2.exceptions import SecurityError

import llamabind as lb
from llamabind.llama_chat_format import (
    BuiltinChatFormatter,
    ChatFormatterResponse,
    ChatTemplateError,
    Jinja2ChatFormatter,
    RenderLimits,
    chat_format_names,
    get_chat_format,
    get_chat_formatter,
    register_chat_format,
    render_chat_template,
    unregister_chat_format,
)
from testutil import run_in_threads

SYSTEM = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "4"}
USER2 = {"role": "user", "content": "And 3+3?"}


def chatml(*turns: tuple[str, str], generation_prompt: bool = True) -> str:
    """The ChatML format as published: <|im_start|>{role}\\n{content}<|im_end|>\\n per turn."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


# ----------------------------------------------------------------------------- SmolLM2's own template


def test_smollm2_template_is_chatml(smollm2: lb.Model) -> None:
    fmt = get_chat_formatter(smollm2)
    assert isinstance(fmt, Jinja2ChatFormatter)
    out = fmt(messages=[SYSTEM, USER])
    assert out.prompt == chatml(("system", "You are terse."), ("user", "What is 2+2?"))
    # Its EOS is <|im_end|>; the template writes what the model needs, so no BOS is added.
    assert out.stop == ["<|im_end|>"]
    assert out.added_special is True


def test_smollm2_template_multi_turn_without_generation_prompt(smollm2: lb.Model) -> None:
    fmt = get_chat_formatter(smollm2)
    assert isinstance(fmt, Jinja2ChatFormatter)
    turns = [SYSTEM, USER, ASSISTANT, USER2]
    expected = chatml(*[(m["role"], m["content"]) for m in turns], generation_prompt=False)
    assert fmt(messages=turns, add_generation_prompt=False).prompt == expected
    no_prompt = Jinja2ChatFormatter(fmt.template, eos_token="<|im_end|>", bos_token="", add_generation_prompt=False)
    assert no_prompt(messages=turns).prompt == expected
    assert fmt(messages=turns).prompt == expected + "<|im_start|>assistant\n"


def test_smollm2_template_default_system_prompt(smollm2: lb.Model) -> None:
    # SmolLM2's published template adds its own system turn when the chat has none.
    out = get_chat_formatter(smollm2)(messages=[USER])
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert out.prompt == chatml(("system", default), ("user", "What is 2+2?"))


def test_stop_token_ids_become_stopping_criteria(smollm2: lb.Model) -> None:
    vocab = smollm2.vocab
    out = get_chat_formatter(smollm2)(messages=[USER])
    assert out.stopping_criteria is not None
    logits = np.zeros(len(vocab), dtype=np.single)
    assert out.stopping_criteria(np.array([5, vocab.eos], dtype=np.intc), logits)
    assert not out.stopping_criteria(np.array([vocab.eos, 5], dtype=np.intc), logits)
    assert not out.stopping_criteria(np.array([], dtype=np.intc), logits)
    plain = Jinja2ChatFormatter("{{ messages[0].content }}", eos_token="", bos_token="")(messages=[USER])
    assert plain.stopping_criteria is None and plain.stop is None


def test_model_without_template_falls_back(gemma3: lb.Model, caplog: pytest.LogCaptureFixture) -> None:
    assert gemma3.chat_template() is None
    with caplog.at_level(logging.WARNING, logger="llamabind"):
        fmt = get_chat_formatter(gemma3)
    assert any("has no chat template" in r.getMessage() and "'gemma'" in r.getMessage() for r in caplog.records)
    # <start_of_turn> is a special token of Gemma's vocabulary, so the Gemma format is chosen.
    assert isinstance(fmt, BuiltinChatFormatter) and fmt.llama_cpp_name == "gemma"
    out = fmt(messages=[USER])
    assert out.prompt == "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"


def test_named_template_missing(smollm2: lb.Model) -> None:
    with pytest.raises(ValueError, match="no chat template named 'tool_use'"):
        get_chat_formatter(smollm2, template_name="tool_use")
    with pytest.raises(ValueError, match="without chat_format"):
        get_chat_formatter(smollm2, chat_format="chatml", template_name="tool_use")


def test_user_template_string(smollm2: lb.Model) -> None:
    source = "{{ bos_token }}{% for m in messages %}[{{ m.role|upper }}] {{ m.content }}{{ eos_token }}{% endfor %}"
    fmt = get_chat_formatter(smollm2, chat_format=source)
    out = fmt(messages=[SYSTEM, USER])
    assert out.prompt == "<|im_start|>[SYSTEM] You are terse.<|im_end|>[USER] What is 2+2?<|im_end|>"
    assert out.stop == ["<|im_end|>"]


# ----------------------------------------------------------------------------- llama.cpp's templates

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "extern" / "llama.cpp" / "models" / "templates"
TEMPLATES = sorted(TEMPLATE_DIR.glob("*.jinja"))
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current températures of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
# What some templates need beyond a system + user chat (each raises otherwise, as it does in
# Hugging Face transformers; test_template_requirements checks that).
TEMPLATE_INPUTS: dict[str, dict[str, Any]] = {
    # Tool-use variants iterate over `tools` unconditionally.
    "CohereForAI-c4ai-command-r-plus-tool_use": {"tools": [WEATHER_TOOL]},
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": {"tools": [WEATHER_TOOL]},
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": {"tools": [WEATHER_TOOL]},
    # Firefunction v2 writes `functions` (a JSON string) and `datetime` into its system prompt.
    "fireworks-ai-llama-3-firefunction-v2": {
        "functions": json.dumps([WEATHER_TOOL["function"]]),
        "datetime": "2025-01-01",
    },
    # Gemma 2 rejects system messages.
    "google-gemma-2-2b-it": {"messages": [USER]},
}


def test_templates_found() -> None:
    assert len(TEMPLATES) >= 50


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_bundled_template_renders(path: Path) -> None:
    inputs: dict[str, Any] = {"messages": [SYSTEM, USER], **TEMPLATE_INPUTS.get(path.stem, {})}
    prompt = render_chat_template(path.read_text(), bos_token="<s>", eos_token="</s>", **inputs)
    assert "What is 2+2?" in prompt
    if path.stem != "google-gemma-2-2b-it":
        assert "You are terse." in prompt


@pytest.mark.parametrize(
    ("stem", "match"),
    [
        ("google-gemma-2-2b-it", "the template rejected the messages: System role not supported"),
        ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", "TypeError"),
        ("fireworks-ai-llama-3-firefunction-v2", "'functions' is undefined"),
    ],
)
def test_template_requirements(stem: str, match: str) -> None:
    source = next(p for p in TEMPLATES if p.stem == stem).read_text()
    with pytest.raises(ChatTemplateError, match=match):
        render_chat_template(source, [SYSTEM, USER])


def test_tools_and_tool_messages_reach_the_template() -> None:
    source = next(p for p in TEMPLATES if p.stem == "Qwen-Qwen2.5-7B-Instruct").read_text()
    function = {"name": "get_weather", "arguments": {"city": "Paris"}}
    call = {"id": "call_1", "type": "function", "function": function}
    messages = [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 °C"},
    ]
    fmt = Jinja2ChatFormatter(source, eos_token="<|im_end|>", bos_token="")
    prompt = fmt(messages=messages, tools=[WEATHER_TOOL]).prompt
    # Hugging Face's tojson: keys in order, non-ASCII kept.
    assert "<tools>\n" + json.dumps(WEATHER_TOOL, ensure_ascii=False) + "\n</tools>" in prompt
    assert "températures" in prompt
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        "<|im_end|>\n"
    ) in prompt
    assert "<|im_start|>user\n<tool_response>\n18 °C\n</tool_response><|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_content_parts_pass_through() -> None:
    source = next(p for p in TEMPLATES if p.stem == "Qwen3.5-4B").read_text()
    content = [
        {"type": "text", "text": "What is in "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "?"},
    ]
    prompt = render_chat_template(source, [{"role": "user", "content": content}])
    assert "<|im_start|>user\nWhat is in <|vision_start|><|image_pad|><|vision_end|>?<|im_end|>\n" in prompt
    direct = "{{ messages[0].content[0].text }}|{{ messages[0].content[1].image_url.url }}"
    assert render_chat_template(direct, [{"role": "user", "content": content}]) == (
        "What is in |data:image/png;base64,AAAA"
    )


# ----------------------------------------------------------------------------- Hugging Face semantics


def test_hf_globals_and_filters() -> None:
    data = {"b": "é", "a": [1, 2]}
    assert render_chat_template("{{ x|tojson }}", [], x=data) == '{"b": "é", "a": [1, 2]}'
    assert render_chat_template("{{ x|tojson(indent=2, sort_keys=True) }}", [], x=data) == json.dumps(
        data, indent=2, sort_keys=True, ensure_ascii=False
    )
    assert render_chat_template("{{ x|tojson(separators=(',', ':')) }}", [], x=data) == '{"b":"é","a":[1,2]}'
    assert render_chat_template("{{ x|tojson(ensure_ascii=True) }}", [], x="é") == '"\\u00e9"'
    assert render_chat_template("{{ '<>&'|tojson }}", []) == '"<>&"'  # no HTML escaping
    year = render_chat_template("{{ strftime_now('%Y') }}", [])
    assert year.isdigit() and len(year) == 4
    loops = (
        "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
        "{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}"
    )
    assert render_chat_template(loops, []) == "0134"
    ns = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
    assert render_chat_template(ns, [USER, USER2]) == "2"
    items = "{% for k, v in x|items %}{{ k }}={{ v }}{% if not loop.last %},{% endif %}{% endfor %}"
    assert render_chat_template(items, [], x={"a": 1, "b": 2}) == "a=1,b=2"
    assert render_chat_template("{{ 'a b c'.split(' ')|join('+') }}", []) == "a+b+c"
    generation = "{% generation %}{{ messages[0].content }}{% endgeneration %}"
    assert render_chat_template(generation, [USER]) == "What is 2+2?"
    # trim_blocks / lstrip_blocks, as in transformers.
    assert render_chat_template("  {% if true %}\nx\n  {% endif %}\n", []) == "x\n"
    # Undefined names are empty (not errors), as in transformers.
    assert render_chat_template("[{{ nothing }}]", []) == "[]"
    with pytest.raises(ChatTemplateError, match="the template rejected the messages: roles must alternate"):
        render_chat_template("{{ raise_exception('roles must alternate') }}", [])


def test_variables_and_kwargs() -> None:
    fmt = Jinja2ChatFormatter(
        "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools|length if tools else 0 }}"
        "|{{ tool_choice }}|{{ extra }}",
        eos_token="</s>",
        bos_token="<s>",
    )
    out = fmt(messages=[USER], tools=[WEATHER_TOOL], tool_choice="auto", extra="yes")
    assert out.prompt == "<s>|</s>|True|1|auto|yes"
    assert fmt(messages=[USER], add_generation_prompt=False).prompt.split("|")[2] == "False"


def test_syntax_error_at_construction() -> None:
    with pytest.raises(ChatTemplateError, match="syntax error on line 1"):
        Jinja2ChatFormatter("{% for m in messages %}", eos_token="", bos_token="")


def test_templates_compile_once() -> None:
    source = "{# cache probe #}{{ messages|length }}"
    a = Jinja2ChatFormatter(source, eos_token="", bos_token="")
    b = Jinja2ChatFormatter(source, eos_token="x", bos_token="y")
    assert a._compiled is b._compiled


def test_concurrent_renders_keep_their_own_limits() -> None:
    source = next(p for p in TEMPLATES if p.stem == "Qwen-Qwen2.5-7B-Instruct").read_text()
    expected = render_chat_template(source, [SYSTEM, USER])
    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

    def work(index: int) -> None:
        for _ in range(20):
            if index % 2:
                assert render_chat_template(source, [SYSTEM, USER]) == expected
            else:
                with pytest.raises(ChatTemplateError, match="max_iterations"):
                    render_chat_template(bomb, [], limits=RenderLimits(max_iterations=1000))

    errors = run_in_threads(work, 4)
    assert not errors


# ----------------------------------------------------------------------------- the sandbox

INJECTIONS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch {canary}').read() }}",
    "{{ joiner.__init__.__globals__.os.system('touch {canary}') }}",
    "{{ namespace.__init__.__globals__.os.system('touch {canary}') }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch {canary}') }}",
    "{{ raise_exception.__globals__['os'].system('touch {canary}') }}",
    "{{ strftime_now.__globals__.__builtins__.open('{canary}', 'w') }}",
    "{{ range.__code__.co_consts }}",
    "{{ cycler.reset }}",  # no attribute of a class or function at all
    "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].system('touch {canary}') }}",
    "{{ messages|map(attribute='__class__')|list }}",
    "{{ '{0.__class__.__base__.__subclasses__}'.format(messages) }}",
    "{{ '{0.__init__.__globals__[os]}'.format(cycler) }}",
    "{% set x = messages.append({'role': 'user'}) %}{{ messages }}",
    "{{ messages[0].update({'content': 'x'}) }}",
    "{{ messages[0]['__class__'] }}",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_template_injection_is_refused(payload: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    fmt = Jinja2ChatFormatter(payload.replace("{canary}", str(canary)), eos_token="", bos_token="")
    with pytest.raises(ChatTemplateError, match="refused by the sandbox") as info:
        fmt(messages=[dict(USER)])
    assert isinstance(info.value.__cause__, SecurityError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, lb.LlamaError)
    assert not canary.exists()


def test_lipsum_is_gone() -> None:
    with pytest.raises(ChatTemplateError, match="undefined"):
        render_chat_template("{{ lipsum.__globals__ }}", [])


def test_includes_and_imports_fail() -> None:
    for source in ("{% include 'x.jinja' %}", "{% import 'x.jinja' as x %}", "{% extends 'x.jinja' %}"):
        with pytest.raises(ChatTemplateError):
            render_chat_template(source, [])


DOUBLE_64 = "{{% for i in range(64) %}}{}{{% endfor %}}"
LOOP_100K = "{{% for i in range(100000) %}}{}{{% endfor %}}"
RESOURCE_BOMBS = [
    ("{{ range(10**10)|list }}", "max_range"),
    ("{% for i in range(10**10) %}{% endfor %}", "max_range"),
    ("{{ 'a' * 10**10 }}", "max_value_size"),
    ("{{ ['a'] * 10**10 }}", "max_value_size"),
    ("{{ 10 ** (10 ** 10) }}", "bits"),
    ("{% set ns = namespace(n=7) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}", "bits"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "max_iterations"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "max_call_depth"),
    ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "max_call_depth"),
    ("{% set ns = namespace(s='a') %}" + DOUBLE_64.format("{% set ns.s = ns.s ~ ns.s %}"), "max_value_size"),
    ("{% set ns = namespace(s='a') %}" + DOUBLE_64.format("{% set ns.s = ns.s + ns.s %}"), "max_value_size"),
    ("{% set ns = namespace(l=[1]) %}" + DOUBLE_64.format("{% set ns.l = ns.l + ns.l %}"), "max_value_size"),
    ("{% macro m() %}" + LOOP_100K.format("{{ 'x' * 100 }}") + "{% endmacro %}{{ m()|length }}", "max_value_size"),
    ("{% set x %}" + LOOP_100K.format("x" * 64) + "{% endset %}{{ x|length }}", "max_value_size"),
    ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "max_output_chars"),
    (
        "{% set ns = namespace(l=[]) %}"
        "{% for i in range(100) %}{% set ns.l = ns.l + [('x' * 1000000) ~ i] %}{% endfor %}",
        "max_total_chars",
    ),
    ("{{ 'a'|center(999999999) }}", "max_value_size"),
    ("{{ 'a\\nb'|indent(999999999) }}", "max_value_size"),
    ("{{ 'a'.center(999999999) }}", "max_value_size"),
    ("{{ 'a'.zfill(999999999) }}", "max_value_size"),
    ("{{ ('x' * 1000000).replace('', 'yyyyyyyyyy') }}", "max_value_size"),
    ("{{ ('x' * 1000000)|replace('x', 'yyyyyyyyyy') }}", "max_value_size"),
    ("{{ (['x' * 1000000] * 100)|join }}", "max_value_size"),
    ("{{ ''.join(['x' * 1000000] * 100) }}", "max_value_size"),
    ("{{ (['x' * 1000000] * 100)|sum(start='') }}", "max_value_size"),
    ("{{ '%999999999d' % 1 }}", "max_value_size"),
    ("{{ '%*d' % (999999999, 1) }}", "max_value_size"),
    ("{{ '%999999999d'|format(1) }}", "max_value_size"),
    ("{{ '{:>999999999}'.format(1) }}", "max_value_size"),
    ("{{ '{a:{w}}'.format(a=1, w=999999999) }}", "max_value_size"),
    ("{{ [1]|batch(999999999, 0)|list }}", "max_value_size"),
    ("{{ 1|tojson(indent=100000) }}", "indent"),
]


@pytest.mark.parametrize(("payload", "limit"), RESOURCE_BOMBS)
def test_resource_bombs_are_refused(payload: str, limit: str) -> None:
    with pytest.raises(ChatTemplateError, match=limit) as info:
        render_chat_template(payload, [])
    assert isinstance(info.value.__cause__, SecurityError)


def test_time_limit() -> None:
    slow = "{% for i in range(100000) %}{{ (i|string) * 10 }}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="max_seconds"):
        render_chat_template(slow, [], limits=RenderLimits(max_seconds=0.01))


def test_template_size_limit() -> None:
    with pytest.raises(ChatTemplateError, match="max_template_chars"):
        Jinja2ChatFormatter("x" * 101, eos_token="", bos_token="", limits=RenderLimits(max_template_chars=100))


def test_deep_nesting_fails_cleanly() -> None:
    with pytest.raises(ChatTemplateError, match="cannot compile"):
        render_chat_template("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", [])


def test_limits_allow_large_legitimate_chats() -> None:
    source = next(p for p in TEMPLATES if p.stem == "Qwen-Qwen2.5-7B-Instruct").read_text()
    turns = [USER if i % 2 == 0 else ASSISTANT for i in range(2001)]
    big = {"role": "user", "content": "z" * 1_000_000}
    prompt = render_chat_template(source, [SYSTEM, *turns, big])
    assert prompt.count("<|im_start|>") == 2004 and len(prompt) > 1_000_000


# ----------------------------------------------------------------------------- built-in formats

# Exactly what llama.cpp's src/llama-chat.cpp writes for system + user (+ generation prompt),
# which follows each model family's published format.
BUILTIN_SINGLE_TURN = {
    "chatml": "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n",
    # Meta's Llama 2 format (BOS comes from the tokenizer); "llama2" inlines the system prompt.
    "llama2": "[INST] S\nU [/INST]",
    "llama2-sys": "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]",
    # Meta's Llama 3 format (<|begin_of_text|> comes from the tokenizer).
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    # Gemma has no system role: llama.cpp prepends the system text to the first user turn.
    "gemma": "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n",
    "phi3": "<|system|>\nS<|end|>\n<|user|>\nU<|end|>\n<|assistant|>\n",
    "zephyr": "<|system|>\nS<|endoftext|>\n<|user|>\nU<|endoftext|>\n<|assistant|>\n",
    "vicuna": "S\n\nUSER: U\nASSISTANT:",
}
BUILTIN_STOPS = {
    "chatml": ["<|im_end|>"],
    "llama2": ["</s>"],
    "llama2-sys": ["</s>"],
    "llama3": ["<|eot_id|>"],
    "gemma": ["<end_of_turn>"],
    "phi3": ["<|end|>"],
    "zephyr": ["<|endoftext|>"],
    "vicuna": ["</s>"],
}
SYSTEM_USER = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]


@pytest.mark.parametrize("name", sorted(BUILTIN_SINGLE_TURN))
def test_builtin_format(name: str) -> None:
    out = get_chat_format(name)(messages=SYSTEM_USER)
    expected = ChatFormatterResponse(prompt=BUILTIN_SINGLE_TURN[name], stop=BUILTIN_STOPS[name], added_special=False)
    assert out == expected


def test_builtin_multi_turn() -> None:
    pairs = [("user", "U1"), ("assistant", "A1"), ("user", "U2")]
    turns = [{"role": role, "content": content} for role, content in pairs]
    assert get_chat_format("chatml")(messages=turns).prompt == chatml(*pairs)
    assert get_chat_format("llama2")(messages=turns).prompt == "[INST] U1 [/INST]A1</s>[INST] U2 [/INST]"
    assert get_chat_format("llama3")(messages=turns, add_generation_prompt=False).prompt == (
        "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
    )
    assert get_chat_format("gemma")(messages=turns).prompt == (
        "<start_of_turn>user\nU1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
        "<start_of_turn>user\nU2<end_of_turn>\n<start_of_turn>model\n"
    )
    no_prompt = BuiltinChatFormatter("chatml", add_generation_prompt=False)
    assert no_prompt(messages=turns).prompt == chatml(*pairs, generation_prompt=False)


@pytest.mark.parametrize(
    ("alias", "target"),
    [("llama-2", "llama2-sys"), ("llama-3", "llama3"), ("mistral-instruct", "llama2"), ("qwen", "chatml")],
)
def test_llama_cpp_python_names(alias: str, target: str) -> None:
    fmt = get_chat_format(alias)
    assert isinstance(fmt, BuiltinChatFormatter) and fmt.llama_cpp_name == target
    assert fmt(messages=SYSTEM_USER) == get_chat_format(target)(messages=SYSTEM_USER)


def test_every_builtin_name_works() -> None:
    for name in lb.builtin_chat_templates():
        more = [{"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
        out = get_chat_format(name)(messages=[*SYSTEM_USER, *more])
        assert "U" in out.prompt and "V" in out.prompt, name
        assert out.added_special is False


def test_unknown_format_lists_known_ones(smollm2: lb.Model) -> None:
    with pytest.raises(ValueError, match="unknown chat format 'alpaca'.*chatml.*llama-2") as info:
        get_chat_format("alpaca")
    assert "llama3" in str(info.value)
    with pytest.raises(ValueError, match="unknown chat format"):
        get_chat_formatter(smollm2, chat_format="no-such-format")
    with pytest.raises(ValueError, match="unknown chat format"):
        BuiltinChatFormatter("no-such-format")


def test_builtin_content_parts_and_tool_messages(caplog: pytest.LogCaptureFixture) -> None:
    fmt = get_chat_format("chatml")
    parts = {"role": "user", "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}]}
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [parts, {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "content": "42"}]
    with caplog.at_level(logging.WARNING, logger="llamabind"):
        out = fmt(messages=messages, tools=[WEATHER_TOOL])
    assert out.prompt == chatml(("user", "line 1\nline 2"), ("assistant", ""), ("tool", "42"))
    assert any("cannot show tools" in r.getMessage() for r in caplog.records)
    image = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
    with pytest.raises(ValueError, match="'image_url' need a Jinja template"):
        fmt(messages=[image])
    with pytest.raises(ValueError, match="'role'"):
        fmt(messages=[{"content": "x"}])


# ----------------------------------------------------------------------------- registry


def test_register_chat_format(smollm2: lb.Model) -> None:
    @register_chat_format("test-shout")
    def shout(*, messages: list[dict[str, Any]], **kwargs: Any) -> ChatFormatterResponse:
        return ChatFormatterResponse(prompt=" ".join(str(m["content"]).upper() for m in messages), stop="!")

    try:
        assert "test-shout" in chat_format_names()
        assert get_chat_format("test-shout") is shout
        assert get_chat_formatter(smollm2, chat_format="test-shout")(messages=[USER]).prompt == "WHAT IS 2+2?"
        with pytest.raises(ValueError, match="exists"):
            register_chat_format("test-shout")(shout)
        register_chat_format("test-shout", overwrite=True)(shout)
    finally:
        unregister_chat_format("test-shout")
    assert "test-shout" not in chat_format_names()
    with pytest.raises(KeyError):
        unregister_chat_format("test-shout")


def test_register_over_builtin_needs_overwrite() -> None:
    def mine(*, messages: list[dict[str, Any]], **kwargs: Any) -> ChatFormatterResponse:
        return ChatFormatterResponse(prompt="mine")

    for name in ("chatml", "llama-2"):
        with pytest.raises(ValueError, match="overwrite=True"):
            register_chat_format(name)(mine)
    register_chat_format("chatml", overwrite=True)(mine)
    try:
        assert get_chat_format("chatml")(messages=[USER]).prompt == "mine"
    finally:
        unregister_chat_format("chatml")
    assert isinstance(get_chat_format("chatml"), BuiltinChatFormatter)


def test_names_cover_builtins_and_aliases() -> None:
    names = chat_format_names()
    assert set(lb.builtin_chat_templates()) <= set(names)
    assert {"llama-2", "llama-3", "mistral-instruct", "qwen"} <= set(names)
