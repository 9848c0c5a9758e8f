"""JSON Schema -> GBNF, so that generation can only produce JSON valid against the schema.

    from llamabind.json_schema import json_schema_to_gbnf
    gbnf = json_schema_to_gbnf({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}},
                                "required": ["age"]})
    llm.create_completion(prompt, grammar=LlamaGrammar(gbnf))   # or LlamaGrammar.from_json_schema(...)

The grammar is sound, not complete: every document it accepts is valid against the schema, but
it fixes some choices a validator leaves free, to keep generation short and on track:

* properties come in the schema's order; whitespace between tokens is at most one space, or
  one newline and up to 16 spaces/tabs of indentation; nothing surrounds the top-level value;
* an object that lists `properties` and does not mention `additionalProperties` gets no other
  keys (the OpenAI "strict" reading); an object without `properties` takes any keys; extra keys
  (additionalProperties true or a schema) never repeat a listed property and use no escapes;
  likewise a tuple (`prefixItems`, or an `items` array) without `items`/`additionalItems` gets
  no further items;
* strings use no surrogate \\u escapes; `pattern` matches the whole string (a match is also a
  search hit); `maxLength`, `maxItems` and regex repetition above 2000 are enforced as 2000
  (llama.cpp's repetition limit);
* integers have at most 18 digits unless a bound needs more; unbounded numbers have at most 16
  integer and 16 fraction digits and an exponent of at most 2 digits;
* numeric bounds are exact for integers (digit-range rules) and for numbers: a bounded number
  is written without exponent, with at most 15 significant digits unless a bound needs more, so
  that comparing it as a double agrees with comparing the decimal text;
* `oneOf` is treated as `anyOf` (that exactly one branch matches is not checked); `enum` values
  that fail the type, length, pattern or bound keywords beside them are left out (a `const` that
  fails them is an error), but object and array keywords beside them are not checked.

Supported: type (and type lists), enum, const, anyOf, oneOf, allOf (merged),
$ref to "#..." pointers ($defs, definitions, recursion), properties, required,
additionalProperties, items, prefixItems, additionalItems, minItems, maxItems, minLength,
maxLength, pattern (a regex subset), format (date, time, date-time, uuid, email, uri, ipv4),
minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers and draft-4 booleans).
Annotations (title, description, examples, ...) are ignored. Any other keyword raises
ValueError naming it and where it is, or with strict=False is dropped with a UserWarning.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, Union

__all__ = ["json_schema_to_gbnf"]

Schema = Union[dict[str, Any], bool]

# Keywords that only annotate: accepted anywhere and ignored.
ANNOTATIONS = frozenset({
    "title", "description", "examples", "default", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "$anchor", "$vocabulary", "contentEncoding", "contentMediaType",
    # OpenAPI's hint for a oneOf/anyOf whose branches carry a const tag (pydantic emits it); the
    # branches themselves are what is enforced.
    "discriminator",
})
_CONTAINERS = frozenset({"$defs", "definitions"})
_SUPPORTED = frozenset({
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref",
    "properties", "required", "additionalProperties",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
})
_WHY_UNSUPPORTED = {
    "not": "a grammar cannot express the complement of a schema",
    "if": "conditional schemas are not supported", "then": "conditional schemas are not supported",
    "else": "conditional schemas are not supported",
    "patternProperties": "keys matching a pattern are not supported",
    "propertyNames": "constraints on property names are not supported",
    "dependentSchemas": "dependencies between properties are not supported",
    "dependentRequired": "dependencies between properties are not supported",
    "dependencies": "dependencies between properties are not supported",
    "uniqueItems": "a grammar cannot enforce unique items",
    "multipleOf": "multipleOf is not supported",
    "contains": "contains is not supported", "minContains": "contains is not supported",
    "maxContains": "contains is not supported",
    "minProperties": "property counts are not supported", "maxProperties": "property counts are not supported",
    "unevaluatedProperties": "unevaluated* keywords are not supported",
    "unevaluatedItems": "unevaluated* keywords are not supported",
    "$dynamicRef": "dynamic references are not supported", "$recursiveRef": "dynamic references are not supported",
    "nullable": "it is OpenAPI 3.0, not JSON Schema (validators ignore it); use a type list like "
                "[\"string\", \"null\"]",
}
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_OBJECT_KEYS = ("properties", "required", "additionalProperties")
_ARRAY_KEYS = ("items", "prefixItems", "additionalItems", "minItems", "maxItems")
_STRING_KEYS = ("minLength", "maxLength", "pattern", "format")
_NUMBER_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")

# llama.cpp's repetition limit: larger maximums would silently become "unbounded".
_MAX_REPEAT = 2000
_INT_DIGITS = 18
_SIG_DIGITS = 15  # a decimal with at most 15 significant digits survives a trip through a double
_WS = r'ws ::= ( " " | "\n" [ \t]{0,16} )?'
# Characters a JSON string holds unescaped (DEL left out), and the escapes it may use (no
# surrogate \u escapes: a pair would decode to one character and break length counts).
_CHAR_RULE = (r'char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-CefEF] [0-9a-fA-F]{3} '
              r'| [dD] [0-7] [0-9a-fA-F]{2} ) )')
_PRIMITIVES = {
    "ws": _WS,
    "char": _CHAR_RULE,
    "plain-char": r'plain-char ::= [^"\\\x7F\x00-\x1F]',
    "string": r'string ::= "\"" char* "\""',
    "integer": rf'integer ::= "-"? ( "0" | [1-9] [0-9]{{0,{_INT_DIGITS - 1}}} )',
    "number": r'number ::= "-"? ( "0" | [1-9] [0-9]{0,15} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?',
    "boolean": r'boolean ::= "true" | "false"',
    "null": r'null ::= "null"',
    "value": r"value ::= object | array | string | number | boolean | null",
    "object": r'object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"',
    "array": r'array ::= "[" ws ( value ( ws "," ws value )* ws )? "]"',
}
_PRIMITIVE_DEPS = {
    "string": ("char",), "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("ws", "string", "value"), "array": ("ws", "value"),
}
_DIGIT = "[0-9]"


def json_schema_to_gbnf(schema: str | bytes | Schema | type, *, strict: bool = True) -> str:
    """GBNF text whose root rule matches JSON documents valid against `schema` (JSON text, a
    dict, True/False, or a pydantic model class). Raises ValueError for what it cannot enforce
    (with strict=False: warns and leaves that keyword out)."""
    return _Converter(_load(schema), strict).convert()


def _load(schema: str | bytes | Schema | type) -> Schema:
    if isinstance(schema, (str, bytes)):
        try:
            loaded = json.loads(schema)
        except json.JSONDecodeError as err:
            raise ValueError(f"the schema is not valid JSON: {err}") from None
        schema = loaded
    elif isinstance(schema, type):
        to_schema = getattr(schema, "model_json_schema", None)
        if not callable(to_schema):
            raise TypeError(f"a schema class must be a pydantic model (with model_json_schema()), got {schema!r}")
        schema = to_schema()
    if not isinstance(schema, (dict, bool)):
        raise TypeError(f"a JSON schema must be an object or a boolean, got {type(schema).__name__}")
    return schema


def _literal(text: str) -> str:
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


def _class(ranges: Iterable[tuple[int, int]], negated: bool = False) -> str:
    """A GBNF character class from inclusive code point ranges."""
    parts = []
    for lo, hi in ranges:
        parts.append(_class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}")
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


def _alt(options: Iterable[str]) -> str:
    """One expression for a choice; a group unless there is a single option."""
    unique = list(dict.fromkeys(options))
    if len(unique) == 1:
        return unique[0]
    return "( " + " | ".join(o if o else '""' for o in unique) + " )"


def _group(expr: str) -> str:
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


def _repeat(expr: str, lo: int, hi: int | None) -> str:
    if hi is not None and hi == 0:
        return ""
    if lo == 0 and hi is None:
        return _group(expr) + "*"
    if lo == 1 and hi is None:
        return _group(expr) + "+"
    if lo == 0 and hi == 1:
        return _group(expr) + "?"
    if lo == 1 and hi == 1:
        return expr
    if hi is None:
        return f"{_group(expr)}{{{lo},}}"
    if lo == hi:
        return f"{_group(expr)}{{{lo}}}"
    return f"{_group(expr)}{{{lo},{hi}}}"


def _seq(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _pointer(path: str) -> str:
    """Where a subschema is, as a JSON pointer fragment: '#', '#/properties/a'."""
    return "#" + path


# --- numbers ---------------------------------------------------------------------------------


def _digit_class(lo: int, hi: int) -> str:
    if lo == hi:
        return f'"{lo}"'
    if lo == 0 and hi == 9:
        return _DIGIT
    return f"[{lo}-{hi}]"


def _same_length_range(lo: str, hi: str) -> str:
    """Digit strings of len(lo) == len(hi) between lo and hi (leading zeros allowed)."""
    n = len(lo)
    if lo == hi:
        return f'"{lo}"'
    if n == 1:
        return _digit_class(int(lo), int(hi))
    if lo[0] == hi[0]:
        return _seq(f'"{lo[0]}"', _same_length_range(lo[1:], hi[1:]))
    a, b = int(lo[0]), int(hi[0])
    lo_full = lo[1:] == "0" * (n - 1)
    hi_full = hi[1:] == "9" * (n - 1)
    options = []
    if not lo_full:
        options.append(_seq(f'"{a}"', _group(_same_length_range(lo[1:], "9" * (n - 1)))))
    first, last = (a if lo_full else a + 1), (b if hi_full else b - 1)
    if first <= last:
        options.append(_seq(_digit_class(first, last), _repeat(_DIGIT, n - 1, n - 1)))
    if not hi_full:
        options.append(_seq(f'"{b}"', _group(_same_length_range("0" * (n - 1), hi[1:]))))
    return _alt(options)


def _natural_range(lo: int, hi: int | None, max_digits: int) -> str | None:
    """Canonical decimal naturals (no leading zeros) in [lo, hi]; hi None: up to max_digits
    digits. None when the range is empty."""
    lo = max(lo, 0)
    if hi is not None and hi < lo:
        return None
    options = []
    top_len = len(str(hi)) if hi is not None else max(max_digits, len(str(lo)))
    for length in range(len(str(lo)), top_len + 1):
        start = max(lo, 10 ** (length - 1) if length > 1 else 0)
        end = min(hi, 10 ** length - 1) if hi is not None else 10 ** length - 1
        if start > end:
            continue
        if hi is None and start == 10 ** (length - 1) and length > 1:
            # Every longer length is complete too: one rule for all of them.
            options.append(_seq("[1-9]", _repeat(_DIGIT, length - 1, top_len - 1)))
            break
        options.append(_same_length_range(str(start), str(end)))
    return _alt(options) if options else None


_Bound = tuple[Decimal, bool]  # (value, exclusive)
_FracBound = Union[tuple[str, bool], None]  # (fraction digits, exclusive); None: no constraint


def _fraction(lo: _FracBound, hi: _FracBound, k: int, memo: dict[tuple[Any, ...], tuple[str | None, bool]]
              ) -> tuple[str | None, bool]:
    """Fraction digit strings F of length <= k with 0.F within the bounds (0.lo <= 0.F <= 0.hi,
    strictly where exclusive): (GBNF for the non-empty ones or None, whether empty F is)."""
    if lo is not None and lo[0] == "" and not lo[1]:
        lo = None
    key = (lo, hi, k)
    if key in memo:
        return memo[key]
    if k > 0 and hi is None and lo == ("", True):
        # Some digit not zero: those ending in one will do.
        memo[key] = (_seq(_repeat(_DIGIT, 0, k - 1), "[1-9]"), False)
        return memo[key]
    if k > 0 and lo is None and hi == ("", False):
        memo[key] = (_repeat('"0"', 1, k), True)  # only zeros
        return memo[key]
    if lo is None and hi is None:
        memo[key] = (_repeat(_DIGIT, 1, k) if k > 0 else None, True)
        return memo[key]
    empty_ok = (lo is None) and (hi is None or hi[0] != "" or not hi[1])
    if hi is not None and hi[0] == "" and hi[1]:
        memo[key] = (None, False)  # 0.F < 0: impossible
        return memo[key]
    options: list[str] = []
    if k > 0:
        groups: dict[tuple[Any, Any], list[int]] = {}
        for d in range(10):
            if lo is None:
                new_lo: Any = None
            else:
                l0 = int(lo[0][0]) if lo[0] else 0
                if d < l0:
                    continue
                new_lo = None if d > l0 else (lo[0][1:], lo[1])
            if hi is None:
                new_hi: Any = None
            else:
                h0 = int(hi[0][0]) if hi[0] else 0
                if d > h0:
                    continue
                new_hi = None if d < h0 else (hi[0][1:], hi[1])
            groups.setdefault((new_lo, new_hi), []).append(d)
        for (new_lo, new_hi), digits in groups.items():
            spans: list[list[int]] = []
            for d in digits:
                if spans and spans[-1][1] == d - 1:
                    spans[-1][1] = d
                else:
                    spans.append([d, d])
            head = _alt(_digit_class(a, b) for a, b in spans)
            rest, rest_empty = ((_repeat(_DIGIT, 1, k - 1) if k > 1 else None), True) \
                if new_lo is None and new_hi is None else _fraction(new_lo, new_hi, k - 1, memo)
            if rest is None and not rest_empty:
                continue
            if rest is None:
                options.append(head)
            elif rest_empty:
                options.append(_seq(head, _repeat(rest, 0, 1)))
            else:
                options.append(_seq(head, _group(rest)))
    memo[key] = (_alt(options) if options else None, empty_ok)
    return memo[key]


def _split(value: Decimal) -> tuple[int, str]:
    """A non-negative decimal as (integer part, fraction digits without trailing zeros)."""
    integer = int(value)
    text = format(value - integer, "f")
    frac = text.split(".")[1].rstrip("0") if "." in text else ""
    return integer, frac


def _magnitude(lo: _Bound, hi: _Bound | None, int_digits: int, frac_digits: int) -> str | None:
    """Non-negative decimals `I(.F)?` (no exponent) between lo and hi; None if there are none."""
    memo: dict[tuple[Any, ...], tuple[str | None, bool]] = {}
    li, lf = _split(lo[0])
    options = []

    def with_fraction(integer: str | None, flo: _FracBound, fhi: _FracBound) -> None:
        if integer is None:
            return
        frac, empty_ok = _fraction(flo, fhi, frac_digits, memo)
        if frac is None:
            if empty_ok:
                options.append(integer)
            return
        dot = _seq('"."', _group(frac))
        options.append(_seq(integer, _repeat(dot, 0, 1) if empty_ok else _group(dot)))

    if hi is not None:
        hi_i, hf = _split(hi[0])
        if li == hi_i:
            with_fraction(_natural_range(li, li, int_digits), (lf, lo[1]), (hf, hi[1]))
            return _alt(options) if options else None
        with_fraction(_natural_range(li, li, int_digits), (lf, lo[1]), None)
        with_fraction(_natural_range(li + 1, hi_i - 1, int_digits), None, None)
        with_fraction(_natural_range(hi_i, hi_i, int_digits), None, (hf, hi[1]))
    else:
        with_fraction(_natural_range(li, li, int_digits), (lf, lo[1]), None)
        with_fraction(_natural_range(li + 1, None, int_digits), None, None)
    return _alt(options) if options else None


def _significant(value: Decimal) -> tuple[int, int]:
    integer, frac = _split(abs(value))
    return len(str(integer)), len(frac)


def _number_range(lo: _Bound | None, hi: _Bound | None) -> str | None:
    """JSON numbers (no exponent) x with lo <= x <= hi (strict where exclusive); None if none."""
    if lo is not None and hi is not None and (lo[0] > hi[0] or (lo[0] == hi[0] and (lo[1] or hi[1]))):
        return None
    int_digits, frac_need = 1, 0
    for bound in (lo, hi):
        if bound is not None:
            a, b = _significant(bound[0])
            int_digits, frac_need = max(int_digits, a), max(frac_need, b)
    if lo is None or hi is None:
        int_digits = max(int_digits, 9)
    frac_digits = max(_SIG_DIGITS - int_digits, frac_need + 1, 1)
    options = []
    # x >= 0
    if hi is None or hi[0] > 0 or (hi[0] == 0 and not hi[1]):
        pos_lo: _Bound = (Decimal(0), False) if lo is None or lo[0] < 0 else lo
        expr = _magnitude(pos_lo, hi, int_digits, frac_digits)
        if expr:
            options.append(expr)
    # x < 0, written as "-" and its magnitude m > 0 (so never "-0")
    if lo is None or lo[0] < 0:
        m_lo: _Bound = (Decimal(0), True)
        if hi is not None and hi[0] < 0:
            m_lo = (-hi[0], hi[1])
        m_hi = None if lo is None else (-lo[0], lo[1])
        expr = _magnitude(m_lo, m_hi, int_digits, frac_digits)
        if expr:
            options.append(_seq('"-"', _group(expr)))
    return _alt(options) if options else None


def _integer_range(lo: _Bound | None, hi: _Bound | None) -> str | None:
    ilo = None if lo is None else (math.floor(lo[0]) + 1 if lo[1] else math.ceil(lo[0]))
    ihi = None if hi is None else (math.ceil(hi[0]) - 1 if hi[1] else math.floor(hi[0]))
    if ilo is not None and ihi is not None and ilo > ihi:
        return None
    digits = max(_INT_DIGITS, *(len(str(abs(b))) for b in (ilo, ihi) if b is not None))
    options = []
    if ihi is None or ihi >= 0:
        expr = _natural_range(0 if ilo is None else max(ilo, 0), ihi, digits)
        if expr:
            options.append(expr)
    if ilo is None or ilo < 0:
        expr = _natural_range(1 if ihi is None else max(-ihi, 1), None if ilo is None else -ilo, digits)
        if expr:
            options.append(_seq('"-"', _group(expr)))
    return _alt(options) if options else None


# --- strings: formats and patterns -----------------------------------------------------------

_D28 = '( "0" [1-9] | "1" [0-9] | "2" [0-8] )'
_FORMAT_RULES = {
    # Years 1000-2999 keep the grammar short and every date real (Feb 29 in leap years only).
    "date": (
        "date ::= year \"-\" ( ( \"01\" | \"03\" | \"05\" | \"07\" | \"08\" | \"10\" | \"12\" ) \"-\" "
        f"( {_D28} | \"29\" | \"30\" | \"31\" ) | ( \"04\" | \"06\" | \"09\" | \"11\" ) \"-\" "
        f"( {_D28} | \"29\" | \"30\" ) | \"02-\" {_D28} ) | leap-year \"-02-29\"\n"
        'year ::= [12] [0-9]{3}\n'
        'leap-year ::= [12] [0-9] ( "0" [48] | [2468] [048] | [13579] [26] ) | "1200" | "1600" | "2000" | "2400" '
        '| "2800"'
    ),
    "time": 'time ::= ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
            '( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "date-time": 'date-time ::= date "T" time',
    "uuid": 'uuid ::= [0-9a-f]{8} "-" [0-9a-f]{4} "-" [1-8] [0-9a-f]{3} "-" [89ab] [0-9a-f]{3} "-" [0-9a-f]{12}',
    "email": 'email ::= [a-zA-Z0-9_+-]{1,32} ( "." [a-zA-Z0-9_+-]{1,32} ){0,3} "@" [a-zA-Z0-9] [a-zA-Z0-9-]{0,30} '
             '( "." [a-zA-Z0-9] [a-zA-Z0-9-]{0,30} ){0,3} "." [a-zA-Z]{2,10}',
    # A scheme and characters a URI may hold unescaped (a '%' always starts an escape).
    "uri": 'uri ::= [a-zA-Z] [a-zA-Z0-9+.-]{0,15} ":" ( "//" )? '
           '( [a-zA-Z0-9._~:/?#@!$&\'()*+,;=-] | "%" [0-9a-fA-F]{2} ){1,200}',
    "ipv4": 'ipv4 ::= octet "." octet "." octet "." octet\n'
            'octet ::= "25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9]',
}
_FORMAT_DEPS = {"date-time": ("date", "time")}

# The characters of the sets \d, \w, \s that are safe to generate whatever re's Unicode rules are.
_DIGITS = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE = [(0x09, 0x0D), (0x20, 0x20)]
_PY_SPACE_ASCII = [(0x09, 0x0D), (0x1C, 0x20)]  # what re's \s matches below 0x80
# What '.', negated sets and \D \W \S generate: no control characters (sound, and it keeps the
# grammar from offering dozens of \u00XX escapes at every position).
_PRINTABLE = [(0x20, 0x7E), (0xA0, 0xD7FF), (0xE000, 0x10FFFF)]
_PRINTABLE_ASCII = [(0x20, 0x7E)]


def _normalize(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _subtract(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for lo, hi in _normalize(a):
        for blo, bhi in _normalize(b):
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


_JSON_SPECIAL = _normalize([(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)])


def _json_chars(ranges: list[tuple[int, int]]) -> str:
    """GBNF for one character of `ranges` as it appears inside a JSON string (escaped if need be)."""
    ranges = _subtract(_normalize(ranges), [(0xD800, 0xDFFF)])
    plain = _subtract(ranges, _JSON_SPECIAL)
    options = [_class(plain)] if plain else []
    for lo, hi in _normalize(ranges):
        for o in range(max(lo, 0), min(hi, 0x7F) + 1):
            if any(slo <= o <= shi for slo, shi in _JSON_SPECIAL):
                options.append(_literal(json.dumps(chr(o))[1:-1]))
    if not options:
        raise ValueError("empty character set")
    return _alt(options)


class _RegexError(ValueError):
    pass


class _Regex:
    """A regular expression (Python `re` syntax, the subset a grammar can express) -> GBNF for
    the JSON-encoded strings it matches in full."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def fail(self, what: str, at: int | None = None) -> _RegexError:
        at = self.i if at is None else at
        return _RegexError(f"{what} at offset {at} of pattern {self.p!r}")

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
        return _alt(options)

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
            expr = _literal(json.dumps(atom[1])[1:-1]) if atom[0] == "lit" else atom[1]
            items.append(("expr", _repeat(expr, lo, hi)))
        parts: list[str] = []
        text = ""
        for kind, value in items:
            if kind == "lit":
                text += value
                continue
            if text:
                parts.append(_literal(json.dumps(text)[1:-1]))
                text = ""
            parts.append(value)
        if text:
            parts.append(_literal(json.dumps(text)[1:-1]))
        return _seq(*parts) if parts else ""

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
            if lo > _MAX_REPEAT:
                raise self.fail(f"repetition {m.group(0)} needs more than {_MAX_REPEAT} copies")
            self.i = m.end()
            bounds = (lo, None if hi is None else min(hi, _MAX_REPEAT))
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
            return ("expr", _group(inner) if inner else '""')
        if c == "[":
            return ("expr", _json_chars(self.char_class()))
        if c == ".":
            self.i += 1
            return ("expr", _json_chars(_PRINTABLE))
        if c == "\\":
            ranges, literal = self.escape(in_class=False)
            if literal is not None:
                return ("lit", literal)
            return ("expr", _json_chars(ranges))
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
        sets = {"d": _DIGITS, "w": _WORD, "s": _SPACE, "D": _subtract(_PRINTABLE_ASCII, _DIGITS),
                "W": _subtract(_PRINTABLE_ASCII, _WORD), "S": _subtract(_PRINTABLE_ASCII, _PY_SPACE_ASCII)}
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
                set_ranges, literal = self.escape(in_class=True)
                if literal is None:
                    ranges.extend(set_ranges)
                    approximate = approximate or self.p[self.i - 1] in "dwsDWS"
                    continue
                lo = ord(literal)
            else:
                self.i += 1
                lo = ord(c)
            if self.peek() == "-" and self.i + 1 < len(self.p) and self.p[self.i + 1] != "]":
                self.i += 1
                if self.peek() == "\\":
                    set_ranges, literal = self.escape(in_class=True)
                    if literal is None:
                        raise self.fail("bad character range")
                    hi = ord(literal)
                else:
                    hi = ord(self.peek())
                    self.i += 1
                if hi < lo:
                    raise self.fail("bad character range")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        if negated:
            ranges = _subtract(_PRINTABLE_ASCII if approximate else _PRINTABLE, ranges)
        if not ranges:
            raise self.fail("character set matches nothing", start)
        return _normalize(ranges)


