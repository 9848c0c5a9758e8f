"""JSON Schema -> GBNF: SmolLM2 output under each schema of a corpus must parse and validate
with the `jsonschema` package (the independent reference); texts that violate a schema must be
refused both by llama.cpp's grammar sampler (token by token, see grammar_check) and by the
pure-Python matcher; what cannot be enforced raises ValueError naming the keyword."""

from __future__ import annotations

import itertools
import json
import random
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import llamabind as lb
from grammar_check import llama_cpp_accepts, llama_cpp_parses, random_sentence
from llamabind.json_schema import json_schema_to_gbnf
from llamabind.llama_grammar import LlamaGrammar

jsonschema = pytest.importorskip("jsonschema")

DRAFT7 = "http://json-schema.org/draft-07/schema#"


@dataclass
class Case:
    id: str
    schema: dict[str, Any]
    task: str
    valid: list[str]  # written the way the grammar writes JSON (schema key order, ", " and ": ")
    invalid: list[str] = field(default_factory=list)  # each violates the schema


POINT = {"type": "object", "properties": {"x": {"type": "integer", "minimum": -99, "maximum": 99},
                                          "y": {"type": "integer", "minimum": -99, "maximum": 99}},
         "required": ["x", "y"]}
TREE = {
    "$defs": {"node": {"type": "object", "properties": {
        "value": {"type": "integer", "minimum": 0, "maximum": 99},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
        "required": ["value"]}},
    "$ref": "#/$defs/node",
}

CORPUS = [
    Case("boolean", {"type": "boolean"}, "Is water wet?", ["true"], ["yes", "True", '"true"']),
    Case("integer", {"type": "integer"}, "How many legs has a spider?", ["8", "-7"], ["4.5", "01", '"3"', "-"]),
    Case("null", {"type": "null"}, "Nothing.", ["null"], ["None", "0"]),
    Case("string-length", {"type": "string", "minLength": 2, "maxLength": 8}, "A short greeting.", ['"hello"'],
         ['"a"', '"abcdefghi"', "hello"]),
    Case("enum", {"enum": ["red", "green", "blue"]}, "A primary colour.", ['"green"'], ['"yellow"', "green"]),
    Case("enum-mixed", {"enum": ["auto", 0, 1.5, None, True]}, "A setting.", ['"auto"', "1.5", "null"], ["2", '"0"']),
    Case("const", {"const": {"kind": "fixed", "n": 1}}, "The fixed value.", ['{"kind":"fixed","n":1}'],
         ['{"kind":"other","n":1}', '{"kind":"fixed"}']),
    Case("flat-object", {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 130}},
        "required": ["name", "age"]}, "Describe a person.", ['{"name": "Ada", "age": 36}'],
        ['{"name": "Ada"}', '{"name": "Ada", "age": 200}', '{"name": "Ada", "age": -1}', '{"name": 5, "age": 36}']),
    Case("required-mix", {"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "string", "maxLength": 5}, "c": {"type": "boolean"},
        "d": {"type": "null"}}, "required": ["a", "c"]}, "Fill the form.",
        ['{"a": 1, "c": true}', '{"a": 1, "b": "x", "c": false, "d": null}', '{"a": 1, "c": false, "d": null}'],
        ['{"a": 1}', '{"c": true}', '{"a": 1, "b": 2, "c": true}']),
    Case("all-optional", {"type": "object", "properties": {
        "x": {"type": "integer"}, "y": {"type": "integer"}, "z": {"type": "integer"}},
        "additionalProperties": False}, "Some coordinates.", ["{}", '{"y": 2}', '{"x": 1, "z": 3}'],
        ['{"x": "1"}', '{"w": 1}']),
    Case("type-list", {"type": "object", "properties": {"nick": {"type": ["string", "null"], "maxLength": 10}},
                       "required": ["nick"]}, "A nickname, if any.", ['{"nick": null}', '{"nick": "bo"}'],
         ['{"nick": 3}', '{"nick": "abcdefghijk"}']),
    Case("array-bounds", {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9},
                          "minItems": 2, "maxItems": 4}, "Some digits.", ["[1, 2]", "[9, 8, 7, 6]"],
         ["[1]", "[1, 2, 3, 4, 5]", "[0, 1]", "[]"]),
    Case("array-enum", {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}, "Some letters.",
         ['["a", "b"]', "[]"], ['["c"]', '["a", "a", "a", "a"]']),
    Case("prefix-items", {"type": "array", "prefixItems": [{"type": "string", "maxLength": 10}, {"type": "integer"},
                                                           {"type": "boolean"}], "items": False, "minItems": 2},
         "A name, a number and a flag.", ['["x", 1]', '["x", 1, true]'],
         ['["x"]', '[1, "x"]', '["x", 1, true, 2]']),
    Case("tuple-draft7", {"$schema": DRAFT7, "type": "array", "items": [{"type": "integer"}, {"type": "string",
                                                                                              "maxLength": 4}],
                          "additionalItems": False}, "A number and a word.", ['[1, "ab"]', "[1]"],
         ['["ab", 1]', '[1, "ab", 2]']),
    Case("nested-object", {"type": "object", "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1},
                                                  "email": {"type": "string", "format": "email"}},
                 "required": ["id", "email"]},
        "active": {"type": "boolean"}}, "required": ["user", "active"]}, "A user account.",
        ['{"user": {"id": 7, "email": "ada@example.com"}, "active": true}'],
        ['{"user": {"id": 0, "email": "ada@example.com"}, "active": true}',
         '{"user": {"id": 7, "email": "not-an-email"}, "active": true}', '{"user": {"id": 7}, "active": true}']),
    Case("array-of-objects", {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d{2}$"},
                                         "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
        "required": ["sku", "qty"]}}, "An order of products.", ['[{"sku": "ABC-12", "qty": 2}]'],
        ['[{"sku": "abc-12", "qty": 2}]', '[{"sku": "ABC-123", "qty": 2}]', "[]", '[{"sku": "ABC-12", "qty": 0}]']),
    Case("nested-arrays", {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 1, "maxItems": 3}},
        "A small grid of digits.", ["[[1, 2], [3]]"], ["[[]]", "[[10]]", "[1]"]),
    Case("anyOf", {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 10}, {"type": "string", "enum": ["none"]}]},
         "A score out of ten, or none.", ["7", '"none"'], ["11", '"some"', "null"]),
    Case("oneOf-tagged", {"oneOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"},
                                          "r": {"type": "number", "minimum": 0, "maximum": 100}},
         "required": ["kind", "r"], "additionalProperties": False},
        {"type": "object", "properties": {"kind": {"const": "square"},
                                          "side": {"type": "integer", "minimum": 1, "maximum": 100}},
         "required": ["kind", "side"], "additionalProperties": False}]}, "A shape.",
        ['{"kind": "circle", "r": 2.5}', '{"kind": "square", "side": 4}'],
        ['{"kind": "circle", "side": 4}', '{"kind": "square", "side": 0}', '{"kind": "triangle", "r": 1}']),
    Case("allOf", {"allOf": [
        {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}}, "required": ["id"]},
        {"properties": {"name": {"type": "string", "maxLength": 10}}, "required": ["name"]}]},
        "A named record.", ['{"id": 1, "name": "x"}'], ['{"id": 1}', '{"name": "x"}', '{"id": 0, "name": "x"}']),
    Case("ref-defs", {"$defs": {"point": POINT}, "type": "object", "properties": {
        "start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}}, "required": ["start", "end"]},
        "A line segment.", ['{"start": {"x": 0, "y": 0}, "end": {"x": 3, "y": -4}}'],
        ['{"start": {"x": 0, "y": 0}}', '{"start": {"x": 0}, "end": {"x": 3, "y": 4}}',
         '{"start": {"x": 0, "y": 100}, "end": {"x": 3, "y": 4}}']),
    Case("definitions-draft7", {"$schema": DRAFT7, "definitions": {"tag": {"type": "string", "enum": ["a", "b"]}},
                                "type": "array", "items": {"$ref": "#/definitions/tag"}, "maxItems": 3},
         "Some tags.", ['["a", "b"]'], ['["c"]']),
    Case("recursive-tree", TREE, "A tiny tree of numbers.",
         ['{"value": 1}', '{"value": 1, "children": [{"value": 2}, {"value": 3, "children": []}]}'],
         ['{"value": 1, "children": [{"value": 2}, {"value": 3}, {"value": 4}]}',
          '{"value": 1, "children": [{"children": []}]}', '{"value": 100}']),
    Case("recursive-list", {"$defs": {"cell": {"type": "object", "properties": {
        "v": {"type": "integer", "minimum": 0, "maximum": 9}, "next": {"anyOf": [{"$ref": "#/$defs/cell"},
                                                                                  {"type": "null"}]}},
        "required": ["v", "next"]}}, "$ref": "#/$defs/cell"}, "A linked list of two digits.",
        ['{"v": 1, "next": {"v": 2, "next": null}}'], ['{"v": 1, "next": {"v": 2}}', '{"v": 1}']),
    Case("pattern", {"type": "string", "pattern": "^\\+?[0-9]{2,3}-[0-9]{3}-[0-9]{4}$"}, "A phone number.",
         ['"+44-123-4567"', '"12-345-6789"'], ['"+44-12-4567"', '"phone"', '"44-123-45678"']),
    Case("pattern-alternation", {"type": "string", "pattern": "^(cat|dog)s?( and (cat|dog)s?)*$"}, "Some pets.",
         ['"cats and dog"'], ['"cats and"', '"bird"']),
    Case("pattern-escapes", {"type": "string", "pattern": '^[a-z]+ \\"[^"\\\\]{1,8}\\"$'}, "A quoted word.",
         ['"say \\"hi\\""'], ['"say hi"', '"say \\"hi"']),
    Case("format-date", {"type": "string", "format": "date"}, "A date.", ['"2024-02-29"', '"1999-12-31"'],
         ['"2023-02-29"', '"2023-13-01"', '"2023-04-31"', '"23-01-01"']),
    Case("format-time", {"type": "string", "format": "time"}, "A time of day.", ['"12:30:00Z"', '"23:59:59.5+01:00"'],
         ['"24:00:00Z"', '"12:30"', '"12:60:00Z"']),
    Case("format-date-time", {"type": "string", "format": "date-time"}, "A timestamp.", ['"2024-05-01T08:00:00Z"'],
         ['"2024-05-01 08:00:00Z"', '"2024-05-01T08:00:00"']),
    Case("format-uuid", {"type": "string", "format": "uuid"}, "An identifier.",
         ['"123e4567-e89b-42d3-a456-426614174000"'], ['"123e4567e89b42d3a456426614174000"', '"xyz"']),
    Case("format-uri-ipv4", {"type": "object", "properties": {"url": {"type": "string", "format": "uri"},
                                                              "ip": {"type": "string", "format": "ipv4"}},
                             "required": ["url", "ip"]}, "A web server.",
         ['{"url": "https://example.com/a?b=1", "ip": "10.0.0.1"}'],
         ['{"url": "https://example.com/a?b=1", "ip": "256.0.0.1"}', '{"url": "https://example.com", "ip": "1.2.3"}']),
    Case("number-bounds", {"type": "number", "minimum": -1.5, "exclusiveMaximum": 2.25}, "A small number.",
         ["-1.5", "0", "2.2499", "1"], ["2.25", "-1.6", "3", "-1.5000001"]),
    Case("integer-exclusive", {"type": "integer", "exclusiveMinimum": -20, "exclusiveMaximum": 300},
         "A temperature.", ["-19", "299", "0"], ["-20", "300", "1000"]),
    Case("additional-schema", {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"],
                               "additionalProperties": {"type": "string", "maxLength": 8}}, "An id and some tags.",
         ['{"id": 1, "tag": "x"}', '{"id": 1}'], ['{"id": 1, "tag": 2}', '{"id": 1, "id": "x"}', '{"tag": "x"}']),
    Case("additional-only", {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0,
                                                                         "maximum": 9}},
         "Letters mapped to digits.", ['{"a": 1, "b": 2}', "{}"], ['{"a": "x"}', '{"a": 10}']),
    Case("mixed-order", {"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"},
        "status": {"enum": ["new", "paid", "shipped"]},
        "total": {"type": "number", "minimum": 0, "maximum": 10000},
        "items": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
            "type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                             "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["name", "qty"]}},
        "note": {"type": ["string", "null"], "maxLength": 20},
        "created": {"type": "string", "format": "date"}},
        "required": ["id", "status", "items", "created"]}, "An order.",
        ['{"id": "123e4567-e89b-42d3-a456-426614174000", "status": "paid", "items": [{"name": "pen", "qty": 2}], '
         '"created": "2024-01-02"}'],
        ['{"id": "123e4567-e89b-42d3-a456-426614174000", "status": "lost", "items": [{"name": "pen", "qty": 2}], '
         '"created": "2024-01-02"}',
         '{"id": "123e4567-e89b-42d3-a456-426614174000", "status": "paid", "items": [], "created": "2024-01-02"}']),
]


