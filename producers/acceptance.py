"""Exact acceptance: the producer's fast path decides, per event, whether the builder would say yes.

Each function takes an event's field values in schema order, already of their exact Avro types (the
generated encoder checks str/int/None, the 64-bit range and the enum symbols), and returns True only
if the type's builder (:mod:`producers.builders`) would return the event unchanged. False means "ask
the builder": it raises the precise error, or normalizes (a decimal string, say). The generated
encoders call these (:meth:`schemas.codec.Codec.compiled_encoder`); ``tests/test_event_producer.py``
and ``tests/test_builders.py`` check that both paths agree. Compiled to native code (docs/native.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

from producers.builders import (
    CURRENCY_RE,
    DESK_WIDE,
    MAX_OCCURRED_AT,
    MIC_RE,
    MIN_OCCURRED_AT,
    UUID_RE,
)
from producers.fixed_point import INT64_MIN


def _ids(names: int) -> Callable[[str], re.Match[str] | None]:
    """One regex call for an event_id and ``names`` space-joined names (non-empty, no whitespace)."""
    return re.compile(UUID_RE.pattern + r"(?: \S+)" * names).fullmatch


_IDS2, _IDS3, _IDS4, _IDS5 = (_ids(n) for n in range(2, 6))


def _account_event(expected: str, event_type: str, occurred_at: int, account_id: str) -> bool:
    """The envelope rules of every account's event: its type, a plausible time, not desk-wide."""
    return (
        event_type == expected
        and MIN_OCCURRED_AT <= occurred_at < MAX_OCCURRED_AT
        and account_id != DESK_WIDE
    )


def _plain_text(value: str) -> bool:
    return value != "" and value == value.strip()


# Venue and currency codes are a small set: remember the ones that matched (at most 4096).
_KNOWN_MICS: set[str] = set()
_KNOWN_CURRENCIES: set[str] = set()


def _matches(pattern: re.Pattern[str], known: set[str], value: str) -> bool:
    if pattern.match(value) is None:
        return False
    if len(known) < 4096:
        known.add(value)
    return True


def _accept_order_submitted(
    event_id: str,
    event_type: str,
    occurred_at: int,
    account_id: str,
    source: str,
    order_id: str,
    client_order_id: str,
    symbol: str,
    side: str,
    order_type: str,
    limit_price: int | None,
    quantity: int,
    time_in_force: str,
) -> bool:
    return (
        _account_event("OrderSubmitted", event_type, occurred_at, account_id)
        and _IDS5(f"{event_id} {account_id} {source} {order_id} {client_order_id} {symbol}") is not None
        and (limit_price is None if order_type == "MARKET" else limit_price is not None and limit_price > 0)
        and quantity > 0
    )


def _accept_order_accepted(
    event_id: str, event_type: str, occurred_at: int, account_id: str, source: str, order_id: str
) -> bool:
    return (
        _account_event("OrderAccepted", event_type, occurred_at, account_id)
        and _IDS3(f"{event_id} {account_id} {source} {order_id}") is not None
    )


def _accept_order_rejected(
    event_id: str,
    event_type: str,
    occurred_at: int,
    account_id: str,
    source: str,
    order_id: str,
    reason: str,
    reject_code: str | None,
) -> bool:
    return (
        _account_event("OrderRejected", event_type, occurred_at, account_id)
        and _IDS3(f"{event_id} {account_id} {source} {order_id}") is not None
        and _plain_text(reason)
        and (reject_code is None or _plain_text(reject_code))
    )


def _accept_order_replaced(
    event_id: str,
    event_type: str,
    occurred_at: int,
    account_id: str,
    source: str,
    order_id: str,
    new_limit_price: int | None,
    new_quantity: int | None,
) -> bool:
    return (
        _account_event("OrderReplaced", event_type, occurred_at, account_id)
        and _IDS3(f"{event_id} {account_id} {source} {order_id}") is not None
        and (new_limit_price is not None or new_quantity is not None)
        and (new_limit_price is None or new_limit_price > 0)
        and (new_quantity is None or new_quantity > 0)
    )


