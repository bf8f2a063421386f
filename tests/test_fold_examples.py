"""Hand-computed examples of the fold: position arithmetic, every order transition, every anomaly kind."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from projector.digest import state_digest
from projector.fold import EventContractError, InvariantError, apply_config, apply_event
from projector.model import AnomalyKind, Position, Risk
from projector.state import MemoryConfigState, MemoryState
from projector.views import average_cost, average_fill_price, leaves_quantity, unrealized_pnl
from schemas.fixed import div_half_even, format_fixed, parse_fixed
from tests.fold_events import (
    accepted,
    adjusted,
    apply_all,
    apply_all_config,
    balance,
    canceled,
    config,
    expired,
    fill,
    rejected,
    replaced,
    submitted,
)


def p8(text: str) -> int:
    return parse_fixed(text, 8)


def p16(text: str) -> int:
    return parse_fixed(text, 16)


def fold(events: list[dict[str, Any]]) -> MemoryState:
    state = MemoryState()
    results = apply_all(state, events)
    assert results == [None] * len(events), [a for a in results if a]
    return state


def snapshot(state: MemoryState) -> list[tuple[str, bytes, bytes]]:
    return list(state.records())


# Position arithmetic


def test_the_documented_example_buy_buy_sell() -> None:
    state = fold(
        [
            submitted("o1", "100", "10", tif="GTC"),
            fill("e1", "o1", "100", "10.00", fee="1"),
            submitted("o2", "100", "12"),
            fill("e2", "o2", "100", "12.00", fee="1"),
            submitted("o3", "150", "13", side="SELL"),
            fill("e3", "o3", "150", "13.00", fee="1.5"),
        ]
    )
    position = state.positions["ACC1", "AAPL"]
    assert position.quantity == p8("50")
    assert position.cost_basis == p16("550")
    assert average_cost(position) == p8("11")
    assert position.realized_pnl == p16("300")
    assert format_fixed(position.realized_pnl, 16) == "300"
    assert position.fees == p8("3.5")
    assert position.last_price == p8("13")
    assert unrealized_pnl(position) == p16("100")
    risk = state.risks["ACC1"]
    assert risk == Risk("ACC1", p16("650"), p16("650"), p16("300"), 0, p8("3.5"))


def test_a_short_position_flips_long_through_one_buy() -> None:
    state = fold(
        [
            submitted("s", "100", "20", side="SELL"),
            fill("e1", "s", "100", "20"),
            submitted("b", "150", "18"),
            fill("e2", "b", "150", "18"),
        ]
    )
    position = state.positions["ACC1", "AAPL"]
    assert (position.quantity, position.cost_basis) == (p8("50"), p16("900"))
    assert position.realized_pnl == p16("200")
    assert average_cost(position) == p8("18")
    assert state.risks["ACC1"].net_exposure == p16("900")


def test_a_long_position_flips_short_and_back_to_flat() -> None:
    state = fold(
        [
            adjusted("MSFT", "SET", "10", "100"),
            adjusted("MSFT", "DELTA", "-25", "110"),
        ]
    )
    position = state.positions["ACC1", "MSFT"]
    assert (position.quantity, position.cost_basis) == (p8("-15"), p16("-1650"))
    assert position.realized_pnl == p16("100")
    assert average_cost(position) == p8("110")
    apply_all(state, [adjusted("MSFT", "DELTA", "15", "100")])
    assert (position.quantity, position.cost_basis, position.realized_pnl) == (0, 0, p16("250"))
    assert average_cost(position) is None
    risk = state.risks["ACC1"]
    assert (risk.gross_exposure, risk.net_exposure, risk.realized_pnl) == (0, 0, p16("250"))


def test_set_replaces_the_position_and_keeps_realized_pnl() -> None:
    state = fold(
        [
            adjusted("X", "SET", "10", "5"),
            adjusted("X", "DELTA", "-4", "6"),
            adjusted("X", "SET", "-3", "7"),
        ]
    )
    position = state.positions["ACC1", "X"]
    assert (position.quantity, position.cost_basis, position.realized_pnl) == (p8("-3"), p16("-21"), p16("4"))
    assert state.risks["ACC1"].gross_exposure == p16("21")
    assert state.risks["ACC1"].net_exposure == p16("-21")


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (5, 2, 2),
        (7, 2, 4),
        (-5, 2, -2),
        (-7, 2, -4),
        (3, 2, 2),
        (-3, 2, -2),
        (1, 3, 0),
        (2, 3, 1),
        (-2, 3, -1),
    ],
)
def test_half_even_division(numerator: int, denominator: int, expected: int) -> None:
    assert div_half_even(numerator, denominator) == expected
    assert div_half_even(-numerator, -denominator) == expected


def test_reducing_rounds_the_removed_basis_half_to_even_and_keeps_the_remainder() -> None:
    # Raw units: Q=2 at B=3 (prices 1 and 2); selling 1 removes round(1.5) = 2, leaving 1.
    state = fold([adjusted("R", "DELTA", 1, 1), adjusted("R", "DELTA", 1, 2), adjusted("R", "DELTA", -1, 2)])
    position = state.positions["ACC1", "R"]
    assert (position.quantity, position.cost_basis, position.realized_pnl) == (1, 1, 0)
    # Q=2 at B=5: selling 1 removes round(2.5) = 2 (down to even), realizing 3 - 2.
    state = fold([adjusted("R", "DELTA", 1, 2), adjusted("R", "DELTA", 1, 3), adjusted("R", "DELTA", -1, 3)])
    position = state.positions["ACC1", "R"]
    assert (position.quantity, position.cost_basis, position.realized_pnl) == (1, 3, 1)
    # Short Q=-2 at B=-5: covering 1 removes round(-2.5) = -2, realizing -3 + 2.
    state = fold([adjusted("R", "DELTA", -1, 2), adjusted("R", "DELTA", -1, 3), adjusted("R", "DELTA", 1, 3)])
    position = state.positions["ACC1", "R"]
    assert (position.quantity, position.cost_basis, position.realized_pnl) == (-1, -3, -1)


def test_closing_in_pieces_removes_exactly_the_whole_basis() -> None:
    state = fold(
        [adjusted("Z", "DELTA", 3, 1), adjusted("Z", "DELTA", 3, 2)]
        + [adjusted("Z", "DELTA", -1, 5) for _ in range(6)]
    )
    position = state.positions["ACC1", "Z"]
    assert (position.quantity, position.cost_basis) == (0, 0)
    assert position.realized_pnl == 6 * 5 - 9


# Orders


def test_an_order_lives_new_accepted_partially_filled_filled() -> None:
    state = fold([submitted("o", "10", "5")])
    order = state.orders["o"]
    assert (order.status, order.event_count, order.last_offset) == ("NEW", 1, 0)
    assert state.risks["ACC1"].open_order_notional == p16("50")
    apply_all(state, [accepted("o")])
    assert order.status == "ACCEPTED"
    apply_all(state, [fill("e1", "o", "4", "5"), fill("e2", "o", "2", "4.5")])
    assert (order.status, order.filled, leaves_quantity(order)) == ("PARTIALLY_FILLED", p8("6"), p8("4"))
    assert order.filled_notional == p16("29")
    assert average_fill_price(order) == 483333333
    assert state.risks["ACC1"].open_order_notional == p16("20")
    apply_all(state, [fill("e3", "o", "4", "5")])
    assert (order.status, order.filled, leaves_quantity(order)) == ("FILLED", p8("10"), 0)
    assert (order.event_count, order.last_offset) == (5, 4)
    assert state.risks["ACC1"].open_order_notional == 0
    assert set(state.fills) == {"e1", "e2", "e3"}


def test_a_fill_may_overtake_the_ack() -> None:
    state = fold([submitted("o", "10", "5"), fill("e1", "o", "3", "5")])
    assert state.orders["o"].status == "PARTIALLY_FILLED"


@pytest.mark.parametrize("before", [[], [accepted("o")], [accepted("o"), fill("e", "o", "1", "5")]])
@pytest.mark.parametrize(("end", "status"), [(canceled, "CANCELED"), (expired, "EXPIRED")])
def test_cancel_and_expire_end_any_live_order_and_release_its_notional(
    before: list[dict[str, Any]], end: Any, status: str
) -> None:
    state = fold([submitted("o", "10", "5"), *before, end("o")])
    assert state.orders["o"].status == status
    assert state.risks["ACC1"].open_order_notional == 0


@pytest.mark.parametrize("before", [[], [accepted("o")]])
def test_reject_from_new_or_accepted(before: list[dict[str, Any]]) -> None:
    state = fold([submitted("o", "10", "5"), *before, rejected("o")])
    assert state.orders["o"].status == "REJECTED"
    assert state.risks["ACC1"].open_order_notional == 0


def test_replace_changes_price_and_quantity_and_the_open_notional() -> None:
    state = fold(
        [submitted("o", "10", "5"), accepted("o"), fill("e", "o", "4", "5"), replaced("o", "8", "6")]
    )
    order = state.orders["o"]
    assert (order.quantity, order.limit_price, order.status) == (p8("8"), p8("6"), "PARTIALLY_FILLED")
    assert (order.submitted_quantity, order.submitted_limit_price) == (p8("10"), p8("5"))
    assert state.risks["ACC1"].open_order_notional == p16("24")
    apply_all(state, [replaced("o", new_quantity="4")])
    assert (order.status, order.quantity) == ("FILLED", p8("4"))
    assert state.risks["ACC1"].open_order_notional == 0


def test_market_orders_carry_no_open_notional() -> None:
    state = fold([submitted("m", "10", None), replaced("m", new_quantity="20")])
    assert state.orders["m"].order_type == "MARKET"
    assert state.risks["ACC1"] == Risk("ACC1", 0, 0, 0, 0, 0)


def test_balances_add_up_per_currency() -> None:
    state = fold([balance("USD", "100"), balance("USD", "-30.5"), balance("EUR", "7")])
    assert state.balances["ACC1", "USD"].amount == p8("69.5")
    assert state.balances["ACC1", "EUR"].amount == p8("7")
    assert "ACC1" not in state.risks


# Anomalies: each kind, and the state stays exactly as it was


BASE = [
    submitted("o", "10", "5"),
    accepted("o"),
    fill("e1", "o", "4", "5"),
    submitted("done", "1", "5"),
    canceled("done"),
]

ANOMALIES = [
    (submitted("o", "10", "5"), AnomalyKind.DUPLICATE_ORDER),
    (submitted("o", "11", "5"), AnomalyKind.ORDER_ID_CONFLICT),
    (submitted("o", "10", "5", account="ACC2"), AnomalyKind.ORDER_ID_CONFLICT),
    (fill("e1", "o", "4", "5"), AnomalyKind.DUPLICATE_FILL),
    (fill("e1", "done", "1", "5"), AnomalyKind.EXEC_ID_CONFLICT),
    (fill("e9", "nope", "1", "5"), AnomalyKind.UNKNOWN_ORDER),
    (accepted("nope"), AnomalyKind.UNKNOWN_ORDER),
    (fill("e9", "o", "1", "5", account="ACC2"), AnomalyKind.ACCOUNT_MISMATCH),
    (canceled("o", account="ACC2"), AnomalyKind.ACCOUNT_MISMATCH),
    (fill("e9", "done", "1", "5"), AnomalyKind.TERMINAL_ORDER),
    (accepted("done"), AnomalyKind.TERMINAL_ORDER),
    (replaced("done", "2"), AnomalyKind.TERMINAL_ORDER),
    (accepted("o"), AnomalyKind.INVALID_TRANSITION),
    (rejected("o"), AnomalyKind.INVALID_TRANSITION),
    (fill("e9", "o", "6.00000001", "5"), AnomalyKind.OVERFILL),
    (replaced("o", "3.99999999"), AnomalyKind.INVALID_REPLACE),
    (fill("e9", "o", "0", "5"), AnomalyKind.INVALID_EVENT),
    (fill("e9", "o", "1", "0"), AnomalyKind.INVALID_EVENT),
    (fill("e9", "o", "1", "5", fee=-1), AnomalyKind.INVALID_EVENT),
    (fill("", "o", "1", "5"), AnomalyKind.INVALID_EVENT),
    (submitted("x", "0", "5"), AnomalyKind.INVALID_EVENT),
    (submitted("x", "1", "5", order_type="MARKET"), AnomalyKind.INVALID_EVENT),
    (submitted("x", "1", None, order_type="LIMIT"), AnomalyKind.INVALID_EVENT),
    (submitted("x", "1", "5", symbol="A\x00B"), AnomalyKind.INVALID_EVENT),
    (submitted("x" * 256, "1", "5"), AnomalyKind.INVALID_EVENT),
    (replaced("o"), AnomalyKind.INVALID_EVENT),
    (replaced("o", "0"), AnomalyKind.INVALID_EVENT),
    (replaced("o", None, "-1"), AnomalyKind.INVALID_EVENT),
    (adjusted("S", "DELTA", "0", "5"), AnomalyKind.INVALID_EVENT),
    (adjusted("S", "SET", "1", "0"), AnomalyKind.INVALID_EVENT),
    (balance("usd", "1"), AnomalyKind.INVALID_EVENT),
    (balance("USD", "0"), AnomalyKind.INVALID_EVENT),
]


@pytest.mark.parametrize(("event", "kind"), ANOMALIES, ids=[f"{k}-{i}" for i, (_, k) in enumerate(ANOMALIES)])
def test_each_anomaly_leaves_the_state_unchanged(event: dict[str, Any], kind: str) -> None:
    state = fold(BASE)
    before = snapshot(state)
    anomaly = apply_event(state, event, 3, 99)
    assert anomaly is not None
    assert (anomaly.kind, anomaly.partition, anomaly.offset) == (kind, 3, 99)
    assert (anomaly.event_id, anomaly.event_type) == (event["event_id"], event["event_type"])
    assert anomaly.benign == (kind in ("DUPLICATE_FILL", "DUPLICATE_ORDER"))
    assert anomaly.detail
    assert snapshot(state) == before


def test_a_market_order_price_replace_is_invalid() -> None:
    state = fold([submitted("m", "10", None)])
    anomaly = apply_event(state, replaced("m", None, "5"), 0, 9)
    assert anomaly is not None and anomaly.kind == AnomalyKind.INVALID_REPLACE


def test_anomalies_are_recorded_by_the_caller_and_the_fold_goes_on() -> None:
    state = MemoryState()
    results = apply_all(state, [fill("e", "ghost", "1", "1"), submitted("o", "1", "1")])
    assert results[0] is not None and results[1] is None
    assert state.anomalies[0].kind == AnomalyKind.UNKNOWN_ORDER
    assert state.anomalies[0].detail == "no order ghost"
    assert state.offset == 1


def test_details_say_what_was_wrong() -> None:
    state = fold(BASE)
    overfill = apply_event(state, fill("e9", "o", "7", "5"), 0, 50)
    assert overfill is not None
    assert overfill.detail == "fill of 7 on top of 4 exceeds the order quantity 10"
    conflict = apply_event(state, submitted("o", "11", "6", tif="GTC"), 0, 51)
    assert conflict is not None
    assert conflict.detail == "order o exists with a different limit_price, quantity, time_in_force"


# Config


def test_config_applies_newer_versions_only() -> None:
    state = MemoryConfigState()
    results = apply_all_config(
        state,
        [
            config("risk.max_gross", p8("1000000"), 1, "DECIMAL"),
            config("risk.max_gross", p8("2000000"), 3, "DECIMAL"),
            config("risk.max_gross", p8("5"), 2, "DECIMAL"),
            config("risk.max_gross", p8("5"), 3, "DECIMAL"),
            config("trading.enabled", True, 1),
            config("trading.enabled", 1, 2, "BOOLEAN"),
            config("trading.enabled", False, 0),
        ],
    )
    kinds = [None if a is None else a.kind for a in results]
    stale, invalid = AnomalyKind.STALE_CONFIG_VERSION, AnomalyKind.INVALID_EVENT
    assert kinds == [None, None, stale, stale, None, invalid, invalid]
    entry = state.entries["risk.max_gross"]
    assert (entry.value, entry.version, entry.offset) == (p8("2000000"), 3, 1)
    assert state.entries["trading.enabled"].value is True
    assert sorted(state.anomalies) == [2, 3, 5, 6]
    assert all(a.partition == 0 for a in state.anomalies.values())


def test_config_events_belong_to_the_config_topic_only() -> None:
    with pytest.raises(EventContractError, match="config topic"):
        apply_event(MemoryState(), config("k", 1, 1), 0, 0)
    with pytest.raises(EventContractError, match="only ConfigChanged"):
        apply_config(MemoryConfigState(), accepted("o"), 0)


# Contract errors and invariants


def test_an_unknown_event_type_is_an_error_not_an_anomaly() -> None:
    event = accepted("o") | {"event_type": "OrderTeleported"}
    with pytest.raises(EventContractError, match="OrderTeleported"):
        apply_event(MemoryState(), event, 0, 0)


def test_an_unknown_enum_symbol_is_an_error() -> None:
    with pytest.raises(EventContractError, match="side"):
        apply_event(MemoryState(), submitted("o", "1", "1", side="SHORT"), 0, 0)


def test_a_broken_position_invariant_stops_loudly_and_stores_nothing() -> None:
    state = fold([submitted("o", "10", "5")])
    state.put_position(Position("ACC1", "AAPL", p8("5"), -(10**20), 0, 0, p8("5")))
    before = snapshot(state)
    with pytest.raises(InvariantError, match="position ACC1/AAPL"):
        apply_event(state, fill("e", "o", "1", "5"), 0, 9)
    assert snapshot(state) == before


def test_a_broken_order_invariant_stops_loudly_and_stores_nothing() -> None:
    state = fold([submitted("o", "10", "5")])
    corrupt = state.orders["o"]
    state.put_order(dataclasses.replace(corrupt, filled=p8("10")))
    before = snapshot(state)
    with pytest.raises(InvariantError, match="order o"):
        apply_event(state, canceled("o"), 0, 9)
    assert snapshot(state) == before


def test_a_missing_risk_row_is_an_invariant_error() -> None:
    state = fold([submitted("o", "10", "5")])
    del state.risks["ACC1"]
    before = snapshot(state)
    with pytest.raises(InvariantError, match="no risk row"):
        apply_event(state, fill("e", "o", "1", "5"), 0, 9)
    assert snapshot(state) == before


# Determinism


def _day() -> list[dict[str, Any]]:
    return [
        *BASE,
        balance("USD", "1000"),
        adjusted("MSFT", "SET", "-7", "300.5"),
        fill("e2", "o", "6", "4.99999999", fee="0.01"),
        fill("e2", "o", "6", "4.99999999", fee="0.01"),
        submitted("p", "3", None, account="ACC2", side="SELL", symbol="MSFT"),
        fill("e3", "p", "3", "301", account="ACC2"),
    ]


def test_the_same_events_give_the_same_digest() -> None:
    events = _day()
    first, second = MemoryState(), MemoryState()
    apply_all(first, events)
    apply_all(second, [dict(e) for e in events])
    assert state_digest(first.records()) == state_digest(second.records())
    assert list(first.records()) == list(second.records())
    third = MemoryState()
    apply_all(third, events[:-1])
    assert state_digest(third.records()) != state_digest(first.records())
