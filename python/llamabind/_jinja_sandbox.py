"""The sandbox chat templates render in: Jinja's immutable sandbox with Hugging Face's
chat-template globals, guards on every loop, call, operator and filter, and the resource
limits of :class:`RenderLimits`.

What a template may and may not do, and the limits, are described in the documentation of
:mod:`llamabind.llama_chat_format`, the public module that re-exports this one's names.
Compiled templates are cached per template string (the 64 most recent).
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import functools
import json
import re
import string
import time
import types
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.parser import Parser
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ._core import LlamaError

Message = Mapping[str, Any]
"""One chat message: a dict with 'role', 'content' and whatever else the template reads."""


class ChatTemplateError(LlamaError, ValueError):
    """A chat template could not be compiled or rendered, was refused by the sandbox, hit a
    resource limit, or rejected the messages (``raise_exception`` in the template)."""


@dataclasses.dataclass(frozen=True)
class RenderLimits:
    """Resource limits of one template render (see llamabind.llama_chat_format's documentation)."""

    max_output_chars: int = 4_000_000
    max_value_size: int = 4_000_000
    max_total_chars: int = 64_000_000
    max_iterations: int = 1_000_000
    max_range: int = 100_000
    max_call_depth: int = 64
    max_seconds: float = 10.0
    max_template_chars: int = 1_000_000


# Tracebacks, pickles and signatures name the public classes by their public home (set after
# @dataclass, which looks the module up while it builds the class).
ChatTemplateError.__module__ = RenderLimits.__module__ = "llamabind.llama_chat_format"

DEFAULT_LIMITS = RenderLimits()
_MAX_INT_BITS = 4096


class _Budget:
    """What one render has used so far; the sandbox's hooks charge it."""

    __slots__ = ("limits", "deadline", "iterations", "total", "depth")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.iterations = 0
        self.total = 0
        self.depth = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(
                f"rendering took longer than {self.limits.max_seconds} s (RenderLimits.max_seconds)"
            )

    def tick(self) -> None:
        self.iterations += 1
        if self.iterations > self.limits.max_iterations:
            raise SecurityError(
                f"loops ran more than {self.limits.max_iterations} iterations"
                " (RenderLimits.max_iterations)"
            )
        self.check_time()

    def size(self, n: int, what: str) -> None:
        if n > self.limits.max_value_size:
            raise SecurityError(
                f"{what} would hold {n} items, more than {self.limits.max_value_size}"
                " (RenderLimits.max_value_size)"
            )

    def built(self, value: object, what: str) -> None:
        """Charges a value the template just built."""
        n = _length(value)
        if n:
            self.size(n, what)
            self.total += n
            if self.total > self.limits.max_total_chars:
                raise SecurityError(
                    f"the template built more than {self.limits.max_total_chars} characters"
                    " in all (RenderLimits.max_total_chars)"
                )


_ACTIVE: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "llamabind_chat_template_budget", default=None
)


def _budget() -> _Budget:
    budget = _ACTIVE.get()
    if budget is None:
        # Only reachable while Jinja folds constants at compile time; refusing there makes
        # it leave the expression to render time, where the limits apply.
        raise SecurityError("sandboxed operations run only while rendering")
    return budget


