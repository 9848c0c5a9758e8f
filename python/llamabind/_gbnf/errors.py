"""How a grammar that llama.cpp would reject is reported: GrammarParseError, with a position
given as line and column."""

from __future__ import annotations

import re
from typing import Any

from .._core import GrammarError


class GrammarParseError(GrammarError):
    """A GBNF grammar that does not parse; a GrammarError (so a ValueError) with where and why.

    Attributes: `line` and `column` (1-based, columns count characters), `reason`, and
    `source_line` (the text of the offending line)."""

    # Its public home is llama_grammar (and llamabind): tracebacks and pickles name it there.
    __module__ = "llamabind.llama_grammar"

    def __init__(self, reason: str, line: int, column: int, source_line: str) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        self.source_line = source_line
        shown = source_line.replace("\t", " ")
        caret = " " * (column - 1) + "^"
        super().__init__(f"[LlamaGrammar] invalid grammar at line {line}, column {column}: {reason}\n"
                         f"    {shown}\n    {caret}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.line, self.column, self.source_line))


class ParseFailure(Exception):
    """Raised inside the parser and the checks: a character offset and the reason, made into a
    GrammarParseError once the text is at hand."""

    def __init__(self, pos: int, reason: str) -> None:
        super().__init__(reason)
        self.pos = pos
        self.reason = reason


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def line_col(text: str, pos: int) -> tuple[int, int, str]:
    """1-based line and column of `pos` (\n, \r\n and \r end lines, as for llama.cpp), and the line."""
    pos = max(0, min(pos, len(text)))
    line, line_start = 1, 0
    for m in _LINE_BREAK.finditer(text, 0, pos):
        if m.end() > pos:
            break
        line, line_start = line + 1, m.end()
    end = _LINE_BREAK.search(text, line_start)
    return line, pos - line_start + 1, text[line_start:end.start() if end else len(text)]


def line_col_text(text: str, pos: int) -> str:
    line, col, _ = line_col(text, pos)
    return f"line {line}, column {col}"

