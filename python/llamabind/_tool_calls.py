"""Tool calls in a model's reply: the shapes they come in, and a scanner that finds them.

Models asked to call tools write them in more shapes than their template's own, so each of
these is a call (several may follow one another; other text is content):
- the template's own: ``<tool_call>{...}</tool_call>`` (Hermes, Qwen), ``[TOOL_CALLS][{...}]``
  (Mistral), ``<|python_tag|>{...}`` (Llama 3.x); Hermes tags are recognised whatever the template,
- a fenced block: ``` ```json\\n{...}\\n``` ``` (also without ``json``),
- a bare object ``{"name": ..., "arguments": {...}}`` (or ``"parameters"``), or a list of them,
where the name is one of the request's tools. ``CallScanner`` reads a reply as it is generated
and tells content from calls as soon as it can: content is held back only while it may still
open a call, and a call's arguments come out as they are written.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

WS_MAX = 12  # whitespace a shape may hold between two of its parts (the tool grammar's bound too)
WS_CHARS = " \t\r\n"
WS_REGEX = "[ \\t\\r\\n]{0,%d}" % WS_MAX
TAG_OPEN, TAG_CLOSE = "<tool_call>", "</tool_call>"
FENCE = "```"
FENCE_LANGS = ("json", "JSON")
ARGS_KEYS = ("arguments", "parameters")


@dataclass(frozen=True)
class ToolFormat:
    """A template's own call syntax: `open` calls (a list of them when `listed`), `close`
    ends each (Hermes); `args_key` is the arguments' key in its call objects."""

    name: str
    args_key: str
    open: str
    close: str
    listed: bool


HERMES = ToolFormat("hermes", "arguments", TAG_OPEN, TAG_CLOSE, False)
LLAMA3 = ToolFormat("llama3", "parameters", "<|python_tag|>", "", False)
MISTRAL = ToolFormat("mistral", "arguments", "[TOOL_CALLS]", "", True)

# A shape's text as parts: a tuple of alternative strings ("" among them: the part may be
# left out), or WS for up to WS_MAX whitespace characters. No alternative starts with
# whitespace, so whitespace is always read greedily.
WS = None
Part = tuple[str, ...] | None
BARE: tuple[str, ...] = ("",)  # the opening of a list or object that stands by itself


def _escape(text: str) -> str:
    """A regex matching `text`, in the syntax Python's re and C++ std::regex (ECMAScript) share."""
    return re.sub(r"([\\^$.|?*+()\[\]{}/])", r"\\\1", text)


def regex(parts: list[Part]) -> str:
    out = []
    for part in parts:
        if part is WS:
            out.append(WS_REGEX)
            continue
        options = [_escape(o) for o in part if o]
        body = options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"
        out.append(f"(?:{body})?" if "" in part else body)
    return "".join(out)


def _viable(text: str, i: int, parts: list[Part], k: int = 0) -> bool:
    """Whether text[i:] is the start of (or all of) the text of parts[k:]."""
    if i == len(text) or k == len(parts):
        return True
    part = parts[k]
    if part is WS:
        j = i
        while j < len(text) and j - i < WS_MAX and text[j] in WS_CHARS:
            j += 1
        return _viable(text, j, parts, k + 1)
    for option in part:
        if text.startswith(option, i):
            if _viable(text, i + len(option), parts, k + 1):
                return True
        elif option.startswith(text[i:]):
            return True
    return False


def head(names: Collection[str], *, with_arguments: bool) -> list[Part]:
    """A call object's start: its name (one of `names`) and, with_arguments, the arguments'
    key and the first character of their value (the text after which they stream)."""
    parts: list[Part] = [("{",), WS, ('"name"',), WS, (":",), WS,
                         tuple(json.dumps(n, ensure_ascii=False) for n in names), WS, (",",)]
    if with_arguments:
        parts += [WS, tuple(f'"{k}"' for k in ARGS_KEYS), WS, (":",), WS, ("{", '"')]
    return parts


