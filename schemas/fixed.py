"""Exact fixed-point arithmetic: the one rounding rule, and decimal text in and out.

State holds integers only: quantities and prices at scale 8 (``12.5`` is ``1_250_000_000``), products
of the two at scale 16. The only rounding anywhere is :func:`div_half_even`; rendering and parsing are
exact and never go through a float.
"""

from __future__ import annotations

from typing import Final

SCALE: Final = 8
PRODUCT_SCALE: Final = 16
ONE: Final = 10**SCALE


def div_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to the nearest integer, ties to even; any signs.

    Exact for integers of any size (no float is involved). Raises ZeroDivisionError on a zero
    denominator.
    """
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    quotient, remainder = divmod(numerator, denominator)
    twice = remainder << 1
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient


def format_fixed(value: int, scale: int) -> str:
    """The exact decimal text of ``value / 10**scale``, trailing fractional zeros trimmed.

    ``format_fixed(1_100_000_000_000_000_000, 16) == "110"``, ``format_fixed(1_250_000_000, 8) ==
    "12.5"``, ``format_fixed(-5, 8) == "-0.00000005"``. Never lossy: :func:`parse_fixed` inverts it.
    """
    sign = "-" if value < 0 else ""
    digits = str(-value if value < 0 else value)
    if scale <= 0:
        return sign + digits + "0" * -scale
    digits = digits.rjust(scale + 1, "0")
    whole, fraction = digits[:-scale], digits[-scale:].rstrip("0")
    return f"{sign}{whole}.{fraction}" if fraction else sign + whole


def parse_fixed(text: str, scale: int) -> int:
    """The integer ``text × 10**scale`` for a plain decimal like ``"-12.50"``; exact or ValueError.

    Refuses more fractional digits than ``scale`` (rather than rounding them away), exponents,
    and anything that is not an optionally signed decimal number.
    """
    body = text.strip()
    negative = body.startswith("-")
    if body[:1] in "+-" and body:
        body = body[1:]
    whole, dot, fraction = body.partition(".")
    if (
        not (whole or fraction)
        or (whole and not (whole.isascii() and whole.isdigit()))
        or (fraction and not (fraction.isascii() and fraction.isdigit()))
        or (dot and not fraction and not whole)
    ):
        raise ValueError(f"not a decimal number: {text!r}")
    if len(fraction) > scale:
        raise ValueError(f"{text!r} has more than {scale} decimal places")
    value = int((whole or "0") + fraction.ljust(scale, "0"))
    return -value if negative else value