def _length(value: object) -> int:
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return len(value)
    return 0


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _as_size(value: object) -> int:
    """An int argument used as a width or count (0 for anything else)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else 0
    return value


def _check_replace(budget: _Budget, text: object, old: object, new: object, count: object) -> None:
    if not (isinstance(text, (str, bytes)) and isinstance(old, type(text)) and isinstance(new, type(text))):
        return
    hits = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    budget.size(len(text) + hits * (len(new) - len(old)), "str.replace's result")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _check_int_args(budget: _Budget, values: Iterable[object], what: str) -> None:
    for value in values:
        if isinstance(value, int):
            budget.size(abs(value), what)


def _check_percent_format(budget: _Budget, fmt: str, args: object) -> None:
    """'%10d' % x: the widths and precisions may not exceed the value size limit."""
    star = False
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group == "*":
                star = True
            elif group is not None:
                budget.size(int(group) if len(group) < 12 else 10**12, "a %-format width")
    if star:
        values = args if isinstance(args, tuple) else (args,)
        _check_int_args(budget, values, "a %-format width")


def _check_str_format(budget: _Budget, fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """'{:>10}'.format(x): the widths in the specs, and any argument a nested spec might use."""
    nested = False
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _literal, _field, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            nested = True
        for digits in re.findall(r"\d+", spec):
            budget.size(int(digits) if len(digits) < 12 else 10**12, "a format width")
    if nested:
        values: list[object] = [*args, *kwargs.values()]
        for value in list(values):
            if isinstance(value, Mapping):
                values.extend(value.values())
        _check_int_args(budget, values, "a format width")


def _check_method_call(
    budget: _Budget, obj: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Refuses str/bytes method calls whose result would be too large; returns the args to use."""
    if not isinstance(obj, types.BuiltinMethodType):
        return args
    target = getattr(obj, "__self__", None)
    if not isinstance(target, (str, bytes)):
        return args
    name = obj.__name__
    if name in ("center", "ljust", "rjust", "zfill"):
        budget.size(_as_size(_arg(args, kwargs, 0, "width")), f"str.{name}'s result")
    elif name == "expandtabs":
        tab = _as_size(_arg(args, kwargs, 0, "tabsize", 8))
        tabs = target.count("\t") if isinstance(target, str) else target.count(b"\t")
        budget.size(len(target) + tabs * max(tab, 0), "str.expandtabs's result")
    elif name == "replace":
        _check_replace(budget, target, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"),
                       _arg(args, kwargs, 2, "count", -1))
    elif name == "join" and args:
        items = list(args[0])
        budget.size(sum(_length(x) for x in items) + len(target) * max(len(items) - 1, 0), "str.join's result")
        return (items, *args[1:])
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((_length(v) for v in args[0].values()), default=1)
        budget.size(len(target) * max(longest, 1), "str.translate's result")
    return args


def _checked_range(*args: Any) -> range:
    budget = _budget()
    result = range(*args)
    if len(result) > budget.limits.max_range:
        raise SecurityError(
            f"range() of {len(result)} items is larger than {budget.limits.max_range}"
            " (RenderLimits.max_range)"
        )
    return result