@dataclass(frozen=True)
class Shape:
    """One way a block of calls opens: `opening` up to the first call object (then a list of
    calls if `listed`), `close` after the call (or the list)."""

    opening: tuple[str, ...]
    close: str
    listed: bool

    def parts(self, names: Collection[str], *, with_arguments: bool) -> list[Part]:
        start: list[Part] = [self.opening, WS] if self.opening != BARE else []
        if self.listed:
            start += [("[",), WS]
        return start + head(names, with_arguments=with_arguments)


def shapes(fmt: ToolFormat) -> list[Shape]:
    """The shapes recognised with a template's format: where two open at the same place, the
    first listed wins (a fenced call is not also a bare one)."""
    openings: list[tuple[tuple[str, ...], str]] = [((TAG_OPEN,), TAG_CLOSE)]
    if fmt.open != TAG_OPEN:
        openings.append(((fmt.open,), fmt.close))
    openings.append((tuple(FENCE + lang for lang in (*FENCE_LANGS, "")), FENCE))
    out = [Shape(opening, close, listed) for opening, close in openings for listed in (False, True)]
    return out + [Shape(BARE, "", True), Shape(BARE, "", False)]


def trigger_pattern(fmt: ToolFormat, names: Collection[str]) -> str:
    """The lazy grammar's trigger: a tag opens a call by itself; a fence, a list or a bare
    object once it names one of the tools (so that JSON which is no call stays free). Its
    one group starts the constrained text, which the tool grammar's root must accept."""
    options = []
    for shape in shapes(fmt):
        if shape.opening[0].startswith(FENCE) or shape.opening == BARE:
            options.append(regex(shape.parts(names, with_arguments=False)))
        elif not shape.listed:
            options.append(regex([shape.opening]))
    return "(" + "|".join(options) + ")"


@dataclass
class Call:
    """A call found in a reply: `arguments` is its arguments' JSON text as the model wrote it,
    less the whitespace between tokens (growing while it streams); `complete` once its object
    has closed."""

    name: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    arguments: str = ""
    complete: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Event:
    """What the scanner found next: content text, the start of call `call` (`start`; its id and
    name are in CallScanner.calls), or more of that call's arguments text."""

    content: str = ""
    call: int | None = None
    start: bool = False
    arguments: str = ""


class _Json:
    """Where a JSON value ends, read a character at a time (the value is well formed so far),
    and its text without the whitespace between tokens."""

    def __init__(self, depth: int = 0) -> None:
        self.depth = depth
        self.in_string = self.escaped = False

    def read(self, text: str, i: int) -> tuple[int, str, bool]:
        """(position reached, the compact text read, whether the value ended) from text[i]."""
        kept: list[str] = []
        while i < len(text):
            c = text[i]
            i += 1
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif c == "\\":
                    self.escaped = True
                elif c == '"':
                    self.in_string = False
                    if self.depth == 0:
                        return i, "".join(kept) + c, True
            elif c in WS_CHARS:
                continue
            elif c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    return i, "".join(kept) + c, True
            kept.append(c)
        return i, "".join(kept), False


_NAME = re.compile(r'"name"[ \t\r\n]*:[ \t\r\n]*("(?:[^"\\]|\\.)*")')


def _compact(text: str) -> str:
    """Arguments given as a JSON string: its JSON text, compact like the others'."""
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    except json.JSONDecodeError:
        return text


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in WS_CHARS:
        i += 1
    return i


