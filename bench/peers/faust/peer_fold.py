"""The Faust peer's fold: rewind's events applied to four key-value tables, in plain Python.

The same state and arithmetic as projector/fold.py (docs/state.md) for orders, fills, positions and
balances: integers at scale 8, products at scale 16, the cost basis removed on a reduce rounded
half-to-even. An event that cannot apply (unknown or terminal order, account mismatch, invalid
transition, overfill, invalid replace, duplicate or conflicting fill or order) changes nothing and is
not recorded. Not kept: risk, anomalies, the event-id window and rewind's field-value checks.

The tables are any mutable mappings: Faust tables in peer_faust.py, dicts in the tests. Each value
is written back whole (``table[key] = value``), which is what sends a Faust table's changelog record.
No import beyond the standard library, so the fold is tested without Faust or Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

OPEN = frozenset({"NEW", "ACCEPTED", "PARTIALLY_FILLED"})
TERMINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
TRANSITIONS = {
    "OrderAccepted": (frozenset({"NEW"}), "ACCEPTED"),
    "OrderRejected": (frozenset({"NEW", "ACCEPTED"}), "REJECTED"),
    "OrderCanceled": (OPEN, "CANCELED"),
    "OrderExpired": (OPEN, "EXPIRED"),
}
# An order row: [account, symbol, side, limit price, quantity, filled, filled notional, status].
ACCOUNT, SYMBOL, SIDE, LIMIT, QUANTITY, FILLED, NOTIONAL, STATUS = range(8)
# A position row: [quantity, cost basis, realized P&L, fees, last price].

Table = MutableMapping[str, Any]
Export = dict[str, dict[str, Any]]


def div_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (> 0) rounded to the nearest integer, ties to even."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def trade(position: list[int], traded: int, price: int) -> None:
    """docs/state.md "Positions": trade ``traded`` (signed) at ``price``, in place."""
    quantity, basis, realized = position[0], position[1], position[2]
    if quantity == 0 or (quantity > 0) == (traded > 0):
        position[0], position[1] = quantity + traded, basis + traded * price
        return
    held, size = abs(quantity), abs(traded)
    closed = min(size, held)
    removed = div_half_even(basis * closed, held)
    realized += (closed * price if quantity > 0 else -closed * price) - removed
    basis -= removed
    position[2] = realized
    if size > closed:
        if basis != 0:
            raise RuntimeError(f"closing {held} left cost basis {basis}")
        rest = traded + closed if quantity > 0 else traded - closed
        position[0], position[1] = rest, rest * price
        return
    position[0], position[1] = quantity + (closed if traded > 0 else -closed), basis


class PeerFold:
    """Applies decoded events (docs/events.md's decoded form) to four tables."""

    def __init__(self, orders: Table, fills: Table, positions: Table, balances: Table) -> None:
        self.orders, self.fills, self.positions, self.balances = orders, fills, positions, balances

    def apply(self, event: Mapping[str, Any]) -> None:
        kind = event["event_type"]
        if kind == "OrderSubmitted":
            self.submitted(event)
        elif kind in TRANSITIONS:
            allowed, target = TRANSITIONS[kind]
            order = self.open_order(event)
            if order is not None and order[STATUS] in allowed:
                order[STATUS] = target
                self.orders[event["order_id"]] = order
        elif kind == "OrderReplaced":
            self.replaced(event)
        elif kind == "Fill":
            self.fill(event)
        elif kind == "PositionAdjusted":
            self.adjusted(event)
        elif kind == "BalanceChanged":
            key = f"{event['account_id']}/{event['currency']}"
            self.balances[key] = self.balances.get(key, 0) + event["amount"]
        else:
            raise ValueError(f"unknown event_type {kind!r}")

    def open_order(self, event: Mapping[str, Any]) -> list[Any] | None:
        """A copy of the live order the event refers to, or None when the event cannot apply."""
        order = self.orders.get(event["order_id"])
        if order is None or order[ACCOUNT] != event["account_id"] or order[STATUS] in TERMINAL:
            return None
        return list(order)

    def submitted(self, event: Mapping[str, Any]) -> None:
        if self.orders.get(event["order_id"]) is None:
            self.orders[event["order_id"]] = [
                event["account_id"],
                event["symbol"],
                event["side"],
                event["limit_price"],
                event["quantity"],
                0,
                0,
                "NEW",
            ]

    def replaced(self, event: Mapping[str, Any]) -> None:
        order = self.open_order(event)
        new_limit, new_quantity = event["new_limit_price"], event["new_quantity"]
        if order is None or (new_limit is not None and order[LIMIT] is None):
            return
        quantity = order[QUANTITY] if new_quantity is None else new_quantity
        if quantity < order[FILLED]:
            return
        order[QUANTITY] = quantity
        if new_limit is not None:
            order[LIMIT] = new_limit
        if quantity == order[FILLED]:
            order[STATUS] = "FILLED"
        self.orders[event["order_id"]] = order

    def fill(self, event: Mapping[str, Any]) -> None:
        if self.fills.get(event["exec_id"]) is not None:
            return
        order = self.open_order(event)
        if order is None:
            return
        quantity, price = event["quantity"], event["price"]
        filled = order[FILLED] + quantity
        if filled > order[QUANTITY]:
            return
        key = f"{order[ACCOUNT]}/{order[SYMBOL]}"
        traded = quantity if order[SIDE] == "BUY" else -quantity
        stored = self.positions.get(key)
        if stored is None:
            position = [traded, traded * price, 0, event["fee"], price]
        else:
            position = list(stored)
            trade(position, traded, price)
            position[3] += event["fee"]
            position[4] = price
        self.positions[key] = position
        order[FILLED] = filled
        order[NOTIONAL] += quantity * price
        order[STATUS] = "FILLED" if filled == order[QUANTITY] else "PARTIALLY_FILLED"
        self.orders[event["order_id"]] = order
        self.fills[event["exec_id"]] = event["order_id"]

    def adjusted(self, event: Mapping[str, Any]) -> None:
        key = f"{event['account_id']}/{event['symbol']}"
        stored = self.positions.get(key)
        quantity, price = event["quantity"], event["price"]
        if stored is None:
            position = [quantity, quantity * price, 0, 0, price]
        elif event["mode"] == "SET":
            position = [quantity, quantity * price, stored[2], stored[3], price]
        else:
            position = list(stored)
            trade(position, quantity, price)
            position[4] = price
        self.positions[key] = position

    def export(self) -> Export:
        """The tables in the shared export shape of bench/peers/crosscheck.py."""
        return {
            "orders": {
                k: [o[STATUS], str(o[QUANTITY]), str(o[FILLED]), str(o[NOTIONAL])]
                for k, o in self.orders.items()
            },
            "positions": {k: [str(v) for v in p] for k, p in self.positions.items()},
            "balances": {k: str(v) for k, v in self.balances.items()},
        }
