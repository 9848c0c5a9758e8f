"""The converter: walks a JSON Schema and writes the GBNF rules of the documents valid against it."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

from .._gbnf import MAX_REPETITION, GrammarParseError, ParsedGrammar, parse_gbnf
from ._charsets import JSON_SPECIAL
from ._gbnf_text import alt, gbnf_class, group, literal, repeat, seq
from ._keywords import (
    ANNOTATIONS, ARRAY_KEYS, CONTAINERS, NUMBER_KEYS, OBJECT_KEYS, STRING_KEYS, SUPPORTED, TYPES, WHY_UNSUPPORTED,
    Schema,
)
from ._members import STATE_LIMIT, MemberList
from ._numbers import Bound, integer_range, number_range
from ._primitives import FORMAT_DEPS, FORMAT_RULES, PRIMITIVE_DEPS, PRIMITIVES
from ._regex import Regex, RegexError


def schema_grammar(schema: str | bytes | Schema | type, *, strict: bool = True) -> ParsedGrammar:
    """The grammar of `schema` (as json_schema_to_gbnf takes it), converted and parsed once."""
    return parse_schema_gbnf(schema_gbnf(schema, strict=strict))


def schema_gbnf(schema: str | bytes | Schema | type, *, strict: bool = True) -> str:
    """The GBNF text of `schema`, not parsed: for a caller that parses the grammar it builds
    around it (once); parse_schema_gbnf checks the text alone."""
    return Converter(load_schema(schema), strict).convert()


def schemas_gbnf(schemas: Mapping[str, str | bytes | Schema | type], *, reserved: Collection[str] = (),
                 strict: bool = True) -> str:
    """The GBNF text of several schemas in one grammar, not parsed: the start rule of each is
    named by its key (instead of root), the primitive rules they share are written once, and no
    other rule takes a key's name or one in `reserved` (the rules the caller writes around
    them). Each schema's $refs resolve within that schema."""
    converter = Converter(True, strict, reserved)
    return converter.convert_many({start: load_schema(schema) for start, schema in schemas.items()})


def parse_schema_gbnf(text: str) -> ParsedGrammar:
    """Text from schema_gbnf, parsed; ValueError where the schema led to a grammar llama.cpp
    cannot use (a repetition or a left recursion it rejects or hangs on)."""
    try:
        return parse_gbnf(text)
    except GrammarParseError as err:
        raise ValueError(f"the schema gives a grammar llama.cpp cannot use: {err.reason}") from None


def load_schema(schema: str | bytes | Schema | type) -> Schema:
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


def _pointer(path: str) -> str:
    """Where a subschema is, as a JSON pointer fragment: '#', '#/properties/a'."""
    return "#" + path


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