class CallScanner:
    """Reads a reply as it comes (`feed`, then `close` at its end) and returns Events.

    Content is released as soon as it can no longer open a call; a call starts (id and name)
    once its opening names a tool and its arguments begin, and its arguments then come out as
    they are written. A call left unfinished at the end (the reply was cut short) is not
    complete: `parse` turns its block back into content."""

    def __init__(self, fmt: ToolFormat, names: Collection[str]) -> None:
        self._shapes = [(shape, re.compile(regex(parts)), parts) for shape in shapes(fmt)
                        for parts in [shape.parts(names, with_arguments=True)]]
        self._next = head(names, with_arguments=True)  # a listed block's next call, after its ","
        self._next_re = re.compile(regex(self._next))
        self._starts = {shape.opening[0][:1] or "{" for shape in shapes(fmt)} | {"{", "["}
        self.text = ""
        self.calls: list[Call] = []
        self._at = 0  # the text before this has been read
        self._state = "content"  # content | arguments | call | list | close
        self._shape: Shape | None = None
        self._json = _Json()
        self._quoted: str | None = None  # arguments given as a JSON string, as read so far
        self.block_start = 0  # where the block being read began, and its first call
        self.block_first_call = 0

    def feed(self, text: str) -> list[Event]:
        self.text += text
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> list[Event]:
        """The end of the reply: text held back as a possible call is content after all."""
        if self._state == "content" and self._at < len(self.text):
            events = [Event(content=self.text[self._at:])]
            self._at = len(self.text)
            return events
        return []

    @property
    def unfinished(self) -> bool:
        """Whether the reply ended inside a call."""
        return self._state in ("arguments", "call")

    def _step(self, events: list[Event]) -> bool:
        """Reads on from self._at; False when more text is needed."""
        text, at = self.text, self._at
        if self._state == "content":
            return self._content(events)
        if self._state == "arguments":
            self._at, piece, done = self._json.read(text, at)
            index = len(self.calls) - 1
            if self._quoted is not None:  # arguments written as a JSON string: decoded once whole
                self._quoted += piece
                if done:
                    self.calls[index].arguments = _compact(json.loads(self._quoted))
                    events.append(Event(call=index, arguments=self.calls[index].arguments))
            elif piece:
                self.calls[index].arguments += piece
                events.append(Event(call=index, arguments=piece))
            if done:
                self._state, self._json = "call", _Json(depth=1)
            return done
        if self._state == "call":  # the rest of the call object (keys after the arguments)
            self._at, _, done = self._json.read(text, at)
            if done:
                self.calls[-1].complete = True
                assert self._shape is not None
                self._state = "list" if self._shape.listed else "close"
            return done
        i = _skip_ws(text, at)
        if i == len(text):
            return False
        assert self._shape is not None
        if self._state == "list":
            if text[i] == "]":
                self._at, self._state = i + 1, "close"
                return True
            if text[i] == ",":
                match = self._next_re.match(text, _skip_ws(text, i + 1))
                if match:
                    self._start_call(events, match)
                    return True
                if _viable(text, _skip_ws(text, i + 1), self._next):
                    return False
            self._state = "content"  # not a list of calls after all: what follows is content
            return True
        close = self._shape.close or FENCE  # a bare call may end the fence a text opened
        if text.startswith(close, i):
            self._at = i + len(close)
        elif close.startswith(text[i:]):
            return False
        self._state = "content"
        return True

    def _content(self, events: list[Event]) -> bool:
        text, at = self.text, self._at
        found = None
        for shape, pattern, _ in self._shapes:
            match = pattern.search(text, at)
            if match and (found is None or match.start() < found[1].start()):
                found = (shape, match)
        if found is not None:
            shape, match = found
            if match.start() > at:
                events.append(Event(content=text[at:match.start()]))
            self._shape, self.block_start, self.block_first_call = shape, match.start(), len(self.calls)
            self._start_call(events, match)
            return True
        hold = len(text)
        for i in range(at, len(text)):
            if text[i] in self._starts and any(_viable(text, i, parts) for _, _, parts in self._shapes):
                hold = i
                break
        if hold > at:
            events.append(Event(content=text[at:hold]))
            self._at = hold
        return False

    def _start_call(self, events: list[Event], match: re.Match[str]) -> None:
        name = _NAME.search(match.group(0))
        assert name is not None
        self.calls.append(Call(json.loads(name.group(1))))
        events.append(Event(call=len(self.calls) - 1, start=True))
        self._at = match.end() - 1  # the value's first character, read as arguments
        self._quoted = "" if self.text[self._at] == '"' else None
        self._state, self._json = "arguments", _Json()


def parse(text: str, fmt: ToolFormat, names: Collection[str]) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of a whole reply. Content is the text around the calls (None if
    only whitespace is left); a reply without calls is all content, unchanged."""
    scanner = CallScanner(fmt, names)
    events = scanner.feed(text) + scanner.close()
    calls = scanner.calls
    content = "".join(e.content for e in events)
    if scanner.unfinished:  # the cut-off block stays text
        calls = calls[:scanner.block_first_call]
        content += text[scanner.block_start:]
    if not calls:
        return text, []
    return content.rstrip() or None, [c.as_dict() for c in calls if c.complete]
