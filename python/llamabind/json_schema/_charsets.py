"""Character sets as code point ranges, and one character of a set as it appears inside a JSON
string."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ._gbnf_text import alt, gbnf_class, literal

# The characters of the sets \d, \w, \s that are safe to generate whatever re's Unicode rules are.
DIGITS = [(0x30, 0x39)]
WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
SPACE = [(0x09, 0x0D), (0x20, 0x20)]
PY_SPACE_ASCII = [(0x09, 0x0D), (0x1C, 0x20)]  # what re's \s matches below 0x80
# What '.', negated sets and \D \W \S generate: no control characters (sound, and it keeps the
# grammar from offering dozens of \u00XX escapes at every position).
PRINTABLE = [(0x20, 0x7E), (0xA0, 0xD7FF), (0xE000, 0x10FFFF)]
PRINTABLE_ASCII = [(0x20, 0x7E)]


def normalize(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def subtract(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in normalize(a):
        for blo, bhi in normalize(b):
            if bhi < lo or blo > hi:
                continue
            if blo > lo:
                out.append((lo, blo - 1))
            lo = bhi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return out


JSON_SPECIAL = normalize([(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)])


def json_chars(ranges: list[tuple[int, int]]) -> str:
    """GBNF for one character of `ranges` as it appears inside a JSON string (escaped if need be)."""
    ranges = subtract(normalize(ranges), [(0xD800, 0xDFFF)])
    plain = subtract(ranges, JSON_SPECIAL)
    options = [gbnf_class(plain)] if plain else []
    for lo, hi in normalize(ranges):
        for o in range(max(lo, 0), min(hi, 0x7F) + 1):
            if any(slo <= o <= shi for slo, shi in JSON_SPECIAL):
                options.append(literal(json.dumps(chr(o))[1:-1]))
    if not options:
        raise ValueError("empty character set")
    return alt(options)
