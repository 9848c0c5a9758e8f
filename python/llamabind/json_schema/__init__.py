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
* minProperties/maxProperties count the members as written; two extra keys may be the same
  (a grammar cannot tell them apart), and such a document holds fewer properties once parsed
  (the one way around soundness: a model rarely repeats a key);
* strings use no surrogate \\u escapes; `pattern` matches the whole string (a match is also a
  search hit); `maxLength`, `maxItems`, `maxProperties` (where extra keys are allowed) and
  regex repetition above 2000 are enforced as 2000 (llama.cpp's repetition limit);
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
additionalProperties, minProperties, maxProperties, items, prefixItems, additionalItems,
minItems, maxItems, minLength, maxLength, pattern (a regex subset), format (date, time,
date-time, uuid, email, uri, ipv4), minimum, maximum, exclusiveMinimum, exclusiveMaximum
(numbers and draft-4 booleans).
Annotations (title, description, examples, ...) are ignored. Any other keyword raises
ValueError naming it and where it is, or with strict=False is dropped with a UserWarning.
"""

from __future__ import annotations

# ANNOTATIONS, Schema and Union were importable from here before the converter was split up.
from typing import Union as Union

from . import _converter
from ._keywords import ANNOTATIONS as ANNOTATIONS
from ._keywords import Schema as Schema

__all__ = ["json_schema_to_gbnf"]


def json_schema_to_gbnf(schema: str | bytes | Schema | type, *, strict: bool = True) -> str:
    """GBNF text whose root rule matches JSON documents valid against `schema` (JSON text, a
    dict, True/False, or a pydantic model class). Raises ValueError for what it cannot enforce
    (with strict=False: warns and leaves that keyword out)."""
    return _converter.schema_grammar(schema, strict=strict).text