def _accept_order_canceled(
    event_id: str,
    event_type: str,
    occurred_at: int,
    account_id: str,
    source: str,
    order_id: str,
    reason: str | None,
) -> bool:
    return (
        _account_event("OrderCanceled", event_type, occurred_at, account_id)
        and _IDS3(f"{event_id} {account_id} {source} {order_id}") is not None
        and (reason is None or _plain_text(reason))
    )


def _accept_order_expired(
    event_id: str, event_type: str, occurred_at: int, account_id: str, source: str, order_id: str
) -> bool:
    return (
        _account_event("OrderExpired", event_type, occurred_at, account_id)
        and _IDS3(f"{event_id} {account_id} {source} {order_id}") is not None
    )


def _accept_fill(
    event_id: str,
    event_type: str,
    occurred_at: int,
    account_id: str,
    source: str,
    exec_id: str,
    order_id: str,
    quantity: int,
    price: int,
    fee: int,
    liquidity: str,
    venue: str | None,
) -> bool:
    return (
        _account_event("Fill", event_type, occurred_at, account_id)
        and _IDS4(f"{event_id} {account_id} {source} {exec_id} {order_id}") is not None
        and quantity > 0
        and price > 0
        and fee >= 0
        and (venue is None or venue in _KNOWN_MICS or _matches(MIC_RE, _KNOWN_MICS, venue))
    )


def _accept_position_adjusted(
    event_id: str,
    event_type: str,
    occurred_at: int,
    account_id: str,
    source: str,
    symbol: str,
    mode: str,
    quantity: int,
    price: int,
    reason: str,
) -> bool:
    return (
        _account_event("PositionAdjusted", event_type, occurred_at, account_id)
        and _IDS3(f"{event_id} {account_id} {source} {symbol}") is not None
        and (quantity != 0 or mode != "DELTA")
        and price > 0
    )


def _accept_balance_changed(
    event_id: str,
    event_type: str,
    occurred_at: int,
    account_id: str,
    source: str,
    currency: str,
    amount: int,
    reason: str,
) -> bool:
    return (
        _account_event("BalanceChanged", event_type, occurred_at, account_id)
        and _IDS2(f"{event_id} {account_id} {source}") is not None
        and (currency in _KNOWN_CURRENCIES or _matches(CURRENCY_RE, _KNOWN_CURRENCIES, currency))
        and amount != 0
    )


def _accept_config_changed(
    event_id: str,
    event_type: str,
    occurred_at: int,
    account_id: str,
    source: str,
    key: str,
    value_type: str,
    value: bool | int | str,
    version: int,
    changed_by: str,
) -> bool:
    return (
        event_type == "ConfigChanged"
        and MIN_OCCURRED_AT <= occurred_at < MAX_OCCURRED_AT
        and account_id == DESK_WIDE
        and _IDS3(f"{event_id} {source} {key} {changed_by}") is not None
        and version > 0
        and type(value) is _CONFIG_TYPES[value_type]
        and (value_type != "INTEGER" or value != INT64_MIN)
    )


_CONFIG_TYPES: Final[Mapping[str, type]] = {"BOOLEAN": bool, "INTEGER": int, "DECIMAL": int, "STRING": str}

ACCEPT: Final[Mapping[str, Callable[..., bool]]] = {
    "OrderSubmitted": _accept_order_submitted,
    "OrderAccepted": _accept_order_accepted,
    "OrderRejected": _accept_order_rejected,
    "OrderReplaced": _accept_order_replaced,
    "OrderCanceled": _accept_order_canceled,
    "OrderExpired": _accept_order_expired,
    "Fill": _accept_fill,
    "PositionAdjusted": _accept_position_adjusted,
    "BalanceChanged": _accept_balance_changed,
    "ConfigChanged": _accept_config_changed,
}
"""Per type: True only if the builder accepts these exactly-typed field values unchanged (see above)."""
