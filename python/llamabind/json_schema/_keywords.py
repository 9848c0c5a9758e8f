"""The JSON Schema vocabulary of the converter: what it enforces, what it ignores, and what it
refuses (and why)."""

from __future__ import annotations

from typing import Any, Union

Schema = Union[dict[str, Any], bool]

# Keywords that only annotate: accepted anywhere and ignored.
ANNOTATIONS = frozenset({
    "title", "description", "examples", "default", "$schema", "$id", "$comment", "deprecated", "readOnly",
    "writeOnly", "$anchor", "$vocabulary", "contentEncoding", "contentMediaType",
    # OpenAPI's hint for a oneOf/anyOf whose branches carry a const tag (pydantic emits it); the
    # branches themselves are what is enforced.
    "discriminator",
})
CONTAINERS = frozenset({"$defs", "definitions"})
SUPPORTED = frozenset({
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref",
    "properties", "required", "additionalProperties", "minProperties", "maxProperties",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
})
WHY_UNSUPPORTED = {
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
    "unevaluatedProperties": "unevaluated* keywords are not supported",
    "unevaluatedItems": "unevaluated* keywords are not supported",
    "$dynamicRef": "dynamic references are not supported", "$recursiveRef": "dynamic references are not supported",
    "nullable": "it is OpenAPI 3.0, not JSON Schema (validators ignore it); use a type list like "
                "[\"string\", \"null\"]",
}
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
OBJECT_KEYS = ("properties", "required", "additionalProperties", "minProperties", "maxProperties")
ARRAY_KEYS = ("items", "prefixItems", "additionalItems", "minItems", "maxItems")
STRING_KEYS = ("minLength", "maxLength", "pattern", "format")
NUMBER_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