def _guarded_iteration(budget: _Budget, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        budget.tick()
        yield item


def _loop_guard(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wraps the iterable of every {% for %}: each iteration is counted and timed."""
    return _guarded_iteration(_budget(), iterable)


def _checked_join(parts: Iterable[Any]) -> str:
    """The ``~`` operator."""
    budget = _budget()
    texts = [str(part) for part in parts]
    budget.check_time()
    budget.size(sum(map(len, texts)), "a ~ concatenation")
    result = "".join(texts)
    budget.built(result, "a ~ concatenation")
    return result


def _checked_concat(parts: Iterable[str]) -> str:
    """Joins the captured output of macros, call blocks, filter blocks and {% set %} blocks."""
    budget = _ACTIVE.get()
    if budget is None:
        return "".join(parts)
    items = parts if isinstance(parts, list) else list(parts)
    budget.check_time()
    budget.size(sum(map(len, items)), "a captured block")
    result = "".join(items)
    budget.built(result, "a captured block")
    return result


_FilterCheck = Callable[[_Budget, Any, tuple[Any, ...], dict[str, Any]], Any]


def _filter_center(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    budget.size(_as_size(_arg(args, kwargs, 0, "width", 80)), "center's result")
    return value


def _filter_indent(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    width = _arg(args, kwargs, 0, "width", 4)
    step = len(width) if isinstance(width, str) else _as_size(width)
    text = str(value)
    budget.size(len(text) + (text.count("\n") + 1) * max(step, 0), "indent's result")
    return value


def _filter_wordwrap(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    width = max(_as_size(_arg(args, kwargs, 0, "width", 79)), 1)
    wrap = _arg(args, kwargs, 2, "wrapstring")
    step = len(wrap) if isinstance(wrap, str) else 1
    text = str(value)
    budget.size(len(text) + (len(text) // width + text.count("\n") + 1) * step, "wordwrap's result")
    return value


def _filter_replace(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _check_replace(budget, str(value), _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"),
                   _arg(args, kwargs, 2, "count"))
    return value


def _filter_join(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    items = list(value)
    sep = _arg(args, kwargs, 0, "d", "")
    if _arg(args, kwargs, 1, "attribute") is None:
        budget.size(sum(_length(x) for x in items) + _length(sep) * max(len(items) - 1, 0), "join's result")
    return items


def _filter_format(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _check_percent_format(budget, str(value), kwargs or args)
    return value


def _filter_tojson(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    indent = _arg(args, kwargs, 1, "indent")
    if (len(indent) if isinstance(indent, str) else _as_size(indent)) > 64:
        raise SecurityError("tojson's indent is larger than 64")
    separators = _arg(args, kwargs, 2, "separators")
    if separators is not None and any(_length(s) > 64 for s in separators):
        raise SecurityError("tojson's separators are longer than 64 characters")
    return value


def _filter_sum(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    start = _arg(args, kwargs, 1, "start", 0)
    if not _length(start) and not isinstance(start, (str, list, tuple)):
        return value
    items = list(value)
    budget.size(_length(start) + sum(_length(x) for x in items), "sum's result")
    return items


def _filter_count(name: str, index: int) -> _FilterCheck:
    def check(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        budget.size(_as_size(_arg(args, kwargs, index, name)), f"the {name} of a filter")
        return value

    return check


_FILTER_CHECKS: dict[str, _FilterCheck] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "wordwrap": _filter_wordwrap,
    "replace": _filter_replace,
    "join": _filter_join,
    "format": _filter_format,
    "tojson": _filter_tojson,
    "sum": _filter_sum,
    "batch": _filter_count("linecount", 0),
    "slice": _filter_count("slices", 0),
}


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its arguments and result against the render's budget. Jinja
    passes the context/environment first to filters marked for it (kept by functools.wraps)."""
    check = _FILTER_CHECKS.get(name)
    n_passed = 1 if hasattr(func, "jinja_pass_arg") else 0

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.check_time()
        if check is not None and len(args) > n_passed:
            value = check(budget, args[n_passed], args[n_passed + 1 :], kwargs)
            args = (*args[:n_passed], value, *args[n_passed + 1 :])
        result = func(*args, **kwargs)
        budget.built(result, f"the {name} filter's result")
        return result

    return guarded


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's tojson: plain json.dumps, no HTML escaping, non-ASCII kept."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: object) -> None:
    raise ChatTemplateError(f"[chat template] the template rejected the messages: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


# Objects whose attributes a template may not read at all: functions, methods, classes and
# modules are where sandbox escapes start (__globals__, __init__, ...).
_OPAQUE_TYPES: tuple[type, ...] = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.LambdaType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.CodeType,
    types.FrameType,
    types.TracebackType,
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
    functools.partial,
)

_LOOP_GUARD = "_llamabind_loop_guard"
_CHECKED_JOIN = "_llamabind_checked_join"


class _GuardedCodeGenerator(CodeGenerator):
    """Routes every for-loop's iterable through the loop guard and every ``~`` through a
    size-checked join; Jinja offers no other hook for either."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        iterable = node.iter
        already = (
            isinstance(iterable, nodes.Call)
            and isinstance(iterable.node, nodes.EnvironmentAttribute)
            and iterable.node.name == _LOOP_GUARD
        )
        if not already:
            guard = nodes.EnvironmentAttribute(_LOOP_GUARD, lineno=iterable.lineno)
            node.iter = nodes.Call(guard, [iterable], [], None, None, lineno=iterable.lineno)
            node.iter.set_environment(self.environment)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write(f"environment.{_CHECKED_JOIN}((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _GenerationTag(jinja2.ext.Extension):
    """Hugging Face's ``{% generation %}...{% endgeneration %}`` (marks the assistant's part
    for training masks): renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _ChatSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with Hugging Face's chat-template globals and our limits."""

    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})
    concat = staticmethod(_checked_concat)

    def __init__(self) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols, _GenerationTag],
        )
        self.filters["tojson"] = _tojson
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.globals.pop("lipsum", None)
        self.globals["range"] = _checked_range
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now
        setattr(self, _LOOP_GUARD, _loop_guard)
        setattr(self, _CHECKED_JOIN, _checked_join)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if issubclass(type(obj), _OPAQUE_TYPES):  # type(): isinstance would consult obj.__class__
            return False
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # Jinja returns an Undefined that fails only when used further (and prints as "");
        # failing at the access itself makes every probe of an internal name an error.
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.check_time()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                    budget.size(len(seq) * max(n, 0), "a repeated sequence")
                    break
            else:
                if isinstance(left, int) and isinstance(right, int):
                    if left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                        raise SecurityError(f"the product would exceed {_MAX_INT_BITS} bits")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                if right > _MAX_INT_BITS or right * (abs(left).bit_length() - 1) > _MAX_INT_BITS:
                    raise SecurityError(f"the power would exceed {_MAX_INT_BITS} bits")
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and type(left) is type(right):
                budget.size(len(left) + len(right), "a concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(budget, left, right)
        result = super().call_binop(context, operator, left, right)
        budget.built(result, f"the result of {operator}")
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        is_format_map = value.__name__ == "format_map"
        inner = wrapped

        def checked(*args: Any, **kwargs: Any) -> str:
            budget = _budget()
            if is_format_map and args and isinstance(args[0], Mapping):
                _check_str_format(budget, fmt, (), args[0])
            else:
                _check_str_format(budget, fmt, args, kwargs)
            result = inner(*args, **kwargs)
            budget.built(result, "str.format's result")
            return result

        return checked

    # Jinja's parameter names: double underscores keep them apart from the callee's keywords.
    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.depth += 1
        try:
            if budget.depth > budget.limits.max_call_depth:
                raise SecurityError(
                    f"calls nest deeper than {budget.limits.max_call_depth} (RenderLimits.max_call_depth)"
                )
            budget.check_time()
            args = _check_method_call(budget, __obj, args, kwargs)
            result = super().call(__context, __obj, *args, **kwargs)
        finally:
            budget.depth -= 1
        budget.built(result, "a call's result")
        return result


_ENV = _ChatSandbox()


@functools.lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"[chat template] syntax error on line {exc.lineno}: {exc.message}") from exc
    except Exception as exc:  # untrusted source: any failure is the template's
        raise ChatTemplateError(f"[chat template] cannot compile: {type(exc).__name__}: {exc}") from exc


