"""GBNF text -> llama.cpp's rule arrays, following llama_grammar_parser (src/llama-grammar.cpp)
step for step."""

from __future__ import annotations

from .._core import Vocab
from .elements import (
    ALT, CHAR, CHAR_ALT, CHAR_ANY, CHAR_NOT, CHAR_RNG_UPPER, END, MAX_REPETITION, RULE_REF, TOKEN, TOKEN_NOT,
    Element,
)
from .errors import ParseFailure, line_col_text


def _is_word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "-")


_HEX = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class Parser:
    """GBNF text -> llama.cpp's rule arrays, mirroring llama_grammar_parser so that symbol ids,
    synthesized rules and the repetition limits come out the same."""

    def __init__(self, text: str, vocab: Vocab | None) -> None:
        self.src = text
        self.vocab = vocab
        self.symbol_ids: dict[str, int] = {}
        self.rules: dict[int, list[Element]] = {}
        self.first_ref: dict[int, int] = {}  # symbol id -> where it is first referenced
        self.defined_at: dict[int, int] = {}  # rule id (named or synthesized) -> where its definition starts
        self.owner: dict[int, str] = {}  # rule id -> the named rule it belongs to
        self.warnings: list[tuple[int, str]] = []

    def at(self, pos: int) -> str:
        return self.src[pos] if pos < len(self.src) else ""

    def parse(self) -> None:
        for i, c in enumerate(self.src):
            if c == "\0":
                raise ParseFailure(i, "NUL character (llama.cpp reads the grammar as a C string and would stop here)")
            if 0xD800 <= ord(c) <= 0xDFFF:
                raise ParseFailure(i, f"lone surrogate U+{ord(c):04X} cannot be encoded as UTF-8")
        pos = self.space(0, True)
        if pos == len(self.src):
            raise ParseFailure(0, "empty grammar: no rules (llama.cpp treats an empty text as 'no grammar')")
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
            raise ParseFailure(pos, f"expected a rule name, found {_show(c)}" if c else "expected a rule name")
        return end

    def symbol(self, name: str) -> int:
        return self.symbol_ids.setdefault(name, len(self.symbol_ids))

    def generated(self, base: str) -> int:
        next_id = len(self.symbol_ids)
        self.symbol_ids[f"{base}_{next_id}"] = next_id
        return next_id

    def add_rule(self, rule_id: int, rule: list[Element], owner: str, pos: int) -> None:
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
            raise ParseFailure(pos, f"expected '::=' after rule name '{name}'"
                                    + (f", found {found!r}" if found else ""))
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
            raise ParseFailure(pos, f"unexpected {_show(c)} in rule '{name}'" + _hint(c))
        return self.space(pos, True)

    def alternates(self, pos: int, name: str, rule_id: int, nested: bool, start: int) -> int:
        rule: list[Element] = []
        pos = self.sequence(pos, name, rule, nested)
        while self.at(pos) == "|":
            rule.append((ALT, 0))
            pos = self.space(pos + 1, True)
            pos = self.sequence(pos, name, rule, nested)
        rule.append((END, 0))
        self.add_rule(rule_id, rule, name, start)
        return pos

    def char(self, pos: int, opened: int, what: str) -> tuple[int, int]:
        """One character of a literal or class (possibly escaped): (code point, next pos)."""
        src = self.src
        if pos >= len(src):
            raise ParseFailure(opened, f"unterminated {what}")
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
                raise ParseFailure(pos, f"escape '\\{e}' needs {size} hex digits, found {digits[:n_hex]!r}")
            return int(digits, 16), pos + 2 + size
        if e in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[e], pos + 2
        if not e:
            raise ParseFailure(opened, f"unterminated {what}")
        raise ParseFailure(pos, f"unknown escape '\\{e}' "
                                "(known: \\n \\t \\r \\\\ \\\" \\[ \\] \\- \\xHH \\uHHHH \\UHHHHHHHH)")

    def token(self, pos: int) -> tuple[int, int]:
        """A token reference <[id]> or <text> at pos (the '<'): (token id or -1, next pos)."""
        src = self.src
        if self.at(pos) != "<":
            raise ParseFailure(pos, "expected '<' after '!' (a negated token reference looks like !<[id]> or !<text>)")
        p = pos + 1
        if self.at(p) == "[":
            p += 1
            end = p
            while end < len(src) and src[end].isascii() and src[end].isdigit():
                end += 1
            if end == p:
                raise ParseFailure(p, "expected a token id (digits) in <[...]>")
            token_id = int(src[p:end])
            if token_id > 0xFFFFFFFF:
                raise ParseFailure(p, f"token id {token_id} is too big")
            if self.at(end) != "]":
                raise ParseFailure(end, "expected ']' to close the token id")
            if self.at(end + 1) != ">":
                raise ParseFailure(end + 1, "expected '>' after ']' in <[id]>")
            return token_id, end + 2
        end = src.find(">", p)
        if end < 0:
            raise ParseFailure(pos, "unterminated token reference: no closing '>'")
        end += 1
        if self.vocab is None:
            return -1, end
        text = src[pos:end]
        tokens = self.vocab.tokenize(text, add_special=False, parse_special=True)
        if len(tokens) != 1:
            raise ParseFailure(pos, f"token {text!r} is not a single token of the vocabulary ({len(tokens)} tokens)")
        return tokens[0], end

    def sequence(self, pos: int, name: str, rule: list[Element], nested: bool) -> int:
        src = self.src
        last_sym_start = len(rule)
        n_prev_rules = 1

        def repeat(op_pos: int, op: str, lo: int, hi: int | None) -> None:
            nonlocal n_prev_rules
            if last_sym_start == len(rule):
                raise ParseFailure(op_pos, f"'{op}' has nothing to repeat")
            prev = rule[last_sym_start:]
            total = hi if hi is not None and hi > 0 else (lo if lo > 0 else 1)
            if n_prev_rules * total > MAX_REPETITION:
                raise ParseFailure(op_pos, f"repetition '{op}' would copy {n_prev_rules * total} rules, over "
                                           f"llama.cpp's limit of {MAX_REPETITION}: reduce the repetition or the "
                                           "repeated group")
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
                    rec.append((RULE_REF, rec_id if hi is None else last_rec))
                rec.extend(((ALT, 0), (END, 0)))
                self.add_rule(rec_id, rec, name, op_pos)
                last_rec = rec_id
            if n_opt > 0:
                rule.append((RULE_REF, last_rec))
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
                    rule.append((CHAR, value))
                pos = self.space(pos + 1, nested)
            elif c == "[":
                opened = pos
                pos += 1
                start_type = CHAR
                if self.at(pos) == "^":
                    pos += 1
                    start_type = CHAR_NOT
                last_sym_start = len(rule)
                n_prev_rules = 1
                what = "character class (no closing ']')"
                while self.at(pos) != "]":
                    low_start = pos
                    value, pos = self.char(pos, opened, what)
                    rule.append((CHAR_ALT if last_sym_start < len(rule) else start_type, value))
                    if self.at(pos) == "-" and self.at(pos + 1) != "]":
                        if pos + 1 >= len(src):
                            raise ParseFailure(opened, f"unterminated {what}")
                        upper, after = self.char(pos + 1, opened, what)
                        if upper < value:
                            self.warnings.append((low_start, f"empty range {src[low_start:after]!r} matches nothing"))
                        pos = after
                        rule.append((CHAR_RNG_UPPER, upper))
                pos = self.space(pos + 1, nested)
            elif c == "<" or c == "!":
                kind = TOKEN
                if c == "!":
                    kind = TOKEN_NOT
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
                rule.append((RULE_REF, ref))
            elif c == "(":
                opened = pos
                pos = self.space(pos + 1, True)
                n_before = len(self.symbol_ids)
                sub_id = self.generated(name)
                pos = self.alternates(pos, name, sub_id, True, opened)
                n_prev_rules = max(1, len(self.symbol_ids) - n_before)
                last_sym_start = len(rule)
                rule.append((RULE_REF, sub_id))
                if self.at(pos) != ")":
                    found = self.at(pos)
                    if not found:
                        raise ParseFailure(opened, "unclosed '(': no matching ')'")
                    raise ParseFailure(pos, f"expected ')' to close the group opened at "
                                            f"{line_col_text(src, opened)}, found {_show(found)}")
                pos = self.space(pos + 1, nested)
            elif c == ".":
                last_sym_start = len(rule)
                n_prev_rules = 1
                rule.append((CHAR_ANY, 0))
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
                            raise ParseFailure(op_pos, f"repetition maximum {hi} does not fit in 64 bits")
                        pos = self.space(pos, nested)
                    if self.at(pos) != "}":
                        raise ParseFailure(pos, f"expected '}}' to close the repetition, found {_show(self.at(pos))}")
                    close = pos
                    pos = self.space(pos + 1, nested)
                else:
                    raise ParseFailure(pos, f"expected ',' or '}}' in the repetition, found {_show(self.at(pos))}")
                op = src[op_pos:close + 1]
                if lo > MAX_REPETITION:
                    raise ParseFailure(op_pos, f"repetition minimum {lo} exceeds llama.cpp's limit of {MAX_REPETITION}")
                if hi is not None and hi > MAX_REPETITION:
                    hi = None
                if hi is not None and hi < lo:
                    raise ParseFailure(op_pos, f"bad repetition bounds {op}: maximum {hi} is less than minimum {lo}")
                repeat(op_pos, op, lo, hi)
            else:
                break
        return pos

    def integer(self, pos: int, what: str) -> tuple[str, int]:
        end = pos
        while end < len(self.src) and self.src[end].isascii() and self.src[end].isdigit():
            end += 1
        if end == pos:
            raise ParseFailure(pos, f"expected an integer for {what}, found {_show(self.at(pos))}")
        return self.src[pos:end], end


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