class Converter:
    """One conversion: the rules written so far (by name), the primitive and format rules used,
    and the rule of each $ref."""

    def __init__(self, root: Schema, strict: bool, reserved: Collection[str] = ()) -> None:
        self.root = root
        self.strict = strict
        self.reserved = frozenset(reserved)
        self.rules: dict[str, str] = {}
        self.used_primitives: list[str] = []
        self.refs: dict[str, str] = {}
        self.merging: list[str] = []

    def convert(self) -> str:
        """The GBNF text, not yet parsed (schema_grammar parses it)."""
        return self.convert_many({"root": self.root})

    def convert_many(self, schemas: Mapping[str, Schema]) -> str:
        """The GBNF text of each schema under its start rule's name, not yet parsed."""
        for start in schemas:
            self.rules[start] = ""  # taken before any schema names its own rules
        for start, schema in schemas.items():
            self.root, self.refs = schema, {}
            self.rules[start] = self.visit(schema, "", start)
        self.collapse_aliases()
        lines = []
        lines += [f"{name} ::= {rule}" for name, rule in self.rules.items()]
        lines += [PRIMITIVES.get(name) or FORMAT_RULES[name] for name in self.used_primitives]
        return "\n".join(lines) + "\n"

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
            for dep in PRIMITIVE_DEPS.get(name, ()) + FORMAT_DEPS.get(name, ()):
                self.primitive(dep)
        return name

    def new_rule(self, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9-]+", "-", hint).strip("-") or "rule"
        reserved = set(PRIMITIVES) | set(FORMAT_RULES) | {"root", "year", "leap-year", "octet"} | self.reserved
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

    def check_keywords(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        """The schema less annotations; unsupported keywords raise (or, not strict, are dropped)."""
        kept = {}
        for key, value in schema.items():
            if key in ANNOTATIONS or key in CONTAINERS or key.startswith("x-"):
                continue
            if key in ("minProperties", "minContains") and value == 0:
                continue  # no-ops, and a bare minProperties 0 must not make the schema an object's
            if key in SUPPORTED:
                kept[key] = value
            elif key == "uniqueItems" and value is False:
                continue
            elif key in WHY_UNSUPPORTED:
                self.unsupported(key, path, WHY_UNSUPPORTED[key])
            else:
                self.unsupported(key, path, "not a JSON Schema keyword this converter knows")
        return kept

    def resolve(self, ref: str, path: str) -> tuple[Schema, str]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ValueError(f"$ref {ref!r} at {_pointer(path)}: only local references ('#/...') are supported")
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
                return alt(exprs)
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
            return alt(allowed)
        options = []
        for t in TYPES:
            if t not in types or (t == "integer" and "number" in types):
                continue
            options.append(getattr(self, "visit_" + t)(s, path, hint))
        return alt(options)

    def types(self, s: dict[str, Any], path: str) -> set[str]:
        declared = s.get("type")
        if declared is None:
            # No type: the type keywords present say which kinds are constrained; a value of
            # another kind would be valid too, but generating only these is still valid.
            found = {t for t, keys in (("object", OBJECT_KEYS), ("array", ARRAY_KEYS),
                                       ("string", STRING_KEYS), ("number", NUMBER_KEYS))
                     if any(k in s for k in keys)}
            types = found or set(TYPES) - {"integer"}
        else:
            listed = declared if isinstance(declared, list) else [declared]
            bad = [t for t in listed if t not in TYPES]
            if bad or not listed:
                raise ValueError(f"'type' at {_pointer(path)} must name JSON types {list(TYPES)}, got {declared!r}")
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
        return literal(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False))

    def ref(self, ref: str, path: str) -> str:
        if ref in self.refs:
            return self.refs[ref]
        target, _ = self.resolve(ref, path)
        hint = ref.rstrip("/").split("/")[-1] or "root-ref"
        name = self.new_rule(hint if ref != "#" else "root-ref")
        self.refs[ref] = name
        self.rules[name] = self.visit(target, ref[1:], name)
        return name

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
        lo, hi = self.member_count(s, path, entries, extra is not None, closed)
        self.primitive("ws")
        pairs = [(seq(self.json_literal(key), 'ws ":" ws', value), req) for key, value, req in entries]
        extra_pair = None
        if extra is not None:
            value = self.visit(extra, f"{path}/additionalProperties", f"{hint}-value")
            key_rule = self.rule(f"{hint}-key", seq('"\\""', self.other_key([k for k, _, _ in entries]), '"\\""'))
            extra_pair = seq(key_rule, 'ws ":" ws', value)
        members = MemberList(pairs, extra_pair, lo, hi)
        if members.counted and (states := members.state_count()) > STATE_LIMIT:
            raise ValueError(f"object at {_pointer(path)}: minProperties/maxProperties over {len(pairs)} properties "
                             f"need {states} grammar rules, more than {STATE_LIMIT}: narrow the bounds or declare "
                             "fewer properties")
        body, empty_ok = members.build(hint, self.rule)
        if body is None:
            return self.rule(hint, '"{" ws "}"')
        inner = seq(group(body), "ws")
        return self.rule(hint, seq('"{" ws', repeat(inner, 0, 1) if empty_ok else inner, '"}"'))

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
            children = sorted(c for c in node if c and not any(lo <= ord(c) <= hi for lo, hi in JSON_SPECIAL))
            stop = gbnf_class([(ord(c), ord(c)) for c in children] + [(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C),
                                                                    (0x7F, 0x7F)], negated=True)
            options.append(seq(stop, "plain-char*"))
            for c in children:
                options.append(seq(literal(c), group(walk(node[c]))))
            expr = alt(options)
            return expr if "" in node else repeat(expr, 0, 1)

        return walk(trie)

    def member_count(self, s: dict[str, Any], path: str, entries: list[tuple[str, str, bool]], extra_ok: bool,
                     closed: bool) -> tuple[int, int | None]:
        """minProperties..maxProperties of an object with these declared entries (key, value,
        required) and extra members if extra_ok, refused where no object can meet them; with
        extra members, maxProperties above the grammar's repetition limit is enforced as it."""
        lo = _nonnegative_int(s, "minProperties", path) or 0
        hi = _nonnegative_int(s, "maxProperties", path)
        where = f"object at {_pointer(path)}"
        n_required = sum(1 for _, _, req in entries if req)
        if hi is not None and hi < lo:
            raise ValueError(f"{where}: maxProperties {hi} is less than minProperties {lo}")
        if hi is not None and hi < n_required:
            raise ValueError(f"{where}: maxProperties {hi} is less than its {n_required} required properties")
        if not extra_ok and lo > len(entries):
            why = ("additionalProperties is false" if closed
                   else "'properties' without 'additionalProperties' allows no other keys here")
            raise ValueError(f"{where}: minProperties {lo} is more than the {len(entries)} properties it can hold "
                             f"({why})")
        if lo > MAX_REPETITION:
            raise ValueError(f"{where}: minProperties {lo} exceeds the grammar limit of {MAX_REPETITION}")
        if hi is not None and hi > MAX_REPETITION and extra_ok:
            hi = max(MAX_REPETITION, n_required)  # extra members repeat at most hi - 1 times
        return lo, hi

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
        if lo > MAX_REPETITION:
            raise ValueError(f"array at {_pointer(path)}: minItems {lo} exceeds the grammar limit of {MAX_REPETITION}")
        if hi is not None:
            hi = min(hi, MAX_REPETITION)
        prefix_exprs = [self.visit(p, f"{path}/prefixItems/{i}", f"{hint}-{i}") for i, p in enumerate(prefix)]
        item = None if items is False else self.visit(True if items is None else items, f"{path}/items",
                                                      f"{hint}-item")
        self.primitive("ws")
        sep = 'ws "," ws'

        def from_index(i: int) -> str:
            """Items i.. after at least one item, each preceded by a separator."""
            if i < len(prefix_exprs) and (hi is None or i < hi):
                part = seq(sep, prefix_exprs[i], from_index(i + 1))
                return part if i < lo else repeat(part, 0, 1)
            if item is None or (hi is not None and i >= hi):
                return ""
            return repeat(seq(sep, item), max(lo - i, 0), None if hi is None else hi - i)

        if hi == 0:
            return self.rule(hint, '"[" ws "]"')
        first = prefix_exprs[0] if prefix_exprs else item
        assert first is not None
        body = seq(first, from_index(1))
        inner = seq(group(body), "ws")
        return self.rule(hint, seq('"[" ws', repeat(inner, 0, 1) if lo == 0 else inner, '"]"'))

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
                content = Regex(pattern).convert()
            except RegexError as err:
                raise ValueError(f"'pattern' at {_pointer(path)}: {err}") from None
            return self.rule(f"{hint}-pattern", seq(quote, group(content) if content else "", quote))
        if fmt is not None:
            if fmt in FORMAT_RULES:
                if lo is not None or hi is not None:
                    self.unsupported("minLength" if lo is not None else "maxLength", path,
                                     f"it cannot be combined with format '{fmt}'")
                return seq(quote, self.primitive(fmt), quote)
            self.unsupported("format", path, f"format {fmt!r} is not supported (known: {', '.join(FORMAT_RULES)})")
        if lo is None and hi is None:
            return self.primitive("string")
        lo = lo or 0
        if lo > MAX_REPETITION:
            raise ValueError(f"'minLength' {lo} at {_pointer(path)} exceeds the grammar limit of {MAX_REPETITION}")
        if hi is not None and hi < lo:
            raise ValueError(f"string at {_pointer(path)}: maxLength {hi} is less than minLength {lo}")
        self.primitive("char")
        return seq(quote, repeat("char", lo, None if hi is None else min(hi, MAX_REPETITION)), quote)

    def bounds(self, s: dict[str, Any], path: str) -> tuple[Bound | None, Bound | None]:
        lo: Bound | None = None
        hi: Bound | None = None
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
        return self.bounded(s, path, "number", number_range, f"{hint}-number")

    def visit_integer(self, s: dict[str, Any], path: str, hint: str) -> str:
        return self.bounded(s, path, "integer", integer_range, f"{hint}-int")

    def bounded(self, s: dict[str, Any], path: str, kind: str,
                in_range: Callable[[Bound | None, Bound | None], str | None], rule_hint: str) -> str:
        """A number or an integer: its primitive rule when unbounded, else a rule for its range."""
        lo, hi = self.bounds(s, path)
        if lo is None and hi is None:
            return self.primitive(kind)
        expr = in_range(lo, hi)
        if expr is None:
            raise ValueError(f"no {kind} at {_pointer(path)} satisfies the bounds")
        return self.rule(rule_hint, expr)

    def visit_boolean(self, s: dict[str, Any], path: str, hint: str) -> str:
        return self.primitive("boolean")

    def visit_null(self, s: dict[str, Any], path: str, hint: str) -> str:
        return self.primitive("null")

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
            return [t for t in TYPES if t in both]
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
        if key in ("minimum", "minLength", "minItems", "minProperties"):
            return max(a, b)
        if key in ("maximum", "maxLength", "maxItems", "maxProperties"):
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

