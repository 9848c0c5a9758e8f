"""llama.cpp's representation of a parsed grammar: each rule an array of (kind, value) elements."""

from __future__ import annotations

# llama.cpp's MAX_REPETITION_THRESHOLD: larger minimums are errors, larger maximums mean "no
# maximum", and a repetition may not multiply the rules it copies beyond it.
MAX_REPETITION = 2000

# Element kinds, as llama.cpp's llama_gretype.
END, ALT, RULE_REF, CHAR, CHAR_NOT, CHAR_RNG_UPPER, CHAR_ALT, CHAR_ANY, TOKEN, TOKEN_NOT = range(10)

Element = tuple[int, int]


def nullable_rules(rules: dict[int, list[Element]]) -> dict[int, bool]:
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
                if kind in (ALT, END):
                    if ok:
                        nullable[rule_id] = changed = True
                        break
                    ok = True
                elif kind == RULE_REF:
                    ok = ok and nullable.get(value, False)
                elif kind not in (CHAR_ALT, CHAR_RNG_UPPER):
                    ok = False
    return nullable
