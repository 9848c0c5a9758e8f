"""GBNF grammars for constrained generation.

    grammar = LlamaGrammar.from_string('root ::= "yes" | "no"')
    llm.create_completion("Is water wet? Answer:", grammar=grammar)

    person = LlamaGrammar.from_json_schema({"type": "object", "properties": {"name": {"type": "string"}}})

A grammar is checked here, in pure Python, when it is made: the parser follows the pinned
llama.cpp's (src/llama-grammar.cpp) step for step, so a grammar llama.cpp would reject raises
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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._core import GrammarError, Vocab

if TYPE_CHECKING:
    from ._core import Model

__all__ = ["JSON_ARR_GBNF", "JSON_GBNF", "LLAMA_GRAMMAR_DEFAULT_ROOT", "MAX_REPETITION", "GrammarParseError",
           "LlamaGrammar", "json_schema_to_gbnf"]

LLAMA_GRAMMAR_DEFAULT_ROOT = "root"

logger = logging.getLogger("llamabind")

# Any JSON value, object at the top level (what response_format={"type": "json_object"} asks for).
JSON_GBNF = r"""
root   ::= ws object ws
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array  ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( [0-9] | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,15} )?
ws     ::= [ \t\n]{0,20}
"""

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
    from .json_schema import json_schema_to_gbnf as convert

    return convert(schema, strict=strict)


# llama.cpp's MAX_REPETITION_THRESHOLD: larger minimums are errors, larger maximums mean "no
# maximum", and a repetition may not multiply the rules it copies beyond it.
MAX_REPETITION = 2000

# Element kinds, as llama.cpp's llama_gretype.
_END, _ALT, _RULE_REF, _CHAR, _CHAR_NOT, _CHAR_RNG_UPPER, _CHAR_ALT, _CHAR_ANY, _TOKEN, _TOKEN_NOT = range(10)

_Element = tuple[int, int]


class GrammarParseError(GrammarError):
    """A GBNF grammar that does not parse; a GrammarError (so a ValueError) with where and why.

    Attributes: `line` and `column` (1-based, columns count characters), `reason`, and
    `source_line` (the text of the offending line)."""

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


class _Failure(Exception):
    def __init__(self, pos: int, reason: str) -> None:
        super().__init__(reason)
        self.pos = pos
        self.reason = reason


def _is_word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "-")


_HEX = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class _Parser:
    """GBNF text -> llama.cpp's rule arrays, mirroring llama_grammar_parser so that symbol ids,
    synthesized rules and the repetition limits come out the same."""

    def __init__(self, text: str, vocab: Vocab | None) -> None:
        self.src = text
        self.vocab = vocab
        self.symbol_ids: dict[str, int] = {}
        self.rules: dict[int, list[_Element]] = {}
        self.first_ref: dict[int, int] = {}  # symbol id -> where it is first referenced
        self.defined_at: dict[int, int] = {}  # rule id (named or synthesized) -> where its definition starts
        self.owner: dict[int, str] = {}  # rule id -> the named rule it belongs to
        self.warnings: list[tuple[int, str]] = []

    def at(self, pos: int) -> str:
        return self.src[pos] if pos < len(self.src) else ""

    def parse(self) -> None:
        for i, c in enumerate(self.src):
            if c == "\0":
                raise _Failure(i, "NUL character (llama.cpp reads the grammar as a C string and would stop here)")
            if 0xD800 <= ord(c) <= 0xDFFF:
                raise _Failure(i, f"lone surrogate U+{ord(c):04X} cannot be encoded as UTF-8")
        pos = self.space(0, True)
        if pos == len(self.src):
            raise _Failure(0, "empty grammar: no rules (llama.cpp treats an empty text as 'no grammar')")
        while pos < len(self.src):
            pos = self.rule(pos)

    def space(self, pos: int, newline_ok: bool) -> int:
        src = self.src
        n = len(src)
        while pos < n:
            c = src[pos]
            if c in " \t" or (newline_ok and c in "\r\n"):
                pos += 1
            elif c == "#":
                while pos < n and src[pos] not in "\r\n":
                    pos += 1
            else:
                break
        return pos

    def name(self, pos: int) -> int:
        end = pos
        while end < len(self.src) and _is_word_char(self.src[end]):
            end += 1
        if end == pos:
            c = self.at(pos)
            raise _Failure(pos, f"expected a rule name, found {_show(c)}" if c else "expected a rule name")
        return end

    def symbol(self, name: str) -> int:
        return self.symbol_ids.setdefault(name, len(self.symbol_ids))

    def generated(self, base: str) -> int:
        next_id = len(self.symbol_ids)
        self.symbol_ids[f"{base}_{next_id}"] = next_id
        return next_id

    def add_rule(self, rule_id: int, rule: list[_Element], owner: str, pos: int) -> None:
        self.rules[rule_id] = rule
        self.owner[rule_id] = owner
        self.defined_at.setdefault(rule_id, pos)

    def rule(self, pos: int) -> int:
        start = pos
        name_end = self.name(pos)
        name = self.src[pos:name_end]
        pos = self.space(name_end, False)
        rule_id = self.symbol(name)
        if self.src[pos:pos + 3] != "::=":
            found = self.src[pos:pos + 3].split("\n")[0]
            raise _Failure(pos, f"expected '::=' after rule name '{name}'" + (f", found {found!r}" if found else ""))
        if rule_id in self.rules:
            self.warnings.append((start, f"rule '{name}' is defined again; the later definition wins"))
        pos = self.space(pos + 3, True)
        self.defined_at[rule_id] = start
        pos = self.alternates(pos, name, rule_id, False, start)
        c = self.at(pos)
        if c == "\r":
            pos += 2 if self.at(pos + 1) == "\n" else 1
        elif c == "\n":
            pos += 1
        elif c:
            raise _Failure(pos, f"unexpected {_show(c)} in rule '{name}'" + _hint(c))
        return self.space(pos, True)

    def alternates(self, pos: int, name: str, rule_id: int, nested: bool, start: int) -> int:
        rule: list[_Element] = []
        pos = self.sequence(pos, name, rule, nested)
        while self.at(pos) == "|":
            rule.append((_ALT, 0))
            pos = self.space(pos + 1, True)
            pos = self.sequence(pos, name, rule, nested)
        rule.append((_END, 0))
        self.add_rule(rule_id, rule, name, start)
        return pos

    def char(self, pos: int, opened: int, what: str) -> tuple[int, int]:
        """One character of a literal or class (possibly escaped): (code point, next pos)."""
        src = self.src
        if pos >= len(src):
            raise _Failure(opened, f"unterminated {what}")
        c = src[pos]
        if c != "\\":
            return ord(c), pos + 1
        e = self.at(pos + 1)
        if e in _HEX_ESCAPES:
            size = _HEX_ESCAPES[e]
            digits = src[pos + 2:pos + 2 + size]
            n_hex = 0
            while n_hex < len(digits) and digits[n_hex] in _HEX:
                n_hex += 1
            if n_hex != size:
                raise _Failure(pos, f"escape '\\{e}' needs {size} hex digits, found {digits[:n_hex]!r}")
            return int(digits, 16), pos + 2 + size
        if e in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[e], pos + 2
        if not e:
            raise _Failure(opened, f"unterminated {what}")
        raise _Failure(pos, f"unknown escape '\\{e}' "
                            "(known: \\n \\t \\r \\\\ \\\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH)")

    def token(self, pos: int) -> tuple[int, int]:
        """A token reference <[id]> or <text> at pos (the '<'): (token id or -1, next pos)."""
        src = self.src
        if self.at(pos) != "<":
            raise _Failure(pos, "expected '<' after '!' (a negated token reference looks like !<[id]> or !<text>)")
        p = pos + 1
        if self.at(p) == "[":
            p += 1
            end = p
            while end < len(src) and src[end].isascii() and src[end].isdigit():
                end += 1
            if end == p:
                raise _Failure(p, "expected a token id (digits) in <[...]>")
            token_id = int(src[p:end])
            if token_id > 0xFFFFFFFF:
                raise _Failure(p, f"token id {token_id} is too big")
            if self.at(end) != "]":
                raise _Failure(end, "expected ']' to close the token id")
            if self.at(end + 1) != ">":
                raise _Failure(end + 1, "expected '>' after ']' in <[id]>")
            return token_id, end + 2
        end = src.find(">", p)
        if end < 0:
            raise _Failure(pos, "unterminated token reference: no closing '>'")
        end += 1
        if self.vocab is None:
            return -1, end
        text = src[pos:end]
        tokens = self.vocab.tokenize(text, add_special=False, parse_special=True)
        if len(tokens) != 1:
            raise _Failure(pos, f"token {text!r} is not a single token of the vocabulary ({len(tokens)} tokens)")
        return tokens[0], end

    def sequence(self, pos: int, name: str, rule: list[_Element], nested: bool) -> int:
        src = self.src
        last_sym_start = len(rule)
        n_prev_rules = 1

        def repeat(op_pos: int, op: str, lo: int, hi: int | None) -> None:
            nonlocal n_prev_rules
            if last_sym_start == len(rule):
                raise _Failure(op_pos, f"'{op}' has nothing to repeat")
            prev = rule[last_sym_start:]
            total = hi if hi is not None and hi > 0 else (lo if lo > 0 else 1)
            if n_prev_rules * total > MAX_REPETITION:
                raise _Failure(op_pos, f"repetition '{op}' would copy {n_prev_rules * total} rules, over llama.cpp's "
                                       f"limit of {MAX_REPETITION}: reduce the repetition or the repeated group")
            if lo == 0:
                del rule[last_sym_start:]
            else:
                for _ in range(lo - 1):
                    rule.extend(prev)
            n_opt = 1 if hi is None else hi - lo
            last_rec = 0
            for i in range(n_opt):
                rec_id = self.generated(name)
                rec = list(prev)
                if i > 0 or hi is None:
                    rec.append((_RULE_REF, rec_id if hi is None else last_rec))
                rec.extend(((_ALT, 0), (_END, 0)))
                self.add_rule(rec_id, rec, name, op_pos)
                last_rec = rec_id
            if n_opt > 0:
                rule.append((_RULE_REF, last_rec))
            n_prev_rules *= total

        while pos < len(src):
            c = src[pos]
            if c == '"':
                opened = pos
                pos += 1
                last_sym_start = len(rule)
                n_prev_rules = 1
                while self.at(pos) != '"':
                    value, pos = self.char(pos, opened, "string literal (no closing '\"')")
                    rule.append((_CHAR, value))
                pos = self.space(pos + 1, nested)
            elif c == "[":
                opened = pos
                pos += 1
                start_type = _CHAR
                if self.at(pos) == "^":
                    pos += 1
                    start_type = _CHAR_NOT
                last_sym_start = len(rule)
                n_prev_rules = 1
                what = "character class (no closing ']')"
                while self.at(pos) != "]":
                    low_start = pos
                    value, pos = self.char(pos, opened, what)
                    rule.append((_CHAR_ALT if last_sym_start < len(rule) else start_type, value))
                    if self.at(pos) == "-" and self.at(pos + 1) != "]":
                        if pos + 1 >= len(src):
                            raise _Failure(opened, f"unterminated {what}")
                        upper, after = self.char(pos + 1, opened, what)
                        if upper < value:
                            self.warnings.append((low_start, f"empty range {src[low_start:after]!r} matches nothing"))
                        pos = after
                        rule.append((_CHAR_RNG_UPPER, upper))
                pos = self.space(pos + 1, nested)
            elif c == "<" or c == "!":
                kind = _TOKEN
                if c == "!":
                    kind = _TOKEN_NOT
                    pos += 1
                token_id, end = self.token(pos)
                last_sym_start = len(rule)
                n_prev_rules = 1
                rule.append((kind, token_id))
                pos = self.space(end, nested)
            elif _is_word_char(c):
                name_end = self.name(pos)
                ref = self.symbol(src[pos:name_end])
                self.first_ref.setdefault(ref, pos)
                pos = self.space(name_end, nested)
                last_sym_start = len(rule)
                n_prev_rules = 1
                rule.append((_RULE_REF, ref))
            elif c == "(":
                opened = pos
                pos = self.space(pos + 1, True)
                n_before = len(self.symbol_ids)
                sub_id = self.generated(name)
                pos = self.alternates(pos, name, sub_id, True, opened)
                n_prev_rules = max(1, len(self.symbol_ids) - n_before)
                last_sym_start = len(rule)
                rule.append((_RULE_REF, sub_id))
                if self.at(pos) != ")":
                    found = self.at(pos)
                    if not found:
                        raise _Failure(opened, "unclosed '(': no matching ')'")
                    raise _Failure(pos, f"expected ')' to close the group opened at "
                                        f"{_line_col_text(src, opened)}, found {_show(found)}")
                pos = self.space(pos + 1, nested)
            elif c == ".":
                last_sym_start = len(rule)
                n_prev_rules = 1
                rule.append((_CHAR_ANY, 0))
                pos = self.space(pos + 1, nested)
            elif c in "*+?":
                op_pos = pos
                pos = self.space(pos + 1, nested)
                repeat(op_pos, c, 1 if c == "+" else 0, 1 if c == "?" else None)
            elif c == "{":
                op_pos = pos
                pos = self.space(pos + 1, nested)
                lo_text, pos = self.integer(pos, "the minimum of {m,n}")
                pos = self.space(pos, nested)
                lo = int(lo_text)
                hi: int | None
                if self.at(pos) == "}":
                    hi = lo
                    close = pos
                    pos = self.space(pos + 1, nested)
                elif self.at(pos) == ",":
                    pos = self.space(pos + 1, nested)
                    hi = None
                    if self.at(pos).isascii() and self.at(pos).isdigit():
                        hi_text, pos = self.integer(pos, "the maximum of {m,n}")
                        hi = int(hi_text)
                        if hi > 0xFFFFFFFFFFFFFFFF:
                            raise _Failure(op_pos, f"repetition maximum {hi} does not fit in 64 bits")
                        pos = self.space(pos, nested)
                    if self.at(pos) != "}":
                        raise _Failure(pos, f"expected '}}' to close the repetition, found {_show(self.at(pos))}")
                    close = pos
                    pos = self.space(pos + 1, nested)
                else:
                    raise _Failure(pos, f"expected ',' or '}}' in the repetition, found {_show(self.at(pos))}")
                op = src[op_pos:close + 1]
                if lo > MAX_REPETITION:
                    raise _Failure(op_pos, f"repetition minimum {lo} exceeds llama.cpp's limit of {MAX_REPETITION}")
                if hi is not None and hi > MAX_REPETITION:
                    hi = None
                if hi is not None and hi < lo:
                    raise _Failure(op_pos, f"bad repetition bounds {op}: maximum {hi} is less than minimum {lo}")
                repeat(op_pos, op, lo, hi)
            else:
                break
        return pos

    def integer(self, pos: int, what: str) -> tuple[str, int]:
        end = pos
        while end < len(self.src) and self.src[end].isascii() and self.src[end].isdigit():
            end += 1
        if end == pos:
            raise _Failure(pos, f"expected an integer for {what}, found {_show(self.at(pos))}")
        return self.src[pos:end], end

    def rule_name(self, rule_id: int) -> str:
        for name, i in self.symbol_ids.items():
            if i == rule_id:
                return name
        return str(rule_id)

    def check(self, root: str) -> None:
        """What llama.cpp checks after parsing: every rule defined, the root present, no left
        recursion."""
        for ref, where in sorted(self.first_ref.items(), key=lambda kv: kv[1]):
            if ref not in self.rules:
                raise _Failure(where, f"undefined rule '{self.rule_name(ref)}'")
        if root not in self.symbol_ids:
            named = [n for n, i in self.symbol_ids.items() if "_" not in n]
            raise _Failure(0, f"no rule named '{root}' (the start rule); rules: {', '.join(named)}")
        self.check_left_recursion(self.symbol_ids[root])

    def left_edges(self, empty: dict[int, bool]) -> dict[int, list[tuple[int, bool]]]:
        """For each rule, the rules its alternatives can start with when the refs before them
        match nothing (by `empty`), each with whether it ends its alternative."""
        edges: dict[int, list[tuple[int, bool]]] = {}
        for rule_id, rule in self.rules.items():
            out: list[tuple[int, bool]] = []
            skipping = True
            for i, (kind, value) in enumerate(rule):
                if kind in (_ALT, _END):
                    skipping = True
                elif skipping:
                    if kind == _RULE_REF:
                        out.append((value, rule[i + 1][0] in (_ALT, _END)))
                        skipping = empty[value]
                    elif kind not in (_CHAR_ALT, _CHAR_RNG_UPPER):
                        skipping = False
            edges[rule_id] = out
        return edges

    def check_left_recursion(self, root_id: int) -> None:
        # llama.cpp's own check: a cycle of leftmost references, passing only over rules with
        # a directly empty alternative.
        directly_empty = {r: any(k in (_ALT, _END) and (i == 0 or rule[i - 1][0] == _ALT)
                                 for i, (k, _) in enumerate(rule)) for r, rule in self.rules.items()}
        edges = self.left_edges(directly_empty)
        cycle = _find_cycle({r: [v for v, _ in out] for r, out in edges.items()}, list(self.rules))
        if cycle:
            self.fail_left_recursion(cycle, "")
        # llama.cpp misses cycles through rules that are empty only indirectly (`x ::= y`,
        # `y ::= "a"?`). Those with the reference in tail position it survives (the parse
        # stacks repeat); any other makes the stacks grow without end, and llama.cpp hangs.
        nullable = _nullable(self.rules)
        edges = self.left_edges(nullable)
        reachable = {root_id}
        todo = [root_id]
        while todo:
            for kind, value in self.rules[todo.pop()]:
                if kind == _RULE_REF and value not in reachable:
                    reachable.add(value)
                    todo.append(value)
        graph = {r: [v for v, _ in edges[r] if v in reachable] for r in reachable}
        component = _components(graph)
        for r in sorted(reachable):
            for v, tail in edges[r]:
                if not tail and v in reachable and component[v] == component[r]:
                    path = _find_path(graph, v, r, component)
                    self.fail_left_recursion([r, *path], " (llama.cpp would not detect it, and would hang)")

    def fail_left_recursion(self, cycle: list[int], note: str) -> None:
        names: list[str] = []
        for rule_id in cycle:
            owner = self.owner[rule_id]
            if not names or names[-1] != owner:
                names.append(owner)
        if len(names) > 1 and names[0] != names[-1]:
            names.append(names[0])
        culprit = self.owner[cycle[0]]
        where = self.defined_at.get(self.symbol_ids.get(culprit, cycle[0]), self.defined_at[cycle[0]])
        chain = " -> ".join(names) if len(names) > 1 else f"{culprit} -> {culprit}"
        raise _Failure(where, f"left recursion: rule '{culprit}' can reach itself before matching any "
                              f"character ({chain}){note}; rewrite it with repetition, e.g. "
                              "'list ::= item (\",\" item)*' instead of 'list ::= list \",\" item | item'")


def _find_cycle(graph: dict[int, list[int]], order: list[int]) -> list[int] | None:
    """A cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in order:
        if state.get(start):
            continue
        path = [start]
        iters = [iter(graph[start])]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(graph[nxt]))
    return None


