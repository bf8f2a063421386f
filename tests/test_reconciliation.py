"""The pure parts of reconciliation: statement parsing with a column mapping, the comparison with
tolerances, and the proposed corrections (applied with the projector's own fold)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from projector.fold import apply_event
from projector.model import Balance, Order, Position
from projector.state import MemoryState
from replayer.corrections import correction_id, events_of_document, proposal_document, propose
from replayer.reconciliation import RewindRows, Tolerances, compare, in_scope, statement_accounts
from replayer.statement import Statement, StatementError, parse_statement
from rewind.ground.errors import ConfigError, RewindError
from rewind.ground.settings import load_settings

E8 = 10**8
MAPPING = {
    "account": "Acct",
    "symbol": "Ticker",
    "quantity": "Net Qty",
    "avg_price": "Avg Px",
    "as_of": "As Of",
}
DEFAULTS = Tolerances.from_settings(load_settings(environ={}))


def _statement(positions: bytes, balances: bytes | None = None, orders: bytes | None = None) -> Statement:
    statement = Statement()
    described, lines = parse_statement("positions", "pb.csv", positions, MAPPING)
    statement.files.append(described)
    statement.positions = lines
    if balances is not None:
        described, found = parse_statement(
            "balances",
            "cash.json",
            balances,
            {"account": "account", "currency": "currency", "amount": "amount", "as_of": "as_of"},
        )
        statement.files.append(described)
        statement.balances = found
    if orders is not None:
        described, open_orders = parse_statement(
            "orders",
            "orders.csv",
            orders,
            {"order_id": "order_id", "remaining": "remaining", "as_of": "as_of"},
        )
        statement.files.append(described)
        statement.orders = open_orders
    return statement


def _position(account: str, symbol: str, quantity: int, price: int) -> Position:
    return Position(account, symbol, quantity, quantity * price, 0, 0, price)


def _order(
    order_id: str, account: str, quantity: int, filled: int, status: str = "PARTIALLY_FILLED"
) -> Order:
    return Order(
        order_id,
        account,
        "AAPL",
        "BUY",
        "LIMIT",
        "DAY",
        E8,
        quantity,
        filled,
        filled * E8,
        status,
        "c",
        1,
        0,
        E8,
        quantity,
    )


def test_a_csv_statement_is_read_through_the_column_mapping_exactly() -> None:
    data = (
        b"Acct,Ticker,Net Qty,Avg Px,As Of\n"
        b"A1,AAPL,100,12.123456789012,2026-11-21T17:00:00Z\n"
        b'A1,MSFT,"-1,250.5",,2026-11-21T17:00:00Z\n'
    )
    described, lines = parse_statement("positions", "pb.csv", data, MAPPING)
    assert described.rows == 2 and described.as_of is not None and described.as_of.hour == 17
    assert lines[("A1", "AAPL")].quantity == 100 * E8
    assert lines[("A1", "AAPL")].avg_price == Decimal("12.123456789012")
    assert lines[("A1", "MSFT")].quantity == -125_050_000_000 and lines[("A1", "MSFT")].avg_price is None


def test_a_json_statement_reads_numbers_exactly_and_its_time() -> None:
    data = json.dumps(
        {"as_of": "2026-11-21T17:00:00Z", "rows": [{"Acct": "A1", "Ticker": "X", "Net Qty": 0.1}]}
    )
    described, lines = parse_statement("positions", "pb.json", data.encode(), MAPPING)
    assert lines[("A1", "X")].quantity == 10_000_000
    assert described.as_of is not None and described.as_of.isoformat() == "2026-11-21T17:00:00+00:00"


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"Acct,Ticker,Avg Px\nA1,X,1\n", "no value in column 'Net Qty'"),
        (b"Acct,Ticker,Net Qty\nA1,X,abc\n", "is not a number"),
        (b"Acct,Ticker,Net Qty\nA1,X,1.123456789\n", "more than 8 decimal places"),
        (b"Acct,Ticker,Net Qty\nA1,X,1\nA1,X,2\n", "a second row for position A1 X"),
        (b"Acct,Ticker,Net Qty,As Of\nA1,X,1,2026-11-21\nA1,Y,1,2026-11-22\n", "rows for different times"),
        (b"", "the file is empty"),
    ],
)
def test_a_bad_statement_is_refused_with_the_line_named(data: bytes, said: str) -> None:
    with pytest.raises(StatementError, match=said):
        parse_statement("positions", "pb.csv", data, MAPPING)


def test_only_csv_and_json_are_read() -> None:
    with pytest.raises(StatementError, match=r"\.csv or a \.json"):
        parse_statement("positions", "pb.xlsx", b"", MAPPING)


def test_every_kind_of_break_and_no_other() -> None:
    statement = _statement(
        b"Acct,Ticker,Net Qty,Avg Px\n"
        b"A1,SAME,10,5\n"
        b"A1,QTY,11,5\n"
        b"A1,PX,10,5.01\n"
        b"A1,NEAR,10,5.0000009\n"
        b"A1,GHOST,3,1\n"
        b"A1,FLAT,0,1\n",
        b'[{"account": "A1", "currency": "USD", "amount": "100.004"},'
        b' {"account": "A1", "currency": "EUR", "amount": 7},'
        b' {"account": "A1", "currency": "GBP", "amount": "5"}]',
        b"order_id,remaining\nO1,5\nO2,4\nO9,1\n",
    )
    rows = RewindRows(
        {
            ("A1", "SAME"): _position("A1", "SAME", 10 * E8, 5 * E8),
            ("A1", "QTY"): _position("A1", "QTY", 10 * E8, 5 * E8),
            ("A1", "PX"): _position("A1", "PX", 10 * E8, 5 * E8),
            ("A1", "NEAR"): _position("A1", "NEAR", 10 * E8, 5 * E8),
            ("A1", "EXTRA"): _position("A1", "EXTRA", -2 * E8, 5 * E8),
            ("A1", "FLATTOO"): _position("A1", "FLATTOO", 0, 5 * E8),
        },
        {
            ("A1", "USD"): Balance("A1", "USD", 100 * E8),
            ("A1", "EUR"): Balance("A1", "EUR", 8 * E8),
            ("A1", "JPY"): Balance("A1", "JPY", E8),
        },
        {
            "O1": _order("O1", "A1", 10 * E8, 5 * E8),
            "O2": _order("O2", "A1", 10 * E8, 5 * E8),
            "O3": _order("O3", "A1", 2 * E8, 0, "ACCEPTED"),
            "O4": _order("O4", "A1", E8, E8, "FILLED"),
        },
    )
    outcome = compare(statement, rows, DEFAULTS)
    found = {(b.kind, b.entity, b.key) for b in outcome.breaks}
    assert found == {
        ("quantity_differs", "position", "QTY"),
        ("price_differs", "position", "PX"),
        ("missing_in_rewind", "position", "GHOST"),
        ("missing_in_statement", "position", "EXTRA"),
        ("balance_differs", "balance", "EUR"),
        ("missing_in_rewind", "balance", "GBP"),
        ("missing_in_statement", "balance", "JPY"),
        ("remaining_differs", "order", "O2"),
        ("missing_in_rewind", "order", "O9"),
        ("missing_in_statement", "order", "O3"),
    }
    assert outcome.matches == {"positions": 2, "balances": 1, "orders": 1}
    qty = next(b for b in outcome.breaks if b.key == "QTY")
    assert (qty.statement, qty.rewind, qty.difference, qty.line) == ("11", "10", "1", 3)


def test_tolerances_per_field_and_per_instrument() -> None:
    settings = load_settings(
        environ={
            "REWIND_RECONCILE_INSTRUMENTS": "PX.avg_price=0.01,EUR.balance=1",
            "REWIND_RECONCILE_TOLERANCE_QUANTITY": "1",
        }
    )
    tolerances = Tolerances.from_settings(settings)
    statement = _statement(
        b"Acct,Ticker,Net Qty,Avg Px\nA1,PX,10,5.01\nA1,QTY,11,5\n",
        b'[{"account": "A1", "currency": "EUR", "amount": 7}]',
    )
    rows = RewindRows(
        {
            ("A1", "PX"): _position("A1", "PX", 10 * E8, 5 * E8),
            ("A1", "QTY"): _position("A1", "QTY", 10 * E8, 5 * E8),
        },
        {("A1", "EUR"): Balance("A1", "EUR", 8 * E8)},
        {},
    )
    assert compare(statement, rows, tolerances).breaks == []
    assert len(compare(statement, rows, DEFAULTS).breaks) == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REWIND_RECONCILE_INSTRUMENTS", "PX.price=1"),
        ("REWIND_RECONCILE_INSTRUMENTS", "PX=1"),
        ("REWIND_RECONCILE_TOLERANCE_BALANCE", "-1"),
    ],
)
def test_a_bad_tolerance_setting_is_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(environ={name: value})


def test_statement_accounts_only_leaves_other_accounts_out() -> None:
    statement = _statement(b"Acct,Ticker,Net Qty\nA1,X,1\n")
    rows = RewindRows(
        {("A1", "X"): _position("A1", "X", E8, E8), ("B2", "X"): _position("B2", "X", E8, E8)}, {}, {}
    )
    assert len(compare(statement, rows, DEFAULTS).breaks) == 1
    assert compare(statement, in_scope(rows, statement_accounts(statement)), DEFAULTS).breaks == []


def test_proposed_corrections_clear_every_position_and_balance_break_under_the_fold() -> None:
    statement = _statement(
        b"Acct,Ticker,Net Qty,Avg Px\nA1,QTY,11,5\nA1,PX,10,5.123456789\nA1,GHOST,-3,1\nA1,NOPRICE,4,\n",
        b'[{"account": "A1", "currency": "USD", "amount": "100.5"}]',
    )
    state = MemoryState()
    setup = [
        ("QTY", 10 * E8, 5 * E8),
        ("PX", 10 * E8, 5 * E8),
        ("EXTRA", -2 * E8, 7 * E8),
        ("NOPRICE", 2 * E8, 3 * E8),
    ]
    offset = 0
    for symbol, quantity, price in setup:
        apply_event(state, _adjust(symbol, quantity, price), 0, offset)
        offset += 1
    apply_event(state, _cash(90 * E8), 0, offset)
    rows = RewindRows(dict(state.positions), dict(state.balances), {})
    outcome = compare(statement, rows, DEFAULTS)
    assert len(outcome.breaks) == 6
    proposal = propose(statement, rows, outcome.breaks, 1_800_000_000_000_000)
    assert proposal.uncorrected == [] and len(proposal.events) == 6
    assert len({e["event_id"] for e in proposal.events}) == 6
    again = propose(statement, rows, outcome.breaks, 1_900_000_000_000_000)
    assert [e["event_id"] for e in again.events] == [e["event_id"] for e in proposal.events]
    document = json.loads(json.dumps(proposal_document(statement, None, proposal)))
    _checksum, source, events = events_of_document(document, "proposal.json")
    assert source.startswith("reconciliation:pb.csv+cash.json:")
    for event in events:
        offset += 1
        assert apply_event(state, event, 0, offset) is None
    after = RewindRows(dict(state.positions), dict(state.balances), {})
    assert compare(statement, after, DEFAULTS).breaks == []


def test_correction_ids_depend_on_the_statement_and_the_entity_only() -> None:
    first = correction_id("abc", "position", "A1", "X")
    assert first == correction_id("abc", "position", "A1", "X")
    assert (
        len({first, correction_id("abd", "position", "A1", "X"), correction_id("abc", "balance", "A1", "X")})
        == 3
    )


def test_an_edited_proposal_is_refused() -> None:
    statement = _statement(b"Acct,Ticker,Net Qty,Avg Px\nA1,X,1,2\n")
    rows = RewindRows({}, {}, {})
    proposal = propose(statement, rows, compare(statement, rows, DEFAULTS).breaks, 1_800_000_000_000_000)
    document = json.loads(json.dumps(proposal_document(statement, None, proposal)))
    document["events"][0]["source"] = "someone-else"
    with pytest.raises(RewindError, match="has source"):
        events_of_document(document, "p.json")
    document["events"][0] = dict(document["events"][0], source=document["source"], event_type="Fill")
    with pytest.raises(RewindError, match="corrections only"):
        events_of_document(document, "p.json")


def _adjust(symbol: str, quantity: int, price: int) -> dict[str, object]:
    return {
        "event_id": f"00000000-0000-4000-8000-{abs(hash(symbol)) % 10**12:012d}",
        "event_type": "PositionAdjusted",
        "occurred_at": 1_800_000_000_000_000,
        "account_id": "A1",
        "source": "test",
        "symbol": symbol,
        "mode": "SET",
        "quantity": quantity,
        "price": price,
        "reason": "START_OF_DAY",
    }


def _cash(amount: int) -> dict[str, object]:
    return {
        "event_id": "00000000-0000-4000-8000-00000000cafe",
        "event_type": "BalanceChanged",
        "occurred_at": 1_800_000_000_000_000,
        "account_id": "A1",
        "source": "test",
        "currency": "USD",
        "amount": amount,
        "reason": "DEPOSIT",
    }
