"""GBNF grammars for constrained generation.

    grammar = LlamaGrammar.from_string('root ::= "yes" | "no"')
    llm.create_completion("Is water wet? Answer:", grammar=grammar)

    person = LlamaGrammar.from_json_schema({"type": "object", "properties": {"name": {"type": "string"}}})

A grammar is checked when it is made, in pure Python (llamabind._gbnf): the parser follows the
pinned llama.cpp's (src/llama-grammar.cpp) step for step, so a grammar llama.cpp would reject raises
GrammarError at construction, with the line, the column and the reason, rather than later
inside a sampler. It also rejects what llama.cpp accepts and then hangs on: repetition bounds
`{m,n}` with n < m, and left recursion through a rule that is only indirectly empty (llama.cpp
looks through directly empty rules only) unless the recursive reference ends its alternative,
which llama.cpp survives. And it rejects an empty text, which llama.cpp reads as "no grammar".
Token references by text (`<think>`) are checked only when a vocabulary is given.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _gbnf
from ._core import GrammarError as GrammarError  # GrammarParseError's base, importable from here too
from ._core import Vocab
from ._gbnf import MAX_REPETITION, GrammarParseError
from .json_schema import _converter

if TYPE_CHECKING:
    from ._core import Model

__all__ = ["JSON_ARR_GBNF", "JSON_GBNF", "LLAMA_GRAMMAR_DEFAULT_ROOT", "MAX_REPETITION", "GrammarParseError",
           "LlamaGrammar", "json_schema_to_gbnf"]

LLAMA_GRAMMAR_DEFAULT_ROOT = "root"

logger = logging.getLogger("llamabind")

# The rules of any JSON value, shared by the two grammars below.
_JSON_VALUE_RULES = r"""value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array  ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( [0-9] | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,15} )?
ws     ::= [ \t\n]{0,20}
"""

# Any JSON value, object at the top level (what response_format={"type": "json_object"} asks for).
JSON_GBNF = "\nroot   ::= ws object ws\n" + _JSON_VALUE_RULES

# A JSON array of any values at the top level.
JSON_ARR_GBNF = '\nroot   ::= ws "[" ws ( value ws ( "," ws value ws )* )? "]" ws\n' + _JSON_VALUE_RULES

# A JSON array of any values at the top level.
JSON_ARR_GBNF = r"""
root   ::= ws "[" ws ( value ws ( "," ws value ws )* )? "]" ws
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array  ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( [0-9] | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,15} )?
ws     ::= [ \t\n]{0,20}
"""


def json_schema_to_gbnf(schema: Any, *, strict: bool = True) -> str:
    """The GBNF grammar of a JSON Schema (see llamabind.json_schema)."""
    return _converter.schema_grammar(schema, strict=strict).text


class LlamaGrammar:
    """A GBNF grammar: its text and its start rule, checked when made.

        g = LlamaGrammar.from_string('root ::= "yes" | "no"')
        g.matches("yes")            # True: a pure-Python check, no model needed
        llm.create_completion("Answer:", grammar=g)

    Raises GrammarError (a GrammarParseError, with .line, .column and .reason) for a grammar
    llama.cpp would reject. `<text>` token references are checked against `vocab` when one is
    given; without one, llama.cpp checks them when a sampler is built."""

    def __init__(self, grammar: str, root: str = "root", *, vocab: Vocab | Model | None = None,
                 verbose: bool = False, lazy_patterns: tuple[str, ...] = (),
                 lazy_tokens: tuple[int, ...] = ()) -> None:
        if not isinstance(grammar, str):
            raise TypeError(f"grammar must be str, got {type(grammar).__name__}")
        if not isinstance(root, str):
            raise TypeError(f"root must be str, got {type(root).__name__}")
        if vocab is not None and not isinstance(vocab, Vocab):
            vocab = vocab.vocab
        parsed = _gbnf.parse_gbnf(grammar, root, vocab)
        if verbose:
            for pos, message in parsed.warnings:
                line, column, _ = _gbnf.line_col(grammar, pos)
                logger.warning("grammar line %d, column %d: %s", line, column, message)
        self._adopt(parsed, lazy_patterns, lazy_tokens)

    @classmethod
    def _from_parsed(cls, parsed: _gbnf.ParsedGrammar, *, lazy_patterns: tuple[str, ...] = (),
                     lazy_tokens: tuple[int, ...] = ()) -> LlamaGrammar:
        """A grammar from text parse_gbnf has already parsed and checked (it is not parsed again)."""
        grammar = cls.__new__(cls)
        grammar._adopt(parsed, lazy_patterns, lazy_tokens)
        return grammar

    def _adopt(self, parsed: _gbnf.ParsedGrammar, lazy_patterns: tuple[str, ...],
               lazy_tokens: tuple[int, ...]) -> None:
        self.grammar = parsed.text
        self.root = parsed.root
        # A lazy grammar only constrains the output once a trigger appears: a regex whose first
        # group starts the constrained text (matched against the whole output so far), or a
        # token id. Without triggers the grammar applies from the first token.
        self.lazy_patterns = tuple(lazy_patterns)
        self.lazy_tokens = tuple(int(t) for t in lazy_tokens)
        self._rules = parsed.rules
        self._root_id = parsed.root_id
        self._names = parsed.names
        self._compiled: _gbnf.Compiled | None = None

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True, *, root: str = "root",
                    vocab: Vocab | Model | None = None) -> LlamaGrammar:
        """A grammar from GBNF text. With `verbose`, suspicious but valid constructs (a rule
        defined twice, an empty range like [z-a]) are logged as warnings."""
        return cls(grammar, root, vocab=vocab, verbose=verbose)

    @classmethod
    def from_file(cls, file: str | os.PathLike[str], verbose: bool = True, *, root: str = "root",
                  vocab: Vocab | Model | None = None) -> LlamaGrammar:
        """A grammar from a .gbnf file."""
        return cls(Path(file).read_text(encoding="utf-8"), root, vocab=vocab, verbose=verbose)

    @classmethod
    def from_json_schema(cls, schema: str | dict[str, Any] | bool | type, *, strict: bool = True) -> LlamaGrammar:
        """A grammar for JSON documents valid against a JSON Schema (text, dict, or a pydantic
        model class). See llamabind.json_schema.json_schema_to_gbnf for what is supported;
        `strict=False` turns unsupported keywords from errors into warnings.

            g = LlamaGrammar.from_json_schema({"type": "array", "items": {"type": "integer"}, "maxItems": 3})
        """
        return cls._from_parsed(_converter.schema_grammar(schema, strict=strict))

    @property
    def rule_names(self) -> list[str]:
        """The named rules (defined or referenced), in order of first appearance."""
        return list(self._names)

    def matches(self, text: str, *, prefix: bool = False) -> bool:
        """Whether `text` is a complete sentence of the grammar (with prefix=True: whether some
        continuation of it is). A pure-Python check on characters; token references never match."""
        if self._compiled is None:
            self._compiled = _gbnf.compile_rules(self._rules)
        return _gbnf.recognizes(self._compiled, self._root_id, text, prefix=prefix)

    def __repr__(self) -> str:
        first = self.grammar.strip().splitlines()[0]
        return f"LlamaGrammar({first[:60]!r}{'...' if len(first) > 60 else ''})"