# --- the converter ---------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_allows(types: set[str], value: Any) -> bool:
    t = _json_type(value)
    return t in types or (t == "integer" and "number" in types)


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or
                (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b))


def _decimal(value: Any, keyword: str, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'{keyword}' at {_pointer(path)} must be a number, got {value!r}")
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"'{keyword}' at {_pointer(path)} is not a finite number: {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"'{keyword}' at {_pointer(path)} is not a finite number: {value!r}")
    return result


def _nonnegative_int(schema: dict[str, Any], keyword: str, path: str) -> int | None:
    value = schema.get(keyword)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{keyword}' at {_pointer(path)} must be a non-negative integer, got {value!r}")
    return value


class _Converter:
    def __init__(self, root: Schema, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.rules: dict[str, str] = {}
        self.used_primitives: list[str] = []
        self.refs: dict[str, str] = {}
        self.merging: list[str] = []

    # rules and names

    def convert(self) -> str:
        self.rules["root"] = ""
        self.rules["root"] = self.visit(self.root, "", "root")
        self.collapse_aliases()
        lines = []
        lines += [f"{name} ::= {rule}" for name, rule in self.rules.items()]
        lines += [_PRIMITIVES.get(name) or _FORMAT_RULES[name] for name in self.used_primitives]
        text = "\n".join(lines) + "\n"
        from .llama_grammar import GrammarParseError, LlamaGrammar

        try:
            LlamaGrammar(text)
        except GrammarParseError as err:
            raise ValueError(f"the schema gives a grammar llama.cpp cannot use: {err.reason}") from None
        return text

    def collapse_aliases(self) -> None:
        """`a ::= b` where b is used only there: give a b's body (fewer, better-named rules)."""
        def uses(name: str) -> int:
            word = re.compile(rf"(?<![A-Za-z0-9-]){re.escape(name)}(?![A-Za-z0-9-])")
            return sum(len(word.findall(body)) for body in self.rules.values())

        changed = True
        while changed:
            changed = False
            for name, body in list(self.rules.items()):
                if body in self.rules and body != name and uses(body) == 1:
                    self.rules[name] = self.rules.pop(body)
                    changed = True
                    break

    def primitive(self, name: str) -> str:
        if name not in self.used_primitives:
            self.used_primitives.append(name)
            for dep in _PRIMITIVE_DEPS.get(name, ()) + _FORMAT_DEPS.get(name, ()):
                self.primitive(dep)
        return name

    def new_rule(self, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9-]+", "-", hint).strip("-") or "rule"
        reserved = set(_PRIMITIVES) | set(_FORMAT_RULES) | {"root", "year", "leap-year", "octet"}
        name, n = base, 1
        while name in self.rules or name in reserved:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = ""
        return name

    def rule(self, hint: str, body: str) -> str:
        name = self.new_rule(hint)
        self.rules[name] = body
        return name

    def unsupported(self, keyword: str, path: str, why: str) -> None:
        message = f"unsupported JSON Schema keyword '{keyword}' at {_pointer(path)}: {why}"
        if self.strict:
            raise ValueError(message)
        warnings.warn(message + " (ignored: strict=False)", UserWarning, stacklevel=2)

    # schemas

    def check_keywords(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        """The schema less annotations; unsupported keywords raise (or, not strict, are dropped)."""
        kept = {}
        for key, value in schema.items():
            if key in ANNOTATIONS or key in _CONTAINERS or key.startswith("x-"):
                continue
            if key in _SUPPORTED:
                kept[key] = value
            elif key == "uniqueItems" and value is False:
                continue
            elif key in ("minProperties", "minContains") and value == 0:
                continue
            elif key in _WHY_UNSUPPORTED:
                self.unsupported(key, path, _WHY_UNSUPPORTED[key])
            else:
                self.unsupported(key, path, "not a JSON Schema keyword this converter knows")
        return kept

    def resolve(self, ref: str, path: str) -> tuple[Schema, str]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ValueError(f"$ref {ref!r} at {_pointer(path)}: only local references ('#/...') are supported")
        from urllib.parse import unquote

        target: Any = self.root
        pointer = unquote(ref[1:])
        if pointer and not pointer.startswith("/"):
            raise ValueError(f"$ref {ref!r} at {_pointer(path)}: anchors are not supported, use a JSON pointer")
        for token in pointer.split("/")[1:] if pointer else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                raise ValueError(f"$ref {ref!r} at {_pointer(path)} does not resolve (no {token!r})")
        if not isinstance(target, (dict, bool)):
            raise ValueError(f"$ref {ref!r} at {_pointer(path)} points at a {type(target).__name__}, not a schema")
        return target, ref

    def visit(self, schema: Any, path: str, hint: str) -> str:
        if schema is True:
            return self.primitive("value")
        if schema is False:
            raise ValueError(f"the schema at {_pointer(path)} is false: no value is valid")
        if not isinstance(schema, dict):
            raise ValueError(f"the schema at {_pointer(path)} must be an object or a boolean, got {schema!r}")
        s = self.check_keywords(schema, path)
        if "$ref" in s:
            ref = s.pop("$ref")
            if s:
                return self.visit({"allOf": [{"$ref": ref}, s]}, path, hint)
            return self.ref(ref, path)
        if "allOf" in s:
            branches = s.pop("allOf")
            if not isinstance(branches, list) or not branches:
                raise ValueError(f"'allOf' at {_pointer(path)} must be a non-empty array")
            merged = self.merge([s, *branches] if s else branches, path)
            return self.visit(merged, path, hint)
        for keyword in ("anyOf", "oneOf"):
            if keyword in s:
                options = s.pop(keyword)
                if not isinstance(options, list) or not options:
                    raise ValueError(f"'{keyword}' at {_pointer(path)} must be a non-empty array")
                exprs = []
                for i, option in enumerate(options):
                    sub = {"allOf": [s, option]} if s else option
                    exprs.append(self.visit(sub, f"{path}/{keyword}/{i}", hint))
                return _alt(exprs)
        types = self.types(s, path)
        if "const" in s:
            if not self.fits(s["const"], types, s, path):
                raise ValueError(f"'const' at {_pointer(path)} does not satisfy the schema's other keywords")
            if "enum" in s and not any(_json_equal(s["const"], v) for v in s["enum"]):
                raise ValueError(f"'const' at {_pointer(path)} is not one of its 'enum' values")
            return self.json_literal(s["const"])
        if "enum" in s:
            values = s["enum"]
            if not isinstance(values, list) or not values:
                raise ValueError(f"'enum' at {_pointer(path)} must be a non-empty array")
            allowed = [self.json_literal(v) for v in values if self.fits(v, types, s, path)]
            if not allowed:
                raise ValueError(f"no 'enum' value at {_pointer(path)} satisfies the schema's other keywords")
            return _alt(allowed)
        options = []
        for t in _TYPES:
            if t not in types or (t == "integer" and "number" in types):
                continue
            options.append(getattr(self, "visit_" + t)(s, path, hint))
        return _alt(options)

    def types(self, s: dict[str, Any], path: str) -> set[str]:
        declared = s.get("type")
        if declared is None:
            # No type: the type keywords present say which kinds are constrained; a value of
            # another kind would be valid too, but generating only these is still valid.
            found = {t for t, keys in (("object", _OBJECT_KEYS), ("array", _ARRAY_KEYS),
                                       ("string", _STRING_KEYS), ("number", _NUMBER_KEYS))
                     if any(k in s for k in keys)}
            types = found or set(_TYPES) - {"integer"}
        else:
            listed = declared if isinstance(declared, list) else [declared]
            bad = [t for t in listed if t not in _TYPES]
            if bad or not listed:
                raise ValueError(f"'type' at {_pointer(path)} must name JSON types {list(_TYPES)}, got {declared!r}")
            types = set(listed)
        return types

    def fits(self, value: Any, types: set[str], s: dict[str, Any], path: str) -> bool:
        """Whether an enum or const value meets the type, length, pattern and bound keywords
        beside it (those of objects and arrays, and formats, are not checked)."""
        if not _type_allows(types, value):
            return False
        if isinstance(value, str):
            lo = _nonnegative_int(s, "minLength", path)
            hi = _nonnegative_int(s, "maxLength", path)
            if (lo is not None and len(value) < lo) or (hi is not None and len(value) > hi):
                return False
            pattern = s.get("pattern")
            try:
                return not isinstance(pattern, str) or re.search(pattern, value) is not None
            except re.error as err:
                raise ValueError(f"'pattern' at {_pointer(path)} is not a valid regex: {err}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo_bound, hi_bound = self.bounds(s, path)
            x = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
            if lo_bound is not None and (x < lo_bound[0] or (lo_bound[1] and x == lo_bound[0])):
                return False
            if hi_bound is not None and (x > hi_bound[0] or (hi_bound[1] and x == hi_bound[0])):
                return False
        return True

    def json_literal(self, value: Any) -> str:
        return _literal(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False))

    def ref(self, ref: str, path: str) -> str:
        if ref in self.refs:
            return self.refs[ref]
        target, _ = self.resolve(ref, path)
        hint = ref.rstrip("/").split("/")[-1] or "root-ref"
        name = self.new_rule(hint if ref != "#" else "root-ref")
        self.refs[ref] = name
        self.rules[name] = self.visit(target, ref[1:], name)
        return name

    # objects

    def visit_object(self, s: dict[str, Any], path: str, hint: str) -> str:
        props = s.get("properties", {})
        if not isinstance(props, dict):
            raise ValueError(f"'properties' at {_pointer(path)} must be an object")
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise ValueError(f"'required' at {_pointer(path)} must be an array of strings")
        extra: Any = s.get("additionalProperties")
        closed = extra is False
        if extra is None:
            extra = None if props else True
        if extra is False:
            extra = None
        entries = []  # (key, value expression, required)
        for key, sub in props.items():
            if sub is False:
                if key in required:
                    raise ValueError(f"property {key!r} at {_pointer(path)} is required but its schema is false")
                continue
            name_hint = f"{hint}-{key}"
            entries.append((key, self.visit(sub, f"{path}/properties/{_escape(key)}", name_hint), key in required))
        for key in dict.fromkeys(required):
            if key not in props:
                if closed:
                    raise ValueError(f"property {key!r} at {_pointer(path)} is required but additionalProperties "
                                     "is false")
                sub = True if extra is None else extra
                entries.append((key, self.visit(sub, f"{path}/additionalProperties", f"{hint}-{key}"), True))
        self.primitive("ws")
        pairs = [(_seq(self.json_literal(key), 'ws ":" ws', value), req) for key, value, req in entries]
        extra_pair = None
        if extra is not None:
            value = self.visit(extra, f"{path}/additionalProperties", f"{hint}-value")
            key_rule = self.rule(f"{hint}-key", _seq('"\\""', self.other_key([k for k, _, _ in entries]), '"\\""'))
            extra_pair = _seq(key_rule, 'ws ":" ws', value)
        body, empty_ok = self.members(pairs, extra_pair, hint)
        if body is None:
            return self.rule(hint, '"{" ws "}"')
        inner = _seq(_group(body), "ws")
        return self.rule(hint, _seq('"{" ws', _repeat(inner, 0, 1) if empty_ok else inner, '"}"'))

    def other_key(self, known: list[str]) -> str:
        """Key contents (no escapes) other than the known keys."""
        self.primitive("plain-char")
        trie: dict[str, Any] = {}
        for key in known:
            node = trie
            for c in key:
                node = node.setdefault(c, {})
            node[""] = {}
        if not known:
            return "plain-char*"

        def walk(node: dict[str, Any]) -> str:
            options = []
            # A key written without escapes cannot hold '"', '\\' or control characters, so
            # known keys holding them cannot be hit by it past that point.
            children = sorted(c for c in node if c and not any(lo <= ord(c) <= hi for lo, hi in _JSON_SPECIAL))
            stop = _class([(ord(c), ord(c)) for c in children] + [(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C),
                                                                    (0x7F, 0x7F)], negated=True)
            options.append(_seq(stop, "plain-char*"))
            for c in children:
                options.append(_seq(_literal(c), _group(walk(node[c]))))
            expr = _alt(options)
            return expr if "" in node else _repeat(expr, 0, 1)

        return walk(trie)

    def members(self, pairs: list[tuple[str, bool]], extra: str | None, hint: str) -> tuple[str | None, bool]:
        """The key-value list inside braces: properties in order, each optional one skippable,
        then any extra keys. (expression for a non-empty list or None, whether it may be empty)."""
        sep = 'ws "," ws'
        tail_extra = _repeat(_seq(sep, extra), 0, None) if extra else ""
        n = len(pairs)
        # tails[i]: the members from i on, after at least one member was written.
        tails: list[str] = [""] * (n + 1)
        tails[n] = tail_extra
        optional = sum(1 for _, req in pairs if not req)
        for i in range(n - 1, -1, -1):
            pair, req = pairs[i]
            part = _seq(sep, pair)
            expr = _seq(part if req else _repeat(part, 0, 1), tails[i + 1])
            if optional > 1 and i > 0 and not req and tails[i + 1]:
                expr = self.rule(f"{hint}-after-{i}", expr)
            tails[i] = expr
        options = []
        for i, (pair, req) in enumerate(pairs):
            options.append(_seq(pair, tails[i + 1]))
            if req:
                return _alt(options), False
        if extra:
            options.append(_seq(extra, tail_extra))
        return (_alt(options) if options else None), True

    # arrays

    def visit_array(self, s: dict[str, Any], path: str, hint: str) -> str:
        prefix = s.get("prefixItems")
        items: Any = s.get("items")
        if isinstance(items, list):  # draft 4-2019 tuple form
            if prefix is not None:
                raise ValueError(f"'items' at {_pointer(path)} is an array while 'prefixItems' is given")
            prefix, items = items, s.get("additionalItems")
        elif "additionalItems" in s and prefix is None:
            pass  # without a tuple form additionalItems has no effect
        prefix = prefix or []
        if items is None and prefix:
            items = False  # as for objects: a tuple without 'items' gets no further items
        if not isinstance(prefix, list):
            raise ValueError(f"'prefixItems' at {_pointer(path)} must be an array")
        lo = _nonnegative_int(s, "minItems", path) or 0
        hi = _nonnegative_int(s, "maxItems", path)
        if items is False:
            hi = len(prefix) if hi is None else min(hi, len(prefix))
        if hi is not None and hi < lo:
            raise ValueError(f"array at {_pointer(path)}: maxItems {hi} is less than minItems {lo}")
        if lo > _MAX_REPEAT:
            raise ValueError(f"array at {_pointer(path)}: minItems {lo} exceeds the grammar limit of {_MAX_REPEAT}")
        if hi is not None:
            hi = min(hi, _MAX_REPEAT)
        prefix_exprs = [self.visit(p, f"{path}/prefixItems/{i}", f"{hint}-{i}") for i, p in enumerate(prefix)]
        item = None if items is False else self.visit(True if items is None else items, f"{path}/items",
                                                      f"{hint}-item")
        self.primitive("ws")
        sep = 'ws "," ws'

        def from_index(i: int) -> str:
            """Items i.. after at least one item, each preceded by a separator."""
            if i < len(prefix_exprs) and (hi is None or i < hi):
                part = _seq(sep, prefix_exprs[i], from_index(i + 1))
                return part if i < lo else _repeat(part, 0, 1)
            if item is None or (hi is not None and i >= hi):
                return ""
            return _repeat(_seq(sep, item), max(lo - i, 0), None if hi is None else hi - i)

        if hi == 0:
            return self.rule(hint, '"[" ws "]"')
        first = prefix_exprs[0] if prefix_exprs else item
        assert first is not None
        body = _seq(first, from_index(1))
        inner = _seq(_group(body), "ws")
        return self.rule(hint, _seq('"[" ws', _repeat(inner, 0, 1) if lo == 0 else inner, '"]"'))

    # scalars

    def visit_string(self, s: dict[str, Any], path: str, hint: str) -> str:
        lo = _nonnegative_int(s, "minLength", path)
        hi = _nonnegative_int(s, "maxLength", path)
        pattern = s.get("pattern")
        fmt = s.get("format")
        quote = '"\\""'
        if pattern is not None:
            if not isinstance(pattern, str):
                raise ValueError(f"'pattern' at {_pointer(path)} must be a string")
            for other in ("minLength", "maxLength", "format"):
                if other in s:
                    self.unsupported(other, path, "it cannot be combined with 'pattern'; fold it into the pattern")
            try:
                content = _Regex(pattern).convert()
            except _RegexError as err:
                raise ValueError(f"'pattern' at {_pointer(path)}: {err}") from None
            return self.rule(f"{hint}-pattern", _seq(quote, _group(content) if content else "", quote))
        if fmt is not None:
            if fmt in _FORMAT_RULES:
                if lo is not None or hi is not None:
                    self.unsupported("minLength" if lo is not None else "maxLength", path,
                                     f"it cannot be combined with format '{fmt}'")
                return _seq(quote, self.primitive(fmt), quote)
            self.unsupported("format", path, f"format {fmt!r} is not supported (known: {', '.join(_FORMAT_RULES)})")
        if lo is None and hi is None:
            return self.primitive("string")
        lo = lo or 0
        if lo > _MAX_REPEAT:
            raise ValueError(f"'minLength' {lo} at {_pointer(path)} exceeds the grammar limit of {_MAX_REPEAT}")
        if hi is not None and hi < lo:
            raise ValueError(f"string at {_pointer(path)}: maxLength {hi} is less than minLength {lo}")
        self.primitive("char")
        return _seq(quote, _repeat("char", lo, None if hi is None else min(hi, _MAX_REPEAT)), quote)

    def bounds(self, s: dict[str, Any], path: str) -> tuple[_Bound | None, _Bound | None]:
        lo: _Bound | None = None
        hi: _Bound | None = None
        if "minimum" in s:
            lo = (_decimal(s["minimum"], "minimum", path), s.get("exclusiveMinimum") is True)
        if "maximum" in s:
            hi = (_decimal(s["maximum"], "maximum", path), s.get("exclusiveMaximum") is True)
        for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
            value = s.get(keyword)
            if value is None or isinstance(value, bool):
                continue
            bound = (_decimal(value, keyword, path), True)
            if keyword == "exclusiveMinimum":
                lo = bound if lo is None or bound[0] >= lo[0] else lo
            else:
                hi = bound if hi is None or bound[0] <= hi[0] else hi
        return lo, hi

    def visit_number(self, s: dict[str, Any], path: str, hint: str) -> str:
        lo, hi = self.bounds(s, path)
        if lo is None and hi is None:
            return self.primitive("number")
        expr = _number_range(lo, hi)
        if expr is None:
            raise ValueError(f"no number at {_pointer(path)} satisfies the bounds")
        return self.rule(f"{hint}-number", expr)

    def visit_integer(self, s: dict[str, Any], path: str, hint: str) -> str:
        lo, hi = self.bounds(s, path)
        if lo is None and hi is None:
            return self.primitive("integer")
        expr = _integer_range(lo, hi)
        if expr is None:
            raise ValueError(f"no integer at {_pointer(path)} satisfies the bounds")
        return self.rule(f"{hint}-int", expr)

    def visit_boolean(self, s: dict[str, Any], path: str, hint: str) -> str:
        return self.primitive("boolean")

    def visit_null(self, s: dict[str, Any], path: str, hint: str) -> str:
        return self.primitive("null")

    # allOf

    def merge(self, branches: list[Any], path: str) -> dict[str, Any]:
        """One schema equivalent to all of `branches` (refs resolved, nested allOf flattened,
        anyOf/oneOf distributed), or ValueError where keywords cannot be combined."""
        flat: list[dict[str, Any]] = []
        self.flatten(branches, path, flat)
        for i, branch in enumerate(flat):
            for keyword in ("anyOf", "oneOf"):
                if keyword in branch:
                    rest = dict(branch)
                    options = rest.pop(keyword)
                    others = flat[:i] + [rest] + flat[i + 1:]
                    return {"anyOf": [{"allOf": [*others, option]} for option in options]}
        merged: dict[str, Any] = {}
        for branch in flat:
            for key, value in branch.items():
                if key not in merged:
                    merged[key] = value
                else:
                    merged[key] = self.combine(key, merged[key], value, path)
        # A property only one branch lists must still satisfy the others' additionalProperties.
        if any("properties" in b for b in flat) and len(flat) > 1:
            props: dict[str, Any] = {}
            required = set(merged.get("required", []))
            for key in dict.fromkeys(k for b in flat for k in b.get("properties", {})):
                parts = []
                forbidden = False
                for b in flat:
                    if key in b.get("properties", {}):
                        parts.append(b["properties"][key])
                    elif "properties" in b or "additionalProperties" in b:
                        other = b.get("additionalProperties", True)
                        if other is False:
                            forbidden = True
                        elif other is not True:
                            parts.append(other)
                if forbidden:
                    if key in required:
                        raise ValueError(f"allOf at {_pointer(path)}: property {key!r} is required by one branch "
                                         "and forbidden by another's additionalProperties: false")
                    continue
                props[key] = parts[0] if len(parts) == 1 else {"allOf": parts}
            merged["properties"] = props
        return merged

    def flatten(self, branches: list[Any], path: str, out: list[dict[str, Any]]) -> None:
        for branch in branches:
            if branch is True:
                continue
            if branch is False:
                raise ValueError(f"allOf at {_pointer(path)} has a false branch: no value is valid")
            if not isinstance(branch, dict):
                raise ValueError(f"allOf at {_pointer(path)}: a branch must be a schema, got {branch!r}")
            b = self.check_keywords(branch, path)
            if "$ref" in b:
                ref = b.pop("$ref")
                if ref in self.merging:
                    raise ValueError(f"allOf at {_pointer(path)} includes $ref {ref!r} within itself")
                self.merging.append(ref)
                try:
                    target, _ = self.resolve(ref, path)
                    self.flatten([target], ref[1:], out)
                finally:
                    self.merging.pop()
            if "allOf" in b:
                nested = b.pop("allOf")
                self.flatten(list(nested), path, out)
            if b:
                out.append(b)

    def combine(self, key: str, a: Any, b: Any, path: str) -> Any:
        if _json_equal(a, b):
            return a
        if key == "type":
            ta = set(a if isinstance(a, list) else [a])
            tb = set(b if isinstance(b, list) else [b])
            both = (ta & tb) | ({"integer"} if ("integer" in ta and "number" in tb) or
                                ("number" in ta and "integer" in tb) else set())
            if not both:
                raise ValueError(f"allOf at {_pointer(path)}: types {a!r} and {b!r} have nothing in common")
            return [t for t in _TYPES if t in both]
        if key == "required":
            return list(dict.fromkeys([*a, *b]))
        if key == "properties":
            out = dict(a)
            for k, v in b.items():
                out[k] = {"allOf": [out[k], v]} if k in out else v
            return out
        if key in ("additionalProperties", "items"):
            if a is False or b is False:
                return False
            if a is True:
                return b
            if b is True:
                return a
            return {"allOf": [a, b]}
        if key in ("minimum", "minLength", "minItems"):
            return max(a, b)
        if key in ("maximum", "maxLength", "maxItems"):
            return min(a, b)
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(a, bool) or isinstance(b, bool):
                raise ValueError(f"allOf at {_pointer(path)}: cannot combine draft-4 and newer '{key}'")
            return max(a, b) if key == "exclusiveMinimum" else min(a, b)
        if key == "enum":
            common = [v for v in a if any(_json_equal(v, w) for w in b)]
            if not common:
                raise ValueError(f"allOf at {_pointer(path)}: the enums have no value in common")
            return common
        raise ValueError(f"allOf at {_pointer(path)}: cannot combine two different '{key}' values ({a!r}, {b!r})")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")