def _validator(schema: dict[str, Any]) -> Any:
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _check_uris(value: Any, schema: Any) -> None:
    """jsonschema checks 'uri' only with rfc3987 installed: a loose check of our own."""
    if isinstance(schema, dict) and isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check_uris(value[key], sub)
    if isinstance(schema, dict) and schema.get("format") == "uri":
        parts = urllib.parse.urlsplit(value)
        assert parts.scheme and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme), value
        assert not re.search(r"[\s<>\"{}|\\^`]", value), value


def schema_valid(case: Case, text: str) -> bool:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    if not _validator(case.schema).is_valid(value):
        return False
    _check_uris(value, case.schema)
    return True


@pytest.fixture(scope="session")
def llm(smollm2_path: Path) -> lb.Llama:
    # One thread: llama.cpp's threads spin at barriers, so on a 2-core machine with any other
    # load, two threads can make a decode 100x slower; one keeps these short runs predictable.
    return lb.Llama(str(smollm2_path), n_ctx=512, verbose=False, n_threads=1, n_threads_batch=1)


@pytest.fixture(scope="session")
def vocab(smollm2: lb.Model) -> lb.Vocab:
    return smollm2.vocab


@pytest.fixture(scope="module")
def grammars() -> dict[str, str]:
    return {case.id: json_schema_to_gbnf(case.schema) for case in CORPUS}


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CORPUS) >= 30
    assert len({case.id for case in CORPUS}) == len(CORPUS)
    for case in CORPUS:
        _validator(case.schema).check_schema(case.schema)
        for text in case.valid:
            assert schema_valid(case, text), (case.id, text)
        for text in case.invalid:
            assert not schema_valid(case, text), (case.id, text)


