"""The members of an object between its braces: the declared properties in the schema's order
(each optional one skippable), then any extra members, with the number of members written held
within minProperties..maxProperties."""

from __future__ import annotations

import re
from collections.abc import Callable

from ._gbnf_text import alt, repeat, seq

SEP = 'ws "," ws'
# Each (position, members so far) state of a counted list is a rule, so a list has about
# (properties x span of counts) of them: past this many the grammar is refused as too large.
STATE_LIMIT = 4000


def _is_name(expr: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9-]+", expr) is not None


class MemberList:
    """The member list of one object. `pairs`: (key-value expression, required) in the order
    they are written; `extra`: the expression of one extra member, or None where there are
    none; lo..hi: how many members (declared and extra) the list holds (hi None: no maximum).

    A state (i, c) is "c members written before position i" (at least one, so each member to
    come is preceded by a separator); position len(pairs) is where extra members follow.
    Without a maximum, counts of lo and more act alike and are one state (c = lo), so without
    bounds there is one state per position, and a skippable member is written `( ... )?`."""

    def __init__(self, pairs: list[tuple[str, bool]], extra: str | None, lo: int = 0, hi: int | None = None) -> None:
        self.pairs = pairs
        self.extra = extra
        self.lo = lo
        self.hi = hi
        self.counted = lo > 0 or hi is not None
        self.required_from = [0] * (len(pairs) + 1)
        for i in range(len(pairs) - 1, -1, -1):
            self.required_from[i] = self.required_from[i + 1] + pairs[i][1]

    def key(self, c: int) -> int:
        return c if self.hi is not None else min(c, self.lo)

    def states(self, i: int) -> range:
        """The states at position i that some list reaches and can still end in from: c counts
        every required member before i and at most all members before i (at the end, the first
        member may be an extra one); the required members to come must fit under hi, and lo
        must be reachable with what may come."""
        least = max(1, self.required_from[0] - self.required_from[i])
        most = max(i, 1)
        if self.hi is not None:
            most = min(most, self.hi - self.required_from[i])
        if self.extra is None:
            least = max(least, self.lo - (len(self.pairs) - i))
        if least > most:
            return range(0)
        return range(self.key(least), self.key(most) + 1)

    def state_count(self) -> int:
        return sum(len(self.states(i)) for i in range(1, len(self.pairs) + 1))

    def extras(self, c: int) -> str:
        """The extra members after c members were written."""
        if self.extra is None:
            return ""
        return repeat(seq(SEP, self.extra), max(self.lo - c, 0), None if self.hi is None else self.hi - c)

    def build(self, hint: str, rule: Callable[[str, str], str]) -> tuple[str | None, bool]:
        """(the expression of a non-empty list, or None where only the empty one is valid;
        whether the list may be empty). `rule(hint, body)` names a new rule."""
        n = len(self.pairs)
        tails: dict[tuple[int, int], str] = {}
        optional = sum(1 for _, req in self.pairs if not req)
        for c in self.states(n):
            tails[n, c] = self.named(self.extras(c), f"{hint}-after-{n}-{c}", rule)
        for i in range(n - 1, 0, -1):
            pair, req = self.pairs[i]
            part = seq(SEP, pair)
            for c in self.states(i):
                take = tails.get((i + 1, self.key(c + 1)))
                skip = None if req else tails.get((i + 1, c))
                ways = [] if take is None else [seq(part, take)]
                ways += [] if skip is None else [skip]
                expr = seq(repeat(part, 0, 1), take) if take is not None and take == skip else alt(ways)
                if self.counted:
                    expr = self.named(expr, f"{hint}-after-{i}-{c}", rule)
                elif optional > 1 and not req and take:
                    expr = rule(f"{hint}-after-{i}", expr)
                tails[i, c] = expr
        options = []
        for i, (pair, req) in enumerate(self.pairs):
            tail = tails.get((i + 1, self.key(1)))
            if tail is not None:
                options.append(seq(pair, tail))
            if req:
                return (alt(options) if options else None), False
        if self.extra is not None and (n, self.key(1)) in tails:
            options.append(seq(self.extra, tails[n, self.key(1)]))
        return (alt(options) if options else None), self.lo == 0

    def named(self, expr: str, hint: str, rule: Callable[[str, str], str]) -> str:
        """A counted state, mostly reached from two states before it, as a rule unless trivial."""
        return rule(hint, expr) if self.counted and expr and not _is_name(expr) else expr
