"""Read-side helpers: exact decimal text, derived figures, JSON renderings."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projector.model import Anomaly, ConfigEntry, Order, Position, Risk
from projector.views import (
    average_cost,
    average_fill_price,
    leaves_quantity,
    limit_usage_percent,
    to_dict,
    unrealized_pnl,
)
from schemas.fixed import format_fixed, parse_fixed


@pytest.mark.parametrize(
    ("value", "scale", "text"),
    [
        (1_100_000_000_000_000_000, 16, "110"),
        (1_250_000_000, 8, "12.5"),
        (-5, 8, "-0.00000005"),
        (0, 8, "0"),
        (-1_000_000_000, 8, "-10"),
        (123, 0, "123"),
        (10**30 + 1, 16, "100000000000000.0000000000000001"),
    ],
)
def test_format_fixed_is_exact_and_trimmed(value: int, scale: int, text: str) -> None:
    assert format_fixed(value, scale) == text
    assert parse_fixed(text, scale) == value


@given(st.integers(-(10**40), 10**40), st.integers(0, 20))
def test_format_and_parse_are_inverse(value: int, scale: int) -> None:
    assert parse_fixed(format_fixed(value, scale), scale) == value


@pytest.mark.parametrize("text", ["", "-", ".", "1e5", "1.123456789", "nan", "1,5", "--1", " "])
def test_parse_fixed_refuses_what_is_not_an_exact_decimal(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fixed(text, 8)


def _order(filled: int, notional: int, status: str = "PARTIALLY_FILLED") -> Order:
    return Order(
        "o",
        "A",
        "S",
        "BUY",
        "LIMIT",
        "DAY",
        10**9,
        10 * 10**8,
        filled,
        notional,
        status,
        "c",
        3,
        9,
        10**9,
        10**9,
    )


def test_order_figures() -> None:
    order = _order(3 * 10**8, 29 * 10**16)
    assert leaves_quantity(order) == 7 * 10**8
    assert average_fill_price(order) == 966666667  # 9.666666666… rounded half-even at scale 8
    assert average_fill_price(_order(0, 0, "NEW")) is None
    assert leaves_quantity(_order(3 * 10**8, 29 * 10**16, "CANCELED")) == 0


def test_position_figures_long_and_short() -> None:
    long = Position("A", "S", 50 * 10**8, 550 * 10**16, 300 * 10**16, 10**8, 13 * 10**8)
    assert average_cost(long) == 11 * 10**8
    assert unrealized_pnl(long) == 100 * 10**16
    short = Position("A", "S", -50 * 10**8, -550 * 10**16, 0, 0, 13 * 10**8)
    assert average_cost(short) == 11 * 10**8
    assert unrealized_pnl(short) == -100 * 10**16
    assert average_cost(Position("A", "S", 0, 0, 0, 0, 1)) is None


def test_limit_usage() -> None:
    assert limit_usage_percent(650 * 10**16, 1000 * 10**8) == "65"
    assert limit_usage_percent(1 * 10**16, 3 * 10**8) == "33.33"
    assert limit_usage_percent(1, 0) is None


def test_json_renderings_carry_exact_strings_never_floats() -> None:
    order = to_dict(_order(3 * 10**8, 29 * 10**16))
    assert order["filled"] == "3" and order["average_fill_price"] == "9.66666667"
    assert order["leaves"] == "7" and order["event_count"] == 3
    position = to_dict(Position("A", "S", 50 * 10**8, 550 * 10**16, 300 * 10**16, 10**8, 13 * 10**8))
    assert position["average_cost"] == "11" and position["realized_pnl"] == "300"
    risk = to_dict(Risk("A", 650 * 10**16, -650 * 10**16, 3, 0, 5))
    assert risk["net_exposure"] == "-650" and risk["realized_pnl"] == "0.0000000000000003"
    decimal = to_dict(ConfigEntry("k", "DECIMAL", 5 * 10**7, 1, "me", 0, 0))
    assert decimal["value"] == "0.5"
    flag = to_dict(ConfigEntry("k", "BOOLEAN", True, 1, "me", 0, 0))
    assert flag["value"] is True
    anomaly = to_dict(Anomaly(0, 1, "id", "Fill", "DUPLICATE_FILL", "again"))
    assert anomaly["benign"] is True
    for row in (order, position, risk, decimal, flag, anomaly):
        assert "." not in json.dumps([v for v in row.values() if not isinstance(v, str)])