# ---------------------------------------------------------------------------------------
# Generation: every output must be valid JSON for its schema

PROMPT = ("<|im_start|>system\nYou reply with JSON only.<|im_end|>\n<|im_start|>user\n{task}\n"
          "For example: {example}<|im_end|>\n<|im_start|>assistant\n")
SAMPLINGS = {"greedy": {"temperature": 0.0}, "seed1234": {"temperature": 0.8, "seed": 1234},
             "seed7": {"temperature": 0.8, "seed": 7}, "seed99": {"temperature": 1.0, "seed": 99}}


@pytest.mark.parametrize("mode", SAMPLINGS)
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_generation_validates(case: Case, mode: str, llm: lb.Llama, grammars: dict[str, str]) -> None:
    grammar = LlamaGrammar(grammars[case.id])
    prompt = PROMPT.format(task=case.task, example=case.valid[0])
    out = llm.create_completion(prompt, grammar=grammar, max_tokens=160, **SAMPLINGS[mode])
    choice = out["choices"][0]
    text = choice["text"]
    assert choice["finish_reason"] == "stop", f"hit max_tokens: {text!r}"
    assert grammar.matches(text), text
    value = json.loads(text)
    errors = [e.message for e in _validator(case.schema).iter_errors(value)]
    assert not errors, (text, errors)
    _check_uris(value, case.schema)


