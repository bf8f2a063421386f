"""The projected entities, one dataclass per table row, and the string constants they use.

Every amount is an exact ``int``: quantities and prices at scale 8, products (notional, cost basis,
P&L, exposure) at scale 16; see :mod:`schemas.fixed`. Enumerated values are the plain ``str`` symbols
the codec delivers (``"BUY"``, ``"FILLED"``), so the hot path compares strings and never constructs an
Enum. The entities are mutable on purpose: the fold updates them in place and hands them back through
``put_*`` (see :mod:`projector.state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


class Side:
    BUY: Final = "BUY"
    SELL: Final = "SELL"
    ALL: Final = frozenset({BUY, SELL})


class OrderType:
    LIMIT: Final = "LIMIT"
    MARKET: Final = "MARKET"
    ALL: Final = frozenset({LIMIT, MARKET})


class TimeInForce:
    ALL: Final = frozenset({"DAY", "GTC", "IOC", "FOK"})


class OrderStatus:
    NEW: Final = "NEW"
    ACCEPTED: Final = "ACCEPTED"
    PARTIALLY_FILLED: Final = "PARTIALLY_FILLED"
    FILLED: Final = "FILLED"
    CANCELED: Final = "CANCELED"
    REJECTED: Final = "REJECTED"
    EXPIRED: Final = "EXPIRED"
    OPEN: Final = frozenset({NEW, ACCEPTED, PARTIALLY_FILLED})
    TERMINAL: Final = frozenset({FILLED, CANCELED, REJECTED, EXPIRED})


class AdjustMode:
    SET: Final = "SET"
    DELTA: Final = "DELTA"


class ConfigValueType:
    BOOLEAN: Final = "BOOLEAN"
    INTEGER: Final = "INTEGER"
    DECIMAL: Final = "DECIMAL"
    STRING: Final = "STRING"
    ALL: Final = frozenset({BOOLEAN, INTEGER, DECIMAL, STRING})


class AnomalyKind:
    """Why an event could not apply. Only the duplicates are benign (see docs/state.md)."""

    DUPLICATE_EVENT: Final = "DUPLICATE_EVENT"
    DUPLICATE_ORDER: Final = "DUPLICATE_ORDER"
    DUPLICATE_FILL: Final = "DUPLICATE_FILL"
    ORDER_ID_CONFLICT: Final = "ORDER_ID_CONFLICT"
    EXEC_ID_CONFLICT: Final = "EXEC_ID_CONFLICT"
    UNKNOWN_ORDER: Final = "UNKNOWN_ORDER"
    ACCOUNT_MISMATCH: Final = "ACCOUNT_MISMATCH"
    TERMINAL_ORDER: Final = "TERMINAL_ORDER"
    INVALID_TRANSITION: Final = "INVALID_TRANSITION"
    OVERFILL: Final = "OVERFILL"
    INVALID_REPLACE: Final = "INVALID_REPLACE"
    INVALID_EVENT: Final = "INVALID_EVENT"
    STALE_CONFIG_VERSION: Final = "STALE_CONFIG_VERSION"
    BENIGN: Final = frozenset({DUPLICATE_EVENT, DUPLICATE_ORDER, DUPLICATE_FILL})
    ALL: Final = frozenset(
        {
            DUPLICATE_EVENT,
            DUPLICATE_ORDER,
            DUPLICATE_FILL,
            ORDER_ID_CONFLICT,
            EXEC_ID_CONFLICT,
            UNKNOWN_ORDER,
            ACCOUNT_MISMATCH,
            TERMINAL_ORDER,
            INVALID_TRANSITION,
            OVERFILL,
            INVALID_REPLACE,
            INVALID_EVENT,
            STALE_CONFIG_VERSION,
        }
    )


@dataclass(slots=True)
class Order:
    """One order. ``limit_price`` is None for MARKET orders; ``submitted_*`` keep the submit's own
    quantity and price so a re-delivered submit is recognised as a duplicate even after a replace."""

    order_id: str
    account_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    limit_price: int | None
    quantity: int
    filled: int
    filled_notional: int
    status: str
    client_order_id: str
    event_count: int
    last_offset: int
    submitted_limit_price: int | None
    submitted_quantity: int


@dataclass(slots=True)
class FillRecord:
    """An applied execution: enough to recognise its exec_id again."""

    exec_id: str
    order_id: str


@dataclass(slots=True)
class Position:
    """Signed ``quantity`` (scale 8), ``cost_basis`` (scale 16, same sign as the quantity),
    ``realized_pnl`` before fees (scale 16), accumulated ``fees`` (scale 8), ``last_price`` (scale 8)."""

    account_id: str
    symbol: str
    quantity: int
    cost_basis: int
    realized_pnl: int
    fees: int
    last_price: int


@dataclass(slots=True)
class Balance:
    account_id: str
    currency: str
    amount: int


@dataclass(slots=True)
class Risk:
    """Per-account aggregates kept incrementally: exposures, P&L and open-order notional at scale 16,
    fees at scale 8."""

    account_id: str
    gross_exposure: int
    net_exposure: int
    realized_pnl: int
    open_order_notional: int
    fees: int


@dataclass(slots=True)
class ConfigEntry:
    """A config key's current value: ``bool`` for BOOLEAN, ``int`` for INTEGER and (scale 8) DECIMAL,
    ``str`` for STRING."""

    key: str
    value_type: str
    value: bool | int | str
    version: int
    changed_by: str
    occurred_at: int
    offset: int


@dataclass(slots=True)
class Anomaly:
    """An event that did not apply, and why."""

    partition: int
    offset: int
    event_id: str
    event_type: str
    kind: str
    detail: str

    @property
    def benign(self) -> bool:
        """A harmless re-delivery (DUPLICATE_EVENT, DUPLICATE_FILL, DUPLICATE_ORDER): never a reason
        to halt."""
        return self.kind in AnomalyKind.BENIGN


Entity = Order | FillRecord | Position | Balance | Risk | ConfigEntry | Anomaly
