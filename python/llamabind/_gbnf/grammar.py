"""A grammar text parsed and checked as llama.cpp would: the one entry point of the parser."""

from __future__ import annotations

from dataclasses import dataclass

from .._core import Vocab
from .checks import check
from .elements import Element
from .errors import GrammarParseError, ParseFailure, line_col
from .parser import Parser


@dataclass(frozen=True)
class ParsedGrammar:
    """A grammar text that llama.cpp can use, with its rule arrays; made by parse_gbnf."""

    text: str
    root: str
    rules: dict[int, list[Element]]
    root_id: int
    names: list[str]  # the named rules, defined or referenced, in order of first appearance
    warnings: list[tuple[int, str]]  # (offset, message): suspicious but valid constructs


def parse_gbnf(text: str, root: str = "root", vocab: Vocab | None = None) -> ParsedGrammar:
    """`text` parsed and checked; GrammarParseError (with line, column and reason) where llama.cpp
    would reject it or hang on it. `<text>` token references are checked only against a `vocab`."""
    parser = Parser(text, vocab)
    try:
        parser.parse()
        check(parser, root)
    except ParseFailure as failure:
        line, column, source_line = line_col(text, failure.pos)
        raise GrammarParseError(failure.reason, line, column, source_line) from None
    return ParsedGrammar(text, root, parser.rules, parser.symbol_ids[root],
                         [n for n in parser.symbol_ids if "_" not in n], parser.warnings)