# ---------------------------------------------------------------------------------------
# Texts: valid ones pass the grammar, invalid ones are refused


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_grammar_accepts_valid_and_refuses_invalid(case: Case, vocab: lb.Vocab, grammars: dict[str, str]) -> None:
    gbnf = grammars[case.id]
    assert llama_cpp_parses(vocab, gbnf) is None
    grammar = LlamaGrammar(gbnf)
    for text in case.valid:
        assert grammar.matches(text), text
        assert llama_cpp_accepts(vocab, gbnf, text), text
    for text in case.invalid:
        assert not grammar.matches(text), text
        assert not llama_cpp_accepts(vocab, gbnf, text), text


def test_llama_response_format_uses_the_schema(llm: lb.Llama) -> None:
    schema = CORPUS[[c.id for c in CORPUS].index("flat-object")].schema
    out = llm.create_chat_completion(
        [{"role": "user", "content": "Describe a person as JSON."}],
        response_format={"type": "json_object", "schema": schema}, temperature=0.0, max_tokens=64)
    value = json.loads(out["choices"][0]["message"]["content"])
    jsonschema.validate(value, schema)


# ---------------------------------------------------------------------------------------
# The converter's interface


def test_schema_as_text_dict_or_bool() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "maxItems": 2}
    assert json_schema_to_gbnf(json.dumps(schema)) == json_schema_to_gbnf(schema)
    assert LlamaGrammar.from_json_schema(schema).grammar == json_schema_to_gbnf(schema)
    assert LlamaGrammar.from_json_schema(True).matches('{"any": [1, "thing"]}')
    with pytest.raises(ValueError, match="false"):
        json_schema_to_gbnf(False)
    with pytest.raises(ValueError, match="not valid JSON"):
        json_schema_to_gbnf("{nope")
    with pytest.raises(TypeError):
        json_schema_to_gbnf([1, 2])  # type: ignore[arg-type]


