"""A pure-Python recognizer (Earley) for checking text against a parsed grammar without a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .elements import (
    CHAR, CHAR_ALT, CHAR_ANY, CHAR_NOT, CHAR_RNG_UPPER, RULE_REF, TOKEN, TOKEN_NOT, Element, nullable_rules,
)

# A compiled symbol: ("r", rule id), ("c", ranges, negated), ("any",), or ("t",) for a token.
Symbol = tuple[Any, ...]


@dataclass(frozen=True)
class Compiled:
    """A grammar's rules as alternatives of symbol sequences, and which rules match empty."""

    alts: dict[int, tuple[tuple[Symbol, ...], ...]]
    nullable: dict[int, bool]


def compile_rules(rules: dict[int, list[Element]]) -> Compiled:
    """llama.cpp's rule arrays as the recognizer reads them."""
    alts: dict[int, tuple[tuple[Symbol, ...], ...]] = {}
    for rule_id, rule in rules.items():
        out: list[tuple[Symbol, ...]] = []
        seq: list[Symbol] = []
        i = 0
        while i < len(rule):
            kind, value = rule[i]
            i += 1
            if kind in (CHAR, CHAR_NOT):
                ranges = [(value, value)]
                while i < len(rule) and rule[i][0] in (CHAR_ALT, CHAR_RNG_UPPER):
                    if rule[i][0] == CHAR_ALT:
                        ranges.append((rule[i][1], rule[i][1]))
                    else:
                        ranges[-1] = (ranges[-1][0], rule[i][1])
                    i += 1
                seq.append(("c", tuple(ranges), kind == CHAR_NOT))
            elif kind == CHAR_ANY:
                seq.append(("any",))
            elif kind == RULE_REF:
                seq.append(("r", value))
            elif kind in (TOKEN, TOKEN_NOT):
                seq.append(("t",))
            else:
                out.append(tuple(seq))
                seq = []
        alts[rule_id] = tuple(out)
    return Compiled(alts, nullable_rules(rules))


def _char_ok(sym: Symbol, cp: int) -> bool:
    if sym[0] == "any":
        return True
    if sym[0] != "c":
        return False
    found = any(lo <= cp <= hi for lo, hi in sym[1])
    return found != bool(sym[2])


def recognizes(compiled: Compiled, root: int, text: str, *, prefix: bool = False) -> bool:
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
