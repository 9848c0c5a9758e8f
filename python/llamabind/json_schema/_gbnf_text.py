"""Building GBNF text: literals, character classes, choices, groups and repetitions."""

from __future__ import annotations

import re
from collections.abc import Iterable


def literal(text: str) -> str:
    """A GBNF string literal matching `text` exactly."""
    out = []
    for c in text:
        o = ord(c)
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _class_char(o: int) -> str:
    c = chr(o)
    if c.isascii() and c.isprintable() and c not in '[]\\-^"':
        return c
    if o < 0x100:
        return f"\\x{o:02X}"
    if o < 0x10000:
        return f"\\u{o:04X}"
    return f"\\U{o:08X}"


def gbnf_class(ranges: Iterable[tuple[int, int]], negated: bool = False) -> str:
    """A GBNF character class from inclusive code point ranges."""
    parts = []
    for lo, hi in ranges:
        parts.append(_class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}")
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


def alt(options: Iterable[str]) -> str:
    """One expression for a choice; a group unless there is a single option."""
    unique = list(dict.fromkeys(options))
    if len(unique) == 1:
        return unique[0]
    return "( " + " | ".join(o if o else '""' for o in unique) + " )"


def group(expr: str) -> str:
    """`expr` made safe to follow with a repetition operator."""
    if re.fullmatch(r'[A-Za-z0-9-]+|"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]', expr):
        return expr
    if expr.startswith("(") and expr.endswith(")") and _balanced_group(expr):
        return expr
    return f"( {expr} )"


def _balanced_group(expr: str) -> bool:
    """Whether expr is one parenthesised group (its first '(' closes at the very end)."""
    depth = 0
    in_str = in_cls = False
    i = 0
    while i < len(expr):
        c = expr[i]
        if in_str or in_cls:
            if c == "\\":
                i += 1
            elif (in_str and c == '"') or (in_cls and c == "]"):
                in_str = in_cls = False
        elif c == '"':
            in_str = True
        elif c == "[":
            in_cls = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0 and i != len(expr) - 1:
                return False
        i += 1
    return depth == 0


def repeat(expr: str, lo: int, hi: int | None) -> str:
    if hi is not None and hi == 0:
        return ""
    if lo == 0 and hi is None:
        return group(expr) + "*"
    if lo == 1 and hi is None:
        return group(expr) + "+"
    if lo == 0 and hi == 1:
        return group(expr) + "?"
    if lo == 1 and hi == 1:
        return expr
    if hi is None:
        return f"{group(expr)}{{{lo},}}"
    if lo == hi:
        return f"{group(expr)}{{{lo}}}"
    return f"{group(expr)}{{{lo},{hi}}}"


def seq(*parts: str) -> str:
    return " ".join(p for p in parts if p)
