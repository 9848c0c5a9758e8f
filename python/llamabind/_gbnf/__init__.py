"""GBNF as llama.cpp reads it, in pure Python: the parser (following the pinned llama.cpp's
src/llama-grammar.cpp), the checks it makes afterwards and those it misses, and a recognizer.

The bottom layer of the grammar code: it imports only llamabind._core, and both
llamabind.llama_grammar and llamabind.json_schema build on it.
"""

from .elements import MAX_REPETITION
from .errors import GrammarParseError, line_col
from .grammar import ParsedGrammar, parse_gbnf
from .recognizer import Compiled, compile_rules, recognizes

__all__ = ["MAX_REPETITION", "Compiled", "GrammarParseError", "ParsedGrammar", "compile_rules", "line_col",
           "parse_gbnf", "recognizes"]
