"""Human decimals in, scale-8 integers out: ``"12.50"`` -> ``1_250_000_000``, exactly.

Producers accept prices and quantities as people write them (the CLI, an operator's script) and put
fixed-point integers on the wire (``docs/events.md``). The conversion goes through :class:`Decimal`
only, never a float, and refuses what it cannot represent exactly: more than 8 fractional digits is an
error, not a rounding.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from schemas.fixed import SCALE, format_fixed, parse_fixed

INT64_MAX: Final = 2**63 - 1
INT64_MIN: Final = -(2**63)

FixedInput = int | Decimal | str


def parse_decimal(text: str | Decimal, *, field: str) -> int:
    """The scale-8 integer for a decimal given as text or :class:`Decimal`.

    Accepts an optional sign, digits, an optional fractional part and ``_`` separators
    (``"-1_000.5"``). Raises ``ValueError`` naming ``field`` for anything else, for more than 8
    fractional digits, and for values outside the signed 64-bit range of an Avro ``long``.
    The exact parsing itself is :func:`schemas.fixed.parse_fixed`, shared with the read side.
    """
    shown = str(text)
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise ValueError(f"{field} must be a finite decimal number, got {shown!r}")
        cleaned = format(text, "f")
    else:
        cleaned = text.strip().replace("_", "")
    whole, dot, fraction = cleaned.partition(".")
    if len(fraction) > SCALE and fraction[SCALE:].strip("0") == "":
        cleaned = whole + dot + fraction[:SCALE]  # trailing zeros past the scale are exact, not rounding
    try:
        value = parse_fixed(cleaned, SCALE)
    except ValueError:
        if (
            "." in cleaned
            and len(cleaned.partition(".")[2]) > SCALE
            and cleaned.replace(".", "", 1).lstrip("+-").isdigit()
        ):
            raise ValueError(f"{field} has more than {SCALE} decimal places: {shown!r}") from None
        raise ValueError(f"{field} must be a decimal number like 12.50, got {shown!r}") from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{field} is out of range for a scale-{SCALE} 64-bit integer: {shown!r}")
    return value


def to_fixed(value: object, *, field: str) -> int:
    """A fixed-point argument as a scale-8 integer.

    An ``int`` is taken as already scaled (``1_250_000_000`` is 12.5); a ``str`` or ``Decimal`` is a
    human decimal and goes through :func:`parse_decimal`. ``bool`` and ``float`` are refused: a float
    cannot hold most prices exactly, and ``True`` is not a quantity.
    """
    if isinstance(value, bool | float):
        raise ValueError(
            f"{field} must be a scale-{SCALE} integer or a decimal string, got {type(value).__name__} "
            f"{value!r} (floats are never accepted for money)"
        )
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{field} is out of range for a 64-bit integer, got {value}")
        return value
    if isinstance(value, str | Decimal):
        return parse_decimal(value, field=field)
    raise ValueError(
        f"{field} must be a scale-{SCALE} integer or a decimal string, got {type(value).__name__}"
    )


def format_decimal(value: int) -> str:
    """The exact human text of a scale-8 integer, trailing zeros trimmed: ``1_250_000_000`` -> ``12.5``."""
    return format_fixed(value, SCALE)
