"""Numbers as the report shows them: one home for the formatting of every table and glued number.

A reader takes in ``5,310`` and ``0.0417`` at a glance, and stumbles on ``5.31e+03`` and ``4.17e-05``:
three significant figures, thousands separators, never an exponent. A column (or row) of values
that are all tiny or all huge is shown on a scale written once, in its header (``KL weighted
(× 10⁻⁶)``: 25.6 is 2.56e-05), so its cells stay short. A small value is never rounded to 0.00
(three significant figures keep it); an exact zero reads ``0``.

Where a value lies between 1e-4 and 1000, ``sig`` writes what ``f"{value:.3g}"`` writes (the same
digits, trailing zeros dropped), so the records' own texts and the report's agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import pandas as pd

DIGITS = 3
NOT_A_NUMBER = "—"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
# A group of values is put on a scale when its largest is at least this (10,000 and up: "× 10³") ...
HUGE = 1e4
# ... or below this (0.00099 and down: "× 10⁻⁶"); between them the digits read well as they are.
TINY = 1e-3


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def sig(value: Any, digits: int = DIGITS, scale: int = 0) -> str:
    """``value`` / 10**scale to ``digits`` significant figures, without an exponent: 5312.4 ->
    ``5,310``; 0.00004172 -> ``0.0000417`` (or ``41.7`` on the scale -6); 0.5 -> ``0.5``; an
    integer whole, with separators (``22,000``); None or NaN -> ``—``. Not a number: as it is."""
    if value is None:
        return NOT_A_NUMBER
    if not _is_number(value):
        return str(value)
    if isinstance(value, Integral) and scale == 0:
        return f"{value:,}"
    x = float(value) / 10**scale
    if math.isnan(x):
        return NOT_A_NUMBER
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x == 0:
        return "0"
    exponent = math.floor(math.log10(abs(x)))
    rounded = round(x, digits - 1 - exponent)
    if rounded != 0 and math.floor(math.log10(abs(rounded))) != exponent:  # 999.7 -> 1,000
        exponent += 1
    decimals = max(0, digits - 1 - exponent)
    text = f"{rounded:,.{decimals}f}"
    if decimals:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def scale_for(values: Iterable[Any]) -> int:
    """The power of ten (a multiple of 3) that a group of values is best shown on: 0 unless the
    largest finite magnitude is at least ``HUGE`` (3 for 10,000-999,999) or non-zero and below
    ``TINY`` (-6 for 2.56e-05)."""
    magnitudes = [abs(float(v)) for v in values if _is_number(v) and math.isfinite(float(v)) and v != 0]
    if not magnitudes:
        return 0
    largest = max(magnitudes)
    if TINY <= largest < HUGE:
        return 0
    return 3 * math.floor(math.log10(largest) / 3)


def scale_text(scale: int) -> str:
    """``× 10³``, ``× 10⁻⁶``; "" for no scale."""
    return f"× 10{str(scale).translate(_SUPERSCRIPT)}" if scale else ""


def scaled_name(name: str, scale: int) -> str:
    """A header with its scale: ``FLD (× 10³)``; the name alone without one."""
    return f"{name} ({scale_text(scale)})" if scale else name


def interval(estimate: Any, low: Any, high: Any, scale: int = 0) -> str:
    """``0.0574 [-0.241 to 0.473]``: an estimate and its interval ("to", not a comma: the numbers
    have thousands separators)."""
    if low is None or high is None:
        return sig(estimate, scale=scale)
    return f"{sig(estimate, scale=scale)} [{sig(low, scale=scale)} to {sig(high, scale=scale)}]"


def ratio(value: Any) -> str:
    """``2.97 x``: a ratio, as the report writes them."""
    return f"{sig(value)} x"


def percent(share: Any, digits: int = DIGITS) -> str:
    """A share in [0, 1] as ``41.7 %``; ``0 %`` for none, ``0.0417 %`` for a tiny one."""
    return NOT_A_NUMBER if share is None else f"{sig(100 * float(share), digits)} %"


def with_separators(text: str) -> str:
    """Plain integers of 4 digits and more in a sentence with thousands separators (``(< 5000)`` ->
    ``(< 5,000)``); numbers with a decimal point or inside words (hashes, names) are left alone."""
    return re.sub(r"(?<![\w.,])(\d{4,})(?![\w.,]\d|\w)", lambda m: f"{int(m[1]):,}", text)


def table(frame: pd.DataFrame, by: str = "column", digits: int = DIGITS) -> pd.DataFrame:
    """The frame with every number written by ``sig``, a scale per column (``by="column"``) or per
    row (``by="row"``, for tables whose rows are measures) in that column's or row's name where its
    values are tiny or huge. Cells that are not numbers are kept as they are (NaN: ``—``)."""
    shown = frame.astype(object).copy()
    if by == "row":
        return table(frame.T, "column", digits).T
    names = []
    for position, name in enumerate(frame.columns):
        column = frame.iloc[:, position]
        numeric = [v for v in column if _is_number(v) and not _missing(v)]
        counts = all(isinstance(v, Integral) for v in numeric)  # counts stay whole: 22,000 layouts
        scale = scale_for(numeric) if numeric and not counts and len(numeric) == len(column.dropna()) else 0
        shown.iloc[:, position] = [
            NOT_A_NUMBER if _missing(v) else sig(v, digits, scale) if _is_number(v) else v for v in column
        ]
        names.append(_renamed(name, scale))
    shown.columns = (
        pd.MultiIndex.from_tuples(names, names=frame.columns.names)
        if isinstance(frame.columns, pd.MultiIndex)
        else pd.Index(names, name=frame.columns.name)
    )
    return shown


def _missing(value: Any) -> bool:
    return value is None or (_is_number(value) and math.isnan(float(value)))


def _renamed(name: Any, scale: int) -> Any:
    if not scale:
        return name
    if isinstance(name, tuple):  # a MultiIndex column: the scale on its last level
        return (*name[:-1], scaled_name(str(name[-1]), scale))
    return scaled_name(str(name), scale)
