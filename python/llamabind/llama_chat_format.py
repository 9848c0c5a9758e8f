"""Chat formats: from OpenAI-style chat messages to a prompt string.

Three kinds of formatter share one calling convention, ``formatter(messages=[...], tools=...,
**kwargs) -> ChatFormatterResponse``:

- :class:`Jinja2ChatFormatter` renders a Jinja chat template (the model's own
  ``tokenizer.chat_template``, or one you pass) with Hugging Face ``apply_chat_template``
  semantics, in a sandbox;
- :class:`BuiltinChatFormatter` uses one of llama.cpp's built-in formats by name
  (:func:`llamabind.builtin_chat_templates`), plus llama-cpp-python's names for them;
- anything registered with :func:`register_chat_format`.

:func:`get_chat_formatter` picks one for a model::

    import llamabind as lb
    from llamabind.llama_chat_format import get_chat_formatter

    model = lb.Model(lb.models.default_model_path())
    fmt = get_chat_formatter(model)                      # the model's own template
    fmt = get_chat_formatter(model, chat_format="chatml")  # a built-in by name
    out = fmt(messages=[{"role": "user", "content": "Hi"}])
    out.prompt   # '<|im_start|>...<|im_start|>assistant\\n'
    out.stop     # ['<|im_end|>']

Templates are untrusted input
-----------------------------
A chat template travels inside the model file, so it is code from whoever made the file
(llama-cpp-python's CVE-2024-34359 was a template that ran shell commands). Templates render in
``jinja2.sandbox.ImmutableSandboxedEnvironment`` as Hugging Face does, which blocks
underscore attributes (``__class__``, ``__globals__``, ...), Python internals and in-place
changes of lists and dicts; on top of that no attribute of a function, method, class or module
may be read (``cycler.reset``), ``lipsum`` is gone, and the resource limits of
:class:`RenderLimits` (defaults in brackets) keep a template from hanging or exhausting memory:

- the prompt is at most ``max_output_chars`` characters [4,000,000, about 1M tokens];
- no single string, list or dict the template builds (with ``+``, ``*``, ``%``, ``~``,
  filters, string methods, macros and ``{% set %}`` blocks) exceeds ``max_value_size``
  items [4,000,000], checked before the work where the size is known in advance (``'a' * n``,
  ``x|center(n)``, ``s.replace(a, b)``, format widths, ``range``) and after it otherwise;
- everything those operations build adds up to at most ``max_total_chars`` [64,000,000];
- all ``for`` loops together run at most ``max_iterations`` times [1,000,000], and one
  ``range()`` has at most ``max_range`` items [100,000, Jinja's own sandbox limit];
- calls (macros, recursive loops, methods) nest at most ``max_call_depth`` deep [64];
- integers stay under 4096 bits (``10 ** 10 ** 10`` is refused, not computed);
- a render takes at most ``max_seconds`` of wall time [10 s], checked at every loop
  iteration, call and operator;
- a template source is at most ``max_template_chars`` characters [1,000,000].

Any violation, and any other failure inside a template, raises :class:`ChatTemplateError`
(a ``ValueError``) with the original exception (``jinja2.sandbox.SecurityError`` for sandbox
and limit violations) as its ``__cause__``. The limits are a best effort against hostile
templates in this process: a service that renders templates from unknown sources should
still run them under operating-system limits too.

Compiled templates are cached per template string (the 64 most recent).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from . import _jinja_sandbox
from ._core import LlamaError, Model, TokenAttr, builtin_chat_templates, chat_apply_template
from ._jinja_sandbox import ChatTemplateError, Message, RenderLimits, render_chat_template

__all__ = [
    "BuiltinChatFormatter",
    "ChatFormatter",
    "ChatFormatterResponse",
    "ChatTemplateError",
    "Jinja2ChatFormatter",
    "RenderLimits",
    "StoppingCriteria",
    "chat_format_names",
    "get_chat_format",
    "get_chat_formatter",
    "register_chat_format",
    "render_chat_template",
    "unregister_chat_format",
]

logger = logging.getLogger("llamabind")

StoppingCriteria = Callable[[npt.NDArray[np.intc], npt.NDArray[np.single]], bool]
"""``criteria(tokens, logits) -> bool``: True ends generation (llama-cpp-python's convention)."""


@dataclasses.dataclass
class ChatFormatterResponse:
    """A formatted prompt and how to stop generating its reply.

    ``stop``: strings that end the reply (None: rely on the model's end-of-generation tokens).
    ``stopping_criteria``: an optional ``(tokens, logits) -> bool`` check.
    ``added_special``: True when the prompt already carries the special tokens the model
    expects at its start (BOS), so tokenization must not add them again.
    """

    prompt: str
    stop: str | list[str] | None = None
    stopping_criteria: StoppingCriteria | None = None
    added_special: bool = False


class ChatFormatter(Protocol):
    """Turns chat messages into a prompt: ``formatter(messages=[...], **kwargs)``. Keyword
    arguments a formatter does not use (``tools``, ``functions``, ``tool_choice``, ...) are
    ignored."""

    def __call__(self, *, messages: Sequence[Message], **kwargs: Any) -> ChatFormatterResponse: ...


def _stop_on_tokens(token_ids: frozenset[int]) -> StoppingCriteria:
    def stop_on_last_token(tokens: npt.NDArray[np.intc], logits: npt.NDArray[np.single]) -> bool:
        return len(tokens) > 0 and int(tokens[-1]) in token_ids

    return stop_on_last_token


class Jinja2ChatFormatter:
    """A chat formatter from a Jinja chat template, rendered in the sandbox.

        fmt = Jinja2ChatFormatter(model.chat_template(), eos_token="<|im_end|>", bos_token="")
        fmt(messages=[{"role": "user", "content": "Hi"}]).prompt

    Messages, tools and extra keyword arguments reach the template unchanged (content given as
    a list of parts, assistant ``tool_calls``, ``tool`` messages); ``functions``, ``function_call``
    and ``tool_choice`` are defined in the template only when given. The response stops at
    ``eos_token`` and, when ``stop_token_ids`` are given, at any of those tokens; its
    ``added_special`` is True because the template writes whatever BOS the model wants.
    ``add_generation_prompt`` may also be passed per call. The template compiles once (when
    the formatter is made: a syntax error raises ChatTemplateError here) and is cached.
    """

    def __init__(
        self,
        template: str,
        eos_token: str,
        bos_token: str,
        add_generation_prompt: bool = True,
        stop_token_ids: list[int] | None = None,
        *,
        limits: RenderLimits | None = None,
    ) -> None:
        self.template = template
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.add_generation_prompt = add_generation_prompt
        self.stop_token_ids = frozenset(stop_token_ids) if stop_token_ids is not None else None
        self.limits = limits or _jinja_sandbox.DEFAULT_LIMITS
        self._compiled = _jinja_sandbox.compile_template(template, self.limits)

    def __repr__(self) -> str:
        return f"Jinja2ChatFormatter(<{len(self.template)}-character template>, eos_token={self.eos_token!r})"

    def __call__(
        self,
        *,
        messages: Sequence[Message],
        functions: Sequence[Mapping[str, Any]] | None = None,
        function_call: Any = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> ChatFormatterResponse:
        variables: dict[str, Any] = {
            "messages": messages,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": self.add_generation_prompt,
            "tools": tools,
        }
        # As in apply_chat_template, an argument not given stays undefined in the template
        # (firefunction v2 concatenates `functions`: UndefinedError, not a TypeError on None).
        optional = {"functions": functions, "function_call": function_call, "tool_choice": tool_choice}
        variables.update((name, value) for name, value in optional.items() if value is not None)
        variables.update(kwargs)
        prompt = _jinja_sandbox.render_compiled(self._compiled, variables, self.limits)
        return ChatFormatterResponse(
            prompt=prompt,
            stop=[self.eos_token] if self.eos_token else None,
            stopping_criteria=_stop_on_tokens(self.stop_token_ids) if self.stop_token_ids else None,
            added_special=True,
        )


# llama-cpp-python's chat_format names whose format llama.cpp has built in under another name.
# Names both use ("chatml", "gemma", "zephyr", "vicuna", "chatglm3", "openchat") need no entry;
# llama-cpp-python's other formats (alpaca, baichuan, openbuddy, ...) have no llama.cpp
# equivalent: register_chat_format adds them where needed.
_ALIASES: dict[str, str] = {
    # Meta's published Llama 2 chat format, system prompt in <<SYS>>.
    "llama-2": "llama2-sys",
    "llama-3": "llama3",
    # Mistral 7B Instruct v0.1: "[INST] ... [/INST]...</s>"; llama.cpp itself recognises that
    # template as its llama2 format (which also keeps a system message, inlined).
    "mistral-instruct": "llama2",
    # Qwen's chat format is ChatML (llama-cpp-python adds a default system prompt; we don't).
    "qwen": "chatml",
}

_PROBE_REPLY = "Zq7ProbeReply7qZ"
_PROBE_NEXT = "Zq7ProbeNext7qZ"


@functools.lru_cache(maxsize=None)
def _builtin_names() -> frozenset[str]:
    return frozenset(builtin_chat_templates())


@functools.lru_cache(maxsize=None)
def _turn_stops(name: str) -> tuple[str, ...]:
    """The marker that ends an assistant turn in a built-in format, read off llama.cpp's own
    rendering: what follows the assistant's text ('<|im_end|>', '<|eot_id|>', '</s>'), or if
    nothing does, what starts the next user turn ('<|user|>' for glmedge)."""
    user = {"role": "user", "content": "Zq7ProbeAsk7qZ"}
    reply = {"role": "assistant", "content": _PROBE_REPLY}
    text = chat_apply_template(name, [user, reply], False)
    at = text.rfind(_PROBE_REPLY)
    if at < 0:
        return ()
    end = text[at + len(_PROBE_REPLY) :].strip()
    if end:
        return (end,)
    text = chat_apply_template(name, [user, reply, {"role": "user", "content": _PROBE_NEXT}], False)
    at = text.find(_PROBE_REPLY)
    following = text.find(_PROBE_NEXT, at)
    if at < 0 or following < 0:
        return ()
    marker = text[at + len(_PROBE_REPLY) : following].strip()
    return (marker,) if marker else ()


def _text_content(content: Any, fmt: str) -> str:
    """A message's content as one string: text parts joined by newlines, as llama.cpp does."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                texts.append(str(part.get("text") or ""))
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ValueError(
                    f"[chat format {fmt!r}] content parts of type {kind!r} need a Jinja template;"
                    " built-in formats take text only"
                )
        return "\n".join(texts)
    raise ValueError(
        f"[chat format {fmt!r}] a message's content is a str or a list of parts, not {type(content).__name__}"
    )


class BuiltinChatFormatter:
    """One of llama.cpp's built-in chat formats, by llama.cpp's name (see
    :func:`llamabind.builtin_chat_templates`) or llama-cpp-python's ("llama-2", "llama-3",
    "mistral-instruct", "qwen").

        BuiltinChatFormatter("chatml")(messages=[{"role": "user", "content": "Hi"}]).prompt
        # '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'

    Built-in formats take roles and text only: content parts of type "text" are joined with
    newlines, ``tool_calls`` are dropped and tools are ignored (with a logged warning). The
    prompt has no BOS (``added_special`` is False: tokenize it with the model's special
    tokens). ``stop`` is the format's end-of-turn marker, read off llama.cpp's own rendering
    of an assistant turn; the model's end-of-generation tokens stop generation as well.
    """

    def __init__(self, name: str, add_generation_prompt: bool = True) -> None:
        llama_name = _ALIASES.get(name, name)
        if llama_name not in _builtin_names():
            raise ValueError(
                f"[BuiltinChatFormatter] unknown chat format {name!r}; llama.cpp's built-in formats:"
                f" {', '.join(sorted(_builtin_names()))}; llama-cpp-python names: {', '.join(sorted(_ALIASES))}"
            )
        self.name = name
        self.llama_cpp_name = llama_name
        self.add_generation_prompt = add_generation_prompt
        self.stop: tuple[str, ...] = _turn_stops(llama_name)

    def __repr__(self) -> str:
        return f"BuiltinChatFormatter({self.name!r})"

    def __call__(
        self,
        *,
        messages: Sequence[Message],
        functions: Sequence[Mapping[str, Any]] | None = None,
        function_call: Any = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> ChatFormatterResponse:
        if tools or functions:
            logger.warning(
                "[chat format %r] llama.cpp's built-in formats cannot show tools to the model;"
                " they are left out of the prompt (use a Jinja template that renders tools)",
                self.name,
            )
        add_assistant = bool(kwargs.get("add_generation_prompt", self.add_generation_prompt))
        chat = []
        for message in messages:
            role = message.get("role")
            if not isinstance(role, str):
                raise ValueError(f"[chat format {self.name!r}] each message needs a 'role' string: {message!r}")
            chat.append({"role": role, "content": _text_content(message.get("content"), self.name)})
        prompt = chat_apply_template(self.llama_cpp_name, chat, add_assistant)
        return ChatFormatterResponse(prompt=prompt, stop=list(self.stop) or None, added_special=False)


_registry: dict[str, ChatFormatter] = {}
_registry_lock = threading.Lock()

_F = TypeVar("_F", bound=Callable[..., ChatFormatterResponse])


def register_chat_format(name: str, *, overwrite: bool = False) -> Callable[[_F], _F]:
    """Decorator: makes a formatter available as ``chat_format=name``.

        @register_chat_format("my-format")
        def my_format(*, messages, **kwargs) -> ChatFormatterResponse:
            return ChatFormatterResponse(prompt="".join(m["content"] for m in messages))

    A name already registered or built in raises ValueError unless ``overwrite=True``
    (a registered name then takes precedence over the built-in one).
    """

    def decorator(formatter: _F) -> _F:
        with _registry_lock:
            if not overwrite and (name in _registry or name in _builtin_names() or name in _ALIASES):
                raise ValueError(
                    f"[register_chat_format] chat format {name!r} exists; pass overwrite=True to replace it"
                )
            _registry[name] = formatter
        return formatter

    return decorator


def unregister_chat_format(name: str) -> None:
    """Removes a format added with register_chat_format (KeyError if there is none)."""
    with _registry_lock:
        if name not in _registry:
            raise KeyError(f"[unregister_chat_format] no registered chat format {name!r}")
        del _registry[name]


def chat_format_names() -> list[str]:
    """Every name ``get_chat_format`` knows: registered, llama.cpp built-in, llama-cpp-python alias."""
    with _registry_lock:
        registered = set(_registry)
    return sorted(registered | _builtin_names() | set(_ALIASES))


def get_chat_format(name: str) -> ChatFormatter:
    """The formatter registered or built in under ``name``; ValueError listing the known names
    if there is none."""
    with _registry_lock:
        formatter = _registry.get(name)
    if formatter is not None:
        return formatter
    if name in _ALIASES or name in _builtin_names():
        return BuiltinChatFormatter(name)
    raise ValueError(
        f"[get_chat_format] unknown chat format {name!r}; known formats: {', '.join(chat_format_names())}"
    )


def _looks_like_jinja(text: str) -> bool:
    return "{%" in text or "{{" in text


def _token_text(model: Model, token: int) -> str:
    return model.vocab.text(token) if token >= 0 else ""


def _model_formatter(model: Model, template: str) -> Jinja2ChatFormatter:
    vocab = model.vocab
    stop_ids = [t for t in dict.fromkeys((vocab.eos, vocab.eot)) if t >= 0]
    return Jinja2ChatFormatter(
        template,
        eos_token=_token_text(model, vocab.eos),
        bos_token=_token_text(model, vocab.bos),
        stop_token_ids=stop_ids or None,
    )


# Turn markers that identify a built-in format when a model has no template of its own.
_FALLBACK_MARKERS = (
    ("chatml", "<|im_start|>"),
    ("gemma", "<start_of_turn>"),
    ("llama3", "<|start_header_id|>"),
    ("phi3", "<|assistant|>"),
    ("command-r", "<|START_OF_TURN_TOKEN|>"),
    ("granite", "<|start_of_role|>"),
)


def _fallback_format(model: Model) -> str:
    """The built-in format whose turn marker is a special token of this model's vocabulary,
    else ChatML (llama.cpp's own default)."""
    vocab = model.vocab
    special = TokenAttr.CONTROL | TokenAttr.USER_DEFINED
    for name, marker in _FALLBACK_MARKERS:
        tokens = vocab.tokenize(marker, add_special=False, parse_special=True)
        if len(tokens) == 1 and vocab.attr(tokens[0]) & special:
            return name
    return "chatml"


def get_chat_formatter(
    model: Model, chat_format: str | None = None, template_name: str | None = None
) -> ChatFormatter:
    """The chat formatter for ``model``.

    - ``chat_format=None``: the model's own Jinja template (``template_name`` picks a named one,
      e.g. "tool_use"), with BOS/EOS texts from its vocabulary, stopping at its EOS/EOT tokens.
      A model without a template gets the built-in format whose turn marker is a special token
      of its vocabulary (ChatML, Gemma, Llama 3, Phi 3, Command R, Granite), else ChatML as in
      llama.cpp, and a warning on the "llamabind" logger.
    - ``chat_format`` containing ``{%`` or ``{{``: that Jinja source, with the model's BOS/EOS.
    - any other ``chat_format``: a registered or built-in format by name (:func:`get_chat_format`).

        fmt = get_chat_formatter(model)
        fmt(messages=[{"role": "user", "content": "Hi"}]).prompt
    """
    if chat_format is not None:
        if template_name is not None:
            raise ValueError(
                "[get_chat_formatter] template_name picks one of the model's own templates;"
                " pass it without chat_format"
            )
        if _looks_like_jinja(chat_format):
            return _model_formatter(model, chat_format)
        return get_chat_format(chat_format)
    template = model.chat_template(template_name)
    if template is not None:
        return _model_formatter(model, str(template))
    if template_name is not None:
        prefix = "tokenizer.chat_template."
        names = sorted(key[len(prefix) :] for key in model.metadata if key.startswith(prefix))
        raise ValueError(
            f"[get_chat_formatter] {Path(model.path).name} has no chat template named {template_name!r};"
            f" its named templates: {', '.join(names) or 'none'}"
        )
    fallback = _fallback_format(model)
    logger.warning(
        "[get_chat_formatter] %s has no chat template; using llama.cpp's built-in %r format",
        Path(model.path).name,
        fallback,
    )
    return get_chat_format(fallback)