def test_pydantic_model_class() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Pet(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=12)
        kind: str = pydantic.Field(pattern="^(cat|dog)$")

    class Owner(pydantic.BaseModel):
        name: str
        age: int = pydantic.Field(ge=0, le=130)
        pets: list[Pet] = pydantic.Field(max_length=3)
        nickname: str | None = None

    grammar = LlamaGrammar.from_json_schema(Owner)
    assert grammar.grammar == json_schema_to_gbnf(Owner.model_json_schema())
    good = '{"name": "Ada", "age": 36, "pets": [{"name": "Rex", "kind": "dog"}], "nickname": null}'
    assert grammar.matches(good)
    Owner.model_validate_json(good)
    assert not grammar.matches('{"name": "Ada", "age": 36, "pets": [{"name": "Rex", "kind": "cow"}]}')
    assert not grammar.matches('{"name": "Ada", "age": 131, "pets": []}')


UNSUPPORTED = [
    ({"not": {"type": "string"}}, "not", "#"),
    ({"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 3}}}, "multipleOf", "#/properties/a"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems", "#"),
    ({"if": {"type": "string"}, "then": {"minLength": 2}}, "if", "#"),
    ({"type": "object", "patternProperties": {"^x": {"type": "integer"}}}, "patternProperties", "#"),
    ({"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}}, "dependentSchemas", "#"),
    ({"type": "array", "contains": {"type": "integer"}}, "contains", "#"),
    ({"type": "string", "nullable": True}, "nullable", "#"),
    ({"type": "string", "format": "hostname"}, "format", "#"),
    ({"$defs": {"a": {"type": "array", "items": {"propertyNames": {"maxLength": 2}}}}, "$ref": "#/$defs/a"},
     "propertyNames", "#/$defs/a/items"),
    ({"type": "string", "foo": 1}, "foo", "#"),
]


@pytest.mark.parametrize("schema,keyword,where", UNSUPPORTED, ids=[u[1] for u in UNSUPPORTED])
def test_unsupported_keywords_raise(schema: dict[str, Any], keyword: str, where: str) -> None:
    with pytest.raises(ValueError, match=f"'{re.escape(keyword)}' at {re.escape(where)}:"):
        json_schema_to_gbnf(schema)


def test_not_strict_warns_and_drops() -> None:
    with pytest.warns(UserWarning, match="'uniqueItems'"):
        gbnf = json_schema_to_gbnf({"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
                                   strict=False)
    assert LlamaGrammar(gbnf).matches("[1, 1]")


def test_annotations_are_allowed() -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://x.test/s", "title": "T",
              "description": "d", "examples": [1], "default": 1, "$comment": "c", "deprecated": False,
              "readOnly": True, "writeOnly": False, "type": "integer", "x-vendor": {"a": 1}}
    assert LlamaGrammar.from_json_schema(schema).matches("12")


BAD_SCHEMAS = [
    ({"type": "string", "pattern": "(?=a)b"}, "pattern"),
    ({"type": "string", "pattern": "a\\1"}, "pattern"),
    ({"type": "string", "pattern": "a^b"}, "pattern"),
    ({"$ref": "https://example.com/s.json"}, "only local"),
    ({"$ref": "#/$defs/missing"}, "does not resolve"),
    ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "left recursion"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
    ({"type": "array", "minItems": 3, "maxItems": 2}, "maxItems 2 is less than minItems 3"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "nothing in common"),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["b"],
      "additionalProperties": False}, "required"),
    ({"type": "strin"}, "'type'"),
    ({"type": "string", "minLength": 3000}, "exceeds the grammar limit"),
]


@pytest.mark.parametrize("schema,message", BAD_SCHEMAS)
def test_schemas_that_cannot_be_enforced_raise(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        json_schema_to_gbnf(schema)


def test_whitespace_is_bounded() -> None:
    g = LlamaGrammar.from_json_schema({"type": "object", "properties": {"a": {"type": "integer"}},
                                       "required": ["a"]})
    assert g.matches('{"a":1}') and g.matches('{\n  "a": 1\n}') and g.matches('{ "a" : 1 }')
    assert not g.matches('{\n\n"a": 1}')
    assert not g.matches('{' + " " * 20 + '"a": 1}')
    assert not g.matches(' {"a": 1}') and not g.matches('{"a": 1} ')


def test_limits_beyond_llama_cpp_are_tightened() -> None:
    g = LlamaGrammar.from_json_schema({"type": "string", "maxLength": 5000})
    assert g.matches('"' + "a" * 2000 + '"') and not g.matches('"' + "a" * 2001 + '"')


def test_rule_names_stay_valid_for_odd_property_names() -> None:
    schema = {"type": "object", "properties": {
        "déjà vu": {"type": "object", "properties": {"a b": {"type": "integer"}}},
        "x/y~z": {"type": "array", "maxItems": 1}}}
    g = LlamaGrammar.from_json_schema(schema)
    assert g.matches('{"déjà vu": {"a b": 1}, "x/y~z": [true]}')
    assert all(re.fullmatch(r"[A-Za-z0-9-]+", name) for name in g.rule_names)


def test_regex_subset_matches_python_re() -> None:
    """Strings the grammar accepts match the pattern with re.search, as jsonschema checks it."""
    patterns = ["^[A-Z]{2}-\\d{3}$", "^(abc|de)+x?$", "a.c", "^[^a-c]*$", "^\\w+@\\w+\\.(com|org)$", "^a{2,}b{,2}$",
                "^x|y$", "^[a\\]b]+$", "^(a|)b$", "^\\x41\\u0042$", "^[^\\d]{2}$", "^(?:ab){1,2}(?P<t>c)?$"]
    alphabet = "abcdexyzABC019-.@\"\\ _*]é"
    texts = [a + b + c for a in ["", "a", "ab", "x"] for b in alphabet for c in ["", "b", "c", "bb", "x"]]
    for pattern in patterns:
        g = LlamaGrammar.from_json_schema({"type": "string", "pattern": pattern})
        accepted = [t for t in texts if g.matches(json.dumps(t, ensure_ascii=False))]
        for text in accepted:
            assert re.search(pattern, text), (pattern, text)
        for text in texts:
            # \d, \w, \s and their negations are generated within ASCII only
            if re.fullmatch(pattern, text) and text.isprintable() and text.isascii():
                assert text in accepted, (pattern, text)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_random_documents_of_the_grammar_validate(case: Case, vocab: lb.Vocab, grammars: dict[str, str]) -> None:
    """Soundness beyond what the model happens to write: random texts of each grammar must be
    valid for the schema; a few also go through llama.cpp's sampler, token by token."""
    rng = random.Random(case.id)
    grammar = LlamaGrammar(grammars[case.id])
    for i in range(40):
        text = random_sentence(grammar, rng)
        assert schema_valid(case, text), text
        if i < 3:
            assert llama_cpp_accepts(vocab, grammars[case.id], text), text


# ---------------------------------------------------------------------------------------
# minProperties / maxProperties: exactly the objects jsonschema accepts, among those written in
# the grammar's member order (declared properties in the schema's order, then extra ones)

INT = {"type": "integer"}
COUNTED = [
    ("extra-min", {"type": "object", "minProperties": 2}, ["1", '"s"']),
    ("extra-max", {"type": "object", "additionalProperties": INT, "maxProperties": 2}, ["1", '"s"']),
    ("extra-both", {"type": "object", "additionalProperties": True, "minProperties": 1, "maxProperties": 3}, ["1"]),
    ("extra-exact", {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 2,
                     "maxProperties": 2}, ["1", '"s"']),
    ("declared-both", {"type": "object", "properties": {"a": INT, "b": INT, "c": {"type": "string"}, "d": INT},
                       "required": ["b"], "additionalProperties": False, "minProperties": 2, "maxProperties": 3},
     ["1", '"s"']),
    ("declared-min", {"type": "object", "properties": {"a": INT, "b": INT, "c": INT}, "additionalProperties": False,
                      "minProperties": 2}, ["1", '"s"']),
    ("declared-max", {"type": "object", "properties": {"a": INT, "b": INT, "c": INT}, "additionalProperties": False,
                      "maxProperties": 1}, ["1", '"s"']),
    ("declared-required-last", {"type": "object", "properties": {"a": INT, "b": INT, "c": INT, "d": INT},
                                "required": ["d"], "additionalProperties": False, "maxProperties": 2}, ["1"]),
    ("declared-extra-schema", {"type": "object", "properties": {"a": INT, "b": INT, "c": {"type": "string"}},
                               "required": ["c"], "additionalProperties": {"type": "string"}, "minProperties": 3,
                               "maxProperties": 4}, ["1", '"s"']),
    ("declared-extra-min", {"type": "object", "properties": {"a": INT, "b": INT}, "additionalProperties": True,
                            "minProperties": 3}, ["1"]),
    ("declared-exact", {"type": "object", "properties": {"a": INT, "b": INT, "c": INT}, "required": ["a", "c"],
                        "additionalProperties": True, "minProperties": 3, "maxProperties": 3}, ["1", '"s"']),
    ("nested", {"type": "object", "properties": {
        "inner": {"type": "object", "additionalProperties": INT, "minProperties": 1, "maxProperties": 2},
        "tag": {"type": "string"}}, "additionalProperties": False, "minProperties": 1, "maxProperties": 1},
     ['"s"', "{}", '{"p": 1}', '{"p": 1, "q": 2}', '{"p": 1, "q": "s"}', '{"p": 1, "q": 2, "r": 3}']),
    ("allOf-merged", {"allOf": [{"type": "object", "properties": {"a": INT}, "additionalProperties": INT,
                                 "minProperties": 1}, {"minProperties": 2, "maxProperties": 3}]}, ["1", '"s"']),
]
# (open, colon, comma, close): the whitespace the grammar allows between tokens
STYLES = [("{", ":", ",", "}"), ("{", ": ", ", ", "}"), ("{ ", " : ", " , ", " }"), ("{\n  ", ": ", ",\n  ", "\n}")]


def _object_texts(schema: dict[str, Any], values: list[str]) -> list[str]:
    """Every object of some declared properties (in order) then 0 or more of the extra keys
    x, y, ..., up to 2 members past maxProperties (or minProperties), each value from `values`,
    in each whitespace style by turns."""
    declared = list(schema.get("properties", {}))
    bound = max(schema.get("maxProperties", 0), schema.get("minProperties", 0), 1) + 2
    texts = []
    for k in range(len(declared) + 1):
        for chosen in itertools.combinations(declared, k):
            for n_extra in range(max(bound - k, 0) + 1):
                keys = [*chosen, *"xyzwv"[:n_extra]]
                for vals in itertools.product(values, repeat=len(keys)):
                    left, colon, comma, right = STYLES[len(texts) % len(STYLES)]
                    members = comma.join(f'"{key}"{colon}{value}' for key, value in zip(keys, vals))
                    texts.append(left + members + right if members else "{}")
    return texts


def _repeats_a_key(text: str) -> bool:
    repeated = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        repeated |= len({key for key, _ in pairs}) < len(pairs)
        return dict(pairs)

    json.loads(text, object_pairs_hook=pairs_hook)
    return repeated


@pytest.mark.parametrize("schema,values", [c[1:] for c in COUNTED], ids=[c[0] for c in COUNTED])
def test_property_counts_are_exact(schema: dict[str, Any], values: list[str], vocab: lb.Vocab) -> None:
    case = Case("counted", schema, "", [])
    gbnf = json_schema_to_gbnf(schema)
    grammar = LlamaGrammar(gbnf)
    texts = _object_texts(schema, values)
    verdicts = {text: schema_valid(case, text) for text in texts}
    wrong = [(text, valid) for text, valid in verdicts.items() if grammar.matches(text) != valid]
    assert not wrong, wrong[:5]
    accepted = [t for t in texts if verdicts[t]]
    refused = [t for t in texts if not verdicts[t]]
    assert accepted and refused
    for text in accepted[:2] + refused[:2]:
        assert llama_cpp_accepts(vocab, gbnf, text) == verdicts[text], text
    for text in texts:  # other member orders: the grammar need not take them, but what it takes is valid
        members = json.loads(text)
        if len(members) > 1:
            reordered = json.dumps(dict(reversed(list(members.items()))))
            assert not grammar.matches(reordered) or schema_valid(case, reordered), reordered
    rng = random.Random(json.dumps(schema))
    for _ in range(30):
        text = random_sentence(grammar, rng)
        assert _repeats_a_key(text) or schema_valid(case, text), text


def test_no_count_keywords_change_nothing() -> None:
    props = {"type": "object", "properties": {"a": INT, "b": INT, "c": INT}, "required": ["b"]}
    assert json_schema_to_gbnf({**props, "minProperties": 0}) == json_schema_to_gbnf(props)
    assert json_schema_to_gbnf({"minProperties": 0}) == json_schema_to_gbnf({})
    g = LlamaGrammar.from_json_schema({"maxProperties": 1})  # like minItems, it makes the schema an object's
    assert g.matches('{"k": [1]}') and not g.matches("[1]") and not g.matches('{"k": 1, "l": 2}')


def test_max_properties_past_the_repetition_limit_is_tightened(vocab: lb.Vocab) -> None:
    extra = {"type": "object", "additionalProperties": INT}
    gbnf = json_schema_to_gbnf({**extra, "maxProperties": 5000})
    assert gbnf == json_schema_to_gbnf({**extra, "maxProperties": 2000})
    assert "{0,1999}" in gbnf and llama_cpp_parses(vocab, gbnf) is None
    closed = {"type": "object", "properties": {"a": INT}, "additionalProperties": False}
    assert json_schema_to_gbnf({**closed, "maxProperties": 5000}) == json_schema_to_gbnf({**closed, "maxProperties": 1})


BAD_COUNTS = [
    ({"type": "object", "minProperties": 3, "maxProperties": 2}, "object at #: maxProperties 2 is less than "
     "minProperties 3"),
    ({"properties": {"x": {"type": "object", "additionalProperties": False, "properties": {"a": INT, "b": INT},
                           "minProperties": 3}}},
     "object at #/properties/x: minProperties 3 is more than the 2 properties it can hold (additionalProperties "
     "is false)"),
    ({"type": "object", "properties": {"a": INT}, "minProperties": 2},
     "minProperties 2 is more than the 1 properties it can hold ('properties' without 'additionalProperties'"),
    ({"type": "object", "properties": {"a": INT, "b": INT, "c": INT}, "required": ["a", "b", "c"],
      "additionalProperties": True, "maxProperties": 2}, "object at #: maxProperties 2 is less than its 3 required"),
    ({"type": "object", "minProperties": -1}, "'minProperties' at # must be a non-negative integer, got -1"),
    ({"type": "object", "maxProperties": 1.5}, "'maxProperties' at # must be a non-negative integer, got 1.5"),
    ({"type": "object", "maxProperties": "2"}, "'maxProperties' at # must be a non-negative integer, got '2'"),
    ({"type": "object", "minProperties": 2001}, "object at #: minProperties 2001 exceeds the grammar limit of 2000"),
    ({"type": "object", "properties": {f"p{i}": INT for i in range(150)}, "maxProperties": 75},
     "object at #: minProperties/maxProperties over 150 properties need 8475 grammar rules, more than 4000"),
]


@pytest.mark.parametrize("schema,message", BAD_COUNTS)
def test_contradictory_counts_raise(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        json_schema_to_gbnf(schema)


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_generation_meets_property_counts(seed: int, llm: lb.Llama) -> None:
    schema = {"type": "object", "properties": {"shop": {"type": "string", "maxLength": 12}}, "required": ["shop"],
              "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 99}, "minProperties": 2,
              "maxProperties": 3}
    out = llm.create_chat_completion([{"role": "user", "content": "A shop and the prices of some fruits, as JSON."}],
                                     response_format={"type": "json_object", "schema": schema}, temperature=0.8,
                                     seed=seed, max_tokens=64)
    text = out["choices"][0]["message"]["content"]
    assert LlamaGrammar.from_json_schema(schema).matches(text), text
    jsonschema.validate(json.loads(text), schema)