def _components(graph: dict[int, list[int]]) -> dict[int, int]:
    """Strongly connected components (Tarjan, iterative): node -> component number."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    component: dict[int, int] = {}
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = node
                    if member == node:
                        break
    return component


def _find_path(graph: dict[int, list[int]], src: int, dst: int, component: dict[int, int]) -> list[int]:
    """A shortest path src -> ... -> dst inside one component (breadth first)."""
    parent: dict[int, int | None] = {src: None}
    queue = [src]
    for node in queue:
        if node == dst:
            break
        for nxt in graph[node]:
            if nxt not in parent and component.get(nxt) == component[src]:
                parent[nxt] = node
                queue.append(nxt)
    path = []
    step: int | None = dst
    while step is not None:
        path.append(step)
        step = parent[step]
    return path[::-1]


def _nullable(rules: dict[int, list[_Element]]) -> dict[int, bool]:
    """Which rules can match the empty string (a fixed point over the alternatives)."""
    nullable = dict.fromkeys(rules, False)
    changed = True
    while changed:
        changed = False
        for rule_id, rule in rules.items():
            if nullable[rule_id]:
                continue
            ok = True
            for kind, value in rule:
                if kind in (_ALT, _END):
                    if ok:
                        nullable[rule_id] = changed = True
                        break
                    ok = True
                elif kind == _RULE_REF:
                    ok = ok and nullable.get(value, False)
                elif kind not in (_CHAR_ALT, _CHAR_RNG_UPPER):
                    ok = False
    return nullable


def _show(c: str) -> str:
    if not c:
        return "the end of the text"
    if c == "\n":
        return "a newline"
    return repr(c)


def _hint(c: str) -> str:
    if c == ")":
        return " (a ')' without a matching '(')"
    if c == ":":
        return " (a rule must start on a new line)"
    return ""


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _line_col(text: str, pos: int) -> tuple[int, int, str]:
    """1-based line and column of `pos` (\n, \r\n and \r end lines, as for llama.cpp), and the line."""
    pos = max(0, min(pos, len(text)))
    line, line_start = 1, 0
    for m in _LINE_BREAK.finditer(text, 0, pos):
        if m.end() > pos:
            break
        line, line_start = line + 1, m.end()
    end = _LINE_BREAK.search(text, line_start)
    return line, pos - line_start + 1, text[line_start:end.start() if end else len(text)]


def _line_col_text(text: str, pos: int) -> str:
    line, col, _ = _line_col(text, pos)
    return f"line {line}, column {col}"


# --- A pure-Python recognizer, for checking text against a grammar without a model. ---

# A compiled symbol: ("r", rule id), ("c", ranges, negated), ("any",), or ("t",) for a token.
_Symbol = tuple[Any, ...]


@dataclass(frozen=True)
class _Compiled:
    alts: dict[int, tuple[tuple[_Symbol, ...], ...]]
    nullable: dict[int, bool]


def _compile(rules: dict[int, list[_Element]]) -> _Compiled:
    alts: dict[int, tuple[tuple[_Symbol, ...], ...]] = {}
    for rule_id, rule in rules.items():
        out: list[tuple[_Symbol, ...]] = []
        seq: list[_Symbol] = []
        i = 0
        while i < len(rule):
            kind, value = rule[i]
            i += 1
            if kind in (_CHAR, _CHAR_NOT):
                ranges = [(value, value)]
                while i < len(rule) and rule[i][0] in (_CHAR_ALT, _CHAR_RNG_UPPER):
                    if rule[i][0] == _CHAR_ALT:
                        ranges.append((rule[i][1], rule[i][1]))
                    else:
                        ranges[-1] = (ranges[-1][0], rule[i][1])
                    i += 1
                seq.append(("c", tuple(ranges), kind == _CHAR_NOT))
            elif kind == _CHAR_ANY:
                seq.append(("any",))
            elif kind == _RULE_REF:
                seq.append(("r", value))
            elif kind in (_TOKEN, _TOKEN_NOT):
                seq.append(("t",))
            else:
                out.append(tuple(seq))
                seq = []
        alts[rule_id] = tuple(out)
    return _Compiled(alts, _nullable(rules))


def _char_ok(sym: _Symbol, cp: int) -> bool:
    if sym[0] == "any":
        return True
    if sym[0] != "c":
        return False
    found = any(lo <= cp <= hi for lo, hi in sym[1])
    return found != bool(sym[2])


def _earley(compiled: _Compiled, root: int, text: str, *, prefix: bool = False) -> bool:
    """Whether `text` is a sentence of the grammar (or, with prefix=True, can be extended to one)."""
    alts = compiled.alts
    nullable = compiled.nullable
    n = len(text)
    # An item: (rule, alternative, dot, origin).
    Item = tuple[int, int, int, int]
    chart: list[set[Item]] = [set() for _ in range(n + 1)]
    waiting: list[dict[int, list[Item]]] = [{} for _ in range(n + 1)]
    for a in range(len(alts[root])):
        chart[0].add((root, a, 0, 0))
    for i in range(n + 1):
        agenda = list(chart[i])
        cp = ord(text[i]) if i < n else -1
        while agenda:
            item = agenda.pop()
            rule, a, dot, origin = item
            seq = alts[rule][a]
            if dot == len(seq):
                for w in waiting[origin].get(rule, ()):
                    adv = (w[0], w[1], w[2] + 1, w[3])
                    if adv not in chart[i]:
                        chart[i].add(adv)
                        agenda.append(adv)
                continue
            sym = seq[dot]
            if sym[0] == "r":
                sub = sym[1]
                waiting[i].setdefault(sub, []).append(item)
                for b in range(len(alts[sub])):
                    new = (sub, b, 0, i)
                    if new not in chart[i]:
                        chart[i].add(new)
                        agenda.append(new)
                if nullable[sub]:
                    adv = (rule, a, dot + 1, origin)
                    if adv not in chart[i]:
                        chart[i].add(adv)
                        agenda.append(adv)
            elif i < n and _char_ok(sym, cp):
                chart[i + 1].add((rule, a, dot + 1, origin))
        if i < n and not chart[i + 1]:
            return False
    if prefix:
        return True
    return any(r == root and o == 0 and d == len(alts[r][a]) for r, a, d, o in chart[n])


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
        parser = _Parser(grammar, vocab)
        try:
            parser.parse()
            parser.check(root)
        except _Failure as failure:
            line, column, source_line = _line_col(grammar, failure.pos)
            raise GrammarParseError(failure.reason, line, column, source_line) from None
        if verbose:
            for pos, message in parser.warnings:
                line, column, _ = _line_col(grammar, pos)
                logger.warning("grammar line %d, column %d: %s", line, column, message)
        self.grammar = grammar
        self.root = root
        # A lazy grammar only constrains the output once a trigger appears: a regex whose first
        # group starts the constrained text (matched against the whole output so far), or a
        # token id. Without triggers the grammar applies from the first token.
        self.lazy_patterns = tuple(lazy_patterns)
        self.lazy_tokens = tuple(int(t) for t in lazy_tokens)
        self._rules = parser.rules
        self._root_id = parser.symbol_ids[root]
        self._names = [n for n in parser.symbol_ids if "_" not in n]
        self._compiled: _Compiled | None = None

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
        from .json_schema import json_schema_to_gbnf

        return cls(json_schema_to_gbnf(schema, strict=strict))

    @property
    def rule_names(self) -> list[str]:
        """The named rules (defined or referenced), in order of first appearance."""
        return list(self._names)

    def matches(self, text: str, *, prefix: bool = False) -> bool:
        """Whether `text` is a complete sentence of the grammar (with prefix=True: whether some
        continuation of it is). A pure-Python check on characters; token references never match."""
        if self._compiled is None:
            self._compiled = _compile(self._rules)
        return _earley(self._compiled, self._root_id, text, prefix=prefix)

    def __repr__(self) -> str:
        first = self.grammar.strip().splitlines()[0]
        return f"LlamaGrammar({first[:60]!r}{'...' if len(first) > 60 else ''})"

