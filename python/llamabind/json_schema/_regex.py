"""Regular expressions (`pattern`) as GBNF for the JSON strings they match in full."""

from __future__ import annotations

import json
import re

from .._gbnf import MAX_REPETITION
from ._charsets import DIGITS, PRINTABLE, PRINTABLE_ASCII, PY_SPACE_ASCII, SPACE, WORD, json_chars, normalize, subtract
from ._gbnf_text import alt, group, literal, repeat, seq


class RegexError(ValueError):
    """A pattern that is not a regex, or uses what a grammar cannot express; says where."""


class Regex:
    """A regular expression (Python `re` syntax, the subset a grammar can express) -> GBNF for
    the JSON-encoded strings it matches in full."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def fail(self, what: str, at: int | None = None) -> RegexError:
        at = self.i if at is None else at
        return RegexError(f"{what} at offset {at} of pattern {self.p!r}")

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def convert(self) -> str:
        expr = self.alternation(top=True)
        if self.i < len(self.p):
            raise self.fail("unbalanced ')'")
        return expr

    def alternation(self, top: bool = False) -> str:
        options = [self.concat(top)]
        while self.peek() == "|":
            self.i += 1
            options.append(self.concat(top))
        return alt(options)

    def concat(self, top: bool) -> str:
        items: list[tuple[str, str]] = []  # ("lit", text) or ("expr", gbnf)
        start = self.i
        while self.i < len(self.p) and self.peek() not in "|)":
            c = self.peek()
            if c == "^" or (c == "\\" and self.p[self.i:self.i + 2] == "\\A"):
                if not (top and self.i == start):
                    raise self.fail("'^' anchor not at the start of the pattern (unsupported)")
                self.i += 1 if c == "^" else 2
                start = self.i
                continue
            if c == "$" or (c == "\\" and self.p[self.i:self.i + 2] == "\\Z"):
                end = self.i + (1 if c == "$" else 2)
                if not (top and (end == len(self.p) or self.p[end] == "|")):
                    raise self.fail("'$' anchor not at the end of the pattern (unsupported)")
                self.i = end
                continue
            atom = self.atom()
            lo_hi = self.quantifier()
            if lo_hi is None:
                items.append(atom)
                continue
            lo, hi = lo_hi
            expr = literal(json.dumps(atom[1])[1:-1]) if atom[0] == "lit" else atom[1]
            items.append(("expr", repeat(expr, lo, hi)))
        parts: list[str] = []
        text = ""
        for kind, value in items:
            if kind == "lit":
                text += value
                continue
            if text:
                parts.append(literal(json.dumps(text)[1:-1]))
                text = ""
            parts.append(value)
        if text:
            parts.append(literal(json.dumps(text)[1:-1]))
        return seq(*parts) if parts else ""

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.i += 1
            bounds: tuple[int, int | None] = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{":
            m = re.compile(r"\{(\d*)(,?)(\d*)\}").match(self.p, self.i)
            if m is None or (not m.group(1) and not m.group(2)) or (not m.group(1) and not m.group(3)):
                return None  # re reads a '{' that starts no repetition as a literal
            lo = int(m.group(1) or 0)
            hi = int(m.group(3)) if m.group(3) else (None if m.group(2) else lo)
            if hi is not None and hi < lo:
                raise self.fail(f"bad repetition {m.group(0)}")
            if lo > MAX_REPETITION:
                raise self.fail(f"repetition {m.group(0)} needs more than {MAX_REPETITION} copies")
            self.i = m.end()
            bounds = (lo, None if hi is None else min(hi, MAX_REPETITION))
        else:
            return None
        if self.peek() == "?":
            self.i += 1  # lazy: same language
        elif self.peek() == "+":
            raise self.fail("possessive quantifier (unsupported)")
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and re.match(r"\{\d", self.p[self.i:])):
            raise self.fail("multiple repeat")
        return bounds

    def atom(self) -> tuple[str, str]:
        c = self.peek()
        if c == "(":
            start = self.i
            self.i += 1
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.p.startswith("?P<", self.i):
                close = self.p.find(">", self.i)
                if close < 0:
                    raise self.fail("unterminated group name")
                self.i = close + 1
            elif self.peek() == "?":
                raise self.fail("lookaround, flags and other (?...) groups are unsupported")
            inner = self.alternation()
            if self.peek() != ")":
                raise self.fail("missing ')'", start)
            self.i += 1
            return ("expr", group(inner) if inner else '""')
        if c == "[":
            return ("expr", json_chars(self.char_class()))
        if c == ".":
            self.i += 1
            return ("expr", json_chars(PRINTABLE))
        if c == "\\":
            ranges, char = self.escape(in_class=False)
            if char is not None:
                return ("lit", char)
            return ("expr", json_chars(ranges))
        if c in "*+?":
            raise self.fail("nothing to repeat")
        if c == "{" and self.quantifier_like():
            raise self.fail("nothing to repeat")
        self.i += 1
        return ("lit", c)

    def quantifier_like(self) -> bool:
        m = re.compile(r"\{(\d*)(,?)(\d*)\}").match(self.p, self.i)
        return bool(m and (m.group(1) or (m.group(2) and m.group(3))))

    def escape(self, in_class: bool) -> tuple[list[tuple[int, int]], str | None]:
        """After a backslash: (ranges, None) for a class escape or ([], char) for a literal."""
        start = self.i
        self.i += 1
        c = self.peek()
        if not c:
            raise self.fail("trailing backslash", start)
        self.i += 1
        sets = {"d": DIGITS, "w": WORD, "s": SPACE, "D": subtract(PRINTABLE_ASCII, DIGITS),
                "W": subtract(PRINTABLE_ASCII, WORD), "S": subtract(PRINTABLE_ASCII, PY_SPACE_ASCII)}
        if c in sets:
            return list(sets[c]), None
        simple = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
        if c in simple:
            return [], simple[c]
        if in_class and c == "b":
            return [], "\b"
        if c in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[c]
            digits = self.p[self.i:self.i + size]
            if len(digits) != size or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"bad escape \\{c}", start)
            self.i += size
            return [], chr(int(digits, 16))
        if c == "0":
            return [], "\0"
        if c.isascii() and c.isalnum():
            raise self.fail(f"unsupported escape \\{c}", start)
        return [], c

    def char_class(self) -> list[tuple[int, int]]:
        start = self.i
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        approximate = False  # holds \d \w \s, whose Unicode extent is wider than what we generate
        first = True
        while True:
            c = self.peek()
            if not c:
                raise self.fail("unterminated character set", start)
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if self.p.startswith("[:", self.i):
                raise self.fail("POSIX classes like [:alpha:] are unsupported")
            if c == "\\":
                set_ranges, char = self.escape(in_class=True)
                if char is None:
                    ranges.extend(set_ranges)
                    approximate = approximate or self.p[self.i - 1] in "dwsDWS"
                    continue
                lo = ord(char)
            else:
                self.i += 1
                lo = ord(c)
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                if self.peek() == "\\":
                    set_ranges, char = self.escape(in_class=True)
                    if char is None:
                        raise self.fail("bad character range")
                    hi = ord(char)
                else:
                    hi = ord(self.peek())
                    self.i += 1
                if hi < lo:
                    raise self.fail("bad character range")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        if negated:
            ranges = subtract(PRINTABLE_ASCII if approximate else PRINTABLE, ranges)
        if not ranges:
            raise self.fail("character set matches nothing", start)
        return normalize(ranges)