def compile_template(source: str, limits: RenderLimits) -> jinja2.Template:
    """The compiled template (cached), or ChatTemplateError; checks the source against `limits`."""
    if not isinstance(source, str):
        raise TypeError(f"[chat template] a template is a str, not {type(source).__name__}")
    if len(source) > limits.max_template_chars:
        raise ChatTemplateError(
            f"[chat template] the template has {len(source)} characters, more than"
            f" {limits.max_template_chars} (RenderLimits.max_template_chars)"
        )
    return _compile(source)


def render_compiled(template: jinja2.Template, variables: dict[str, Any], limits: RenderLimits) -> str:
    """Renders a template from compile_template within `limits`; any failure is a ChatTemplateError."""
    budget = _Budget(limits)
    token = _ACTIVE.set(budget)
    chunks: list[str] = []
    size = 0
    # generate() is a generator; typed as an Iterator upstream.
    stream = cast(Generator[str, None, None], template.generate(variables))
    try:
        for chunk in stream:
            size += len(chunk)
            if size > limits.max_output_chars:
                raise SecurityError(
                    f"the prompt would be longer than {limits.max_output_chars} characters"
                    " (RenderLimits.max_output_chars)"
                )
            chunks.append(chunk)
    except ChatTemplateError:
        raise
    except SecurityError as exc:
        raise ChatTemplateError(f"[chat template] refused by the sandbox: {exc}") from exc
    except RecursionError as exc:
        raise ChatTemplateError("[chat template] recursion too deep") from exc
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"[chat template] {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # untrusted code: any failure is the template's
        raise ChatTemplateError(f"[chat template] rendering failed: {type(exc).__name__}: {exc}") from exc
    finally:
        stream.close()
        _ACTIVE.reset(token)
    return "".join(chunks)


def render_chat_template(
    template: str,
    messages: Sequence[Message],
    *,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    bos_token: str = "",
    eos_token: str = "",
    limits: RenderLimits | None = None,
    **kwargs: Any,
) -> str:
    """Renders a Jinja chat template in the sandbox, as Hugging Face's ``apply_chat_template``
    does: the template sees ``messages``, ``add_generation_prompt``, ``tools``, ``bos_token``,
    ``eos_token`` and every extra keyword argument, plus the globals ``raise_exception``,
    ``strftime_now``, ``namespace``, ``range``, ``dict``, ``cycler``, ``joiner`` and the
    ``tojson`` filter with Hugging Face's signature.

        render_chat_template("{% for m in messages %}{{ m.role }}: {{ m.content }}\\n{% endfor %}",
                             [{"role": "user", "content": "Hi"}])   # 'user: Hi\\n'

    Raises ChatTemplateError for any failure (see llamabind.llama_chat_format's documentation
    for the limits).
    """
    limits = limits or DEFAULT_LIMITS
    compiled = compile_template(template, limits)
    variables: dict[str, Any] = {
        "messages": messages,
        "add_generation_prompt": add_generation_prompt,
        "tools": tools,
        "bos_token": bos_token,
        "eos_token": eos_token,
    }
    variables.update(kwargs)
    return render_compiled(compiled, variables, limits)
