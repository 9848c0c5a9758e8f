"""Number and integer ranges as GBNF: the digit strings between two bounds, exactly."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Union

from ._gbnf_text import alt, group, repeat, seq

INT_DIGITS = 18
_SIG_DIGITS = 15  # a decimal with at most 15 significant digits survives a trip through a double
_DIGIT = "[0-9]"


def _digit_class(lo: int, hi: int) -> str:
    if lo == hi:
        return f'"{lo}"'
    if lo == 0 and hi == 9:
        return _DIGIT
    return f"[{lo}-{hi}]"


def _same_length_range(lo: str, hi: str) -> str:
    """Digit strings of len(lo) == len(hi) between lo and hi (leading zeros allowed)."""
    n = len(lo)
    if lo == hi:
        return f'"{lo}"'
    if n == 1:
        return _digit_class(int(lo), int(hi))
    if lo[0] == hi[0]:
        return seq(f'"{lo[0]}"', _same_length_range(lo[1:], hi[1:]))
    a, b = int(lo[0]), int(hi[0])
    lo_full = lo[1:] == "0" * (n - 1)
    hi_full = hi[1:] == "9" * (n - 1)
    options = []
    if not lo_full:
        options.append(seq(f'"{a}"', group(_same_length_range(lo[1:], "9" * (n - 1)))))
    first, last = (a if lo_full else a + 1), (b if hi_full else b - 1)
    if first <= last:
        options.append(seq(_digit_class(first, last), repeat(_DIGIT, n - 1, n - 1)))
    if not hi_full:
        options.append(seq(f'"{b}"', group(_same_length_range("0" * (n - 1), hi[1:]))))
    return alt(options)


def _natural_range(lo: int, hi: int | None, max_digits: int) -> str | None:
    """Canonical decimal naturals (no leading zeros) in [lo, hi]; hi None: up to max_digits
    digits. None when the range is empty."""
    lo = max(lo, 0)
    if hi is not None and hi < lo:
        return None
    options = []
    top_len = len(str(hi)) if hi is not None else max(max_digits, len(str(lo)))
    for length in range(len(str(lo)), top_len + 1):
        start = max(lo, 10 ** (length - 1) if length > 1 else 0)
        end = min(hi, 10 ** length - 1) if hi is not None else 10 ** length - 1
        if start > end:
            continue
        if hi is None and start == 10 ** (length - 1) and length > 1:
            # Every longer length is complete too: one rule for all of them.
            options.append(seq("[1-9]", repeat(_DIGIT, length - 1, top_len - 1)))
            break
        options.append(_same_length_range(str(start), str(end)))
    return alt(options) if options else None


Bound = tuple[Decimal, bool]  # (value, exclusive)
_FracBound = Union[tuple[str, bool], None]  # (fraction digits, exclusive); None: no constraint


def _fraction(lo: _FracBound, hi: _FracBound, k: int, memo: dict[tuple[Any, ...], tuple[str | None, bool]]
              ) -> tuple[str | None, bool]:
    """Fraction digit strings F of length <= k with 0.F within the bounds (0.lo <= 0.F <= 0.hi,
    strictly where exclusive): (GBNF for the non-empty ones or None, whether empty F is)."""
    if lo is not None and lo[0] == "" and not lo[1]:
        lo = None
    key = (lo, hi, k)
    if key in memo:
        return memo[key]
    if k > 0 and hi is None and lo == ("", True):
        # Some digit not zero: those ending in one will do.
        memo[key] = (seq(repeat(_DIGIT, 0, k - 1), "[1-9]"), False)
        return memo[key]
    if k > 0 and lo is None and hi == ("", False):
        memo[key] = (repeat('"0"', 1, k), True)  # only zeros
        return memo[key]
    if lo is None and hi is None:
        memo[key] = (repeat(_DIGIT, 1, k) if k > 0 else None, True)
        return memo[key]
    empty_ok = (lo is None) and (hi is None or hi[0] != "" or not hi[1])
    if hi is not None and hi[0] == "" and hi[1]:
        memo[key] = (None, False)  # 0.F < 0: impossible
        return memo[key]
    options: list[str] = []
    if k > 0:
        groups: dict[tuple[Any, Any], list[int]] = {}
        for d in range(10):
            if lo is None:
                new_lo: Any = None
            else:
                l0 = int(lo[0][0]) if lo[0] else 0
                if d < l0:
                    continue
                new_lo = None if d > l0 else (lo[0][1:], lo[1])
            if hi is None:
                new_hi: Any = None
            else:
                h0 = int(hi[0][0]) if hi[0] else 0
                if d > h0:
                    continue
                new_hi = None if d < h0 else (hi[0][1:], hi[1])
            groups.setdefault((new_lo, new_hi), []).append(d)
        for (new_lo, new_hi), digits in groups.items():
            spans: list[list[int]] = []
            for d in digits:
                if spans and spans[-1][1] == d - 1:
                    spans[-1][1] = d
                else:
                    spans.append([d, d])
            head = alt(_digit_class(a, b) for a, b in spans)
            rest, rest_empty = ((repeat(_DIGIT, 1, k - 1) if k > 1 else None), True) \
                if new_lo is None and new_hi is None else _fraction(new_lo, new_hi, k - 1, memo)
            if rest is None and not rest_empty:
                continue
            if rest is None:
                options.append(head)
            elif rest_empty:
                options.append(seq(head, repeat(rest, 0, 1)))
            else:
                options.append(seq(head, group(rest)))
    memo[key] = (alt(options) if options else None, empty_ok)
    return memo[key]


def _split(value: Decimal) -> tuple[int, str]:
    """A non-negative decimal as (integer part, fraction digits without trailing zeros)."""
    integer = int(value)
    text = format(value - integer, "f")
    frac = text.split(".")[1].rstrip("0") if "." in text else ""
    return integer, frac


def _magnitude(lo: Bound, hi: Bound | None, int_digits: int, frac_digits: int) -> str | None:
    """Non-negative decimals `I(.F)?` (no exponent) between lo and hi; None if there are none."""
    memo: dict[tuple[Any, ...], tuple[str | None, bool]] = {}
    li, lf = _split(lo[0])
    options = []

    def with_fraction(integer: str | None, flo: _FracBound, fhi: _FracBound) -> None:
        if integer is None:
            return
        frac, empty_ok = _fraction(flo, fhi, frac_digits, memo)
        if frac is None:
            if empty_ok:
                options.append(integer)
            return
        dot = seq('"."', group(frac))
        options.append(seq(integer, repeat(dot, 0, 1) if empty_ok else group(dot)))

    if hi is not None:
        hi_i, hf = _split(hi[0])
        if li == hi_i:
            with_fraction(_natural_range(li, li, int_digits), (lf, lo[1]), (hf, hi[1]))
            return alt(options) if options else None
        with_fraction(_natural_range(li, li, int_digits), (lf, lo[1]), None)
        with_fraction(_natural_range(li + 1, hi_i - 1, int_digits), None, None)
        with_fraction(_natural_range(hi_i, hi_i, int_digits), None, (hf, hi[1]))
    else:
        with_fraction(_natural_range(li, li, int_digits), (lf, lo[1]), None)
        with_fraction(_natural_range(li + 1, None, int_digits), None, None)
    return alt(options) if options else None


def _significant(value: Decimal) -> tuple[int, int]:
    integer, frac = _split(abs(value))
    return len(str(integer)), len(frac)


def number_range(lo: Bound | None, hi: Bound | None) -> str | None:
    """JSON numbers (no exponent) x with lo <= x <= hi (strict where exclusive); None if none."""
    if lo is not None and hi is not None and (lo[0] > hi[0] or (lo[0] == hi[0] and (lo[1] or hi[1]))):
        return None
    int_digits, frac_need = 1, 0
    for bound in (lo, hi):
        if bound is not None:
            a, b = _significant(bound[0])
            int_digits, frac_need = max(int_digits, a), max(frac_need, b)
    if lo is None or hi is None:
        int_digits = max(int_digits, 9)
    frac_digits = max(_SIG_DIGITS - int_digits, frac_need + 1, 1)
    options = []
    # x >= 0
    if hi is None or hi[0] > 0 or (hi[0] == 0 and not hi[1]):
        pos_lo: Bound = (Decimal(0), False) if lo is None or lo[0] < 0 else lo
        expr = _magnitude(pos_lo, hi, int_digits, frac_digits)
        if expr:
            options.append(expr)
    # x < 0, written as "-" and its magnitude m > 0 (so never "-0")
    if lo is None or lo[0] < 0:
        m_lo: Bound = (Decimal(0), True)
        if hi is not None and hi[0] < 0:
            m_lo = (-hi[0], hi[1])
        m_hi = None if lo is None else (-lo[0], lo[1])
        expr = _magnitude(m_lo, m_hi, int_digits, frac_digits)
        if expr:
            options.append(seq('"-"', group(expr)))
    return alt(options) if options else None


def integer_range(lo: Bound | None, hi: Bound | None) -> str | None:
    ilo = None if lo is None else (math.floor(lo[0]) + 1 if lo[1] else math.ceil(lo[0]))
    ihi = None if hi is None else (math.ceil(hi[0]) - 1 if hi[1] else math.floor(hi[0]))
    if ilo is not None and ihi is not None and ilo > ihi:
        return None
    digits = max(INT_DIGITS, *(len(str(abs(b))) for b in (ilo, ihi) if b is not None))
    options = []
    if ihi is None or ihi >= 0:
        expr = _natural_range(0 if ilo is None else max(ilo, 0), ihi, digits)
        if expr:
            options.append(expr)
    if ilo is None or ilo < 0:
        expr = _natural_range(1 if ihi is None else max(-ihi, 1), None if ilo is None else -ilo, digits)
        if expr:
            options.append(seq('"-"', group(expr)))
    return alt(options) if options else None
