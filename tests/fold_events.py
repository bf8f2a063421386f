"""Builders of decoded events (the dicts of docs/events.md) for fold tests and the fold benchmark.

Amounts are given as decimal strings or ints already at scale 8; event ids are deterministic.
"""

from __future__ import annotations

import itertools
from typing import Any

from projector.model import Anomaly
from projector.policy import QUARANTINE, ConfigStep, EventsStep, PolicyStep
from projector.state import MemoryConfigState, MemoryState
from schemas.fixed import SCALE, parse_fixed

Event = dict[str, Any]

_ids = itertools.count(1)


def px(value: str | int | None) -> int | None:
    """A scale-8 int from ``"12.50"``; ints pass through (already scaled)."""
    if value is None or isinstance(value, int):
        return value
    return parse_fixed(value, SCALE)


def q(value: str | int) -> int:
    result = px(value)
    assert result is not None
    return result


def _common(event_type: str, account_id: str, source: str = "oms") -> Event:
    n = next(_ids)
    return {
        "event_id": f"00000000-0000-4000-8000-{n:012x}",
        "event_type": event_type,
        "occurred_at": 1_700_000_000_000_000 + n,
        "account_id": account_id,
        "source": source,
    }


def submitted(
    order_id: str,
    quantity: str | int,
    limit_price: str | int | None = "10",
    *,
    account: str = "ACC1",
    symbol: str = "AAPL",
    side: str = "BUY",
    order_type: str | None = None,
    tif: str = "DAY",
    client_order_id: str | None = None,
) -> Event:
    return _common("OrderSubmitted", account) | {
        "order_id": order_id,
        "client_order_id": client_order_id or f"c-{order_id}",
        "symbol": symbol,
        "side": side,
        "order_type": order_type or ("MARKET" if limit_price is None else "LIMIT"),
        "limit_price": px(limit_price),
        "quantity": q(quantity),
        "time_in_force": tif,
    }


def accepted(order_id: str, *, account: str = "ACC1") -> Event:
    return _common("OrderAccepted", account) | {"order_id": order_id}


def rejected(order_id: str, *, account: str = "ACC1", reason: str = "no") -> Event:
    return _common("OrderRejected", account) | {"order_id": order_id, "reason": reason, "reject_code": None}


def replaced(
    order_id: str,
    new_quantity: str | int | None = None,
    new_limit_price: str | int | None = None,
    *,
    account: str = "ACC1",
) -> Event:
    return _common("OrderReplaced", account) | {
        "order_id": order_id,
        "new_limit_price": px(new_limit_price),
        "new_quantity": px(new_quantity),
    }


def canceled(order_id: str, *, account: str = "ACC1") -> Event:
    return _common("OrderCanceled", account) | {"order_id": order_id, "reason": None}


def expired(order_id: str, *, account: str = "ACC1") -> Event:
    return _common("OrderExpired", account) | {"order_id": order_id}


def fill(
    exec_id: str,
    order_id: str,
    quantity: str | int,
    price: str | int,
    fee: str | int = 0,
    *,
    account: str = "ACC1",
) -> Event:
    return _common("Fill", account, "exchange:XNAS") | {
        "exec_id": exec_id,
        "order_id": order_id,
        "quantity": q(quantity),
        "price": q(price),
        "fee": q(fee),
        "liquidity": "TAKER",
        "venue": "XNAS",
    }


def adjusted(
    symbol: str, mode: str, quantity: str | int, price: str | int, *, account: str = "ACC1"
) -> Event:
    return _common("PositionAdjusted", account, "operator:alice") | {
        "symbol": symbol,
        "mode": mode,
        "quantity": q(quantity),
        "price": q(price),
        "reason": "RECONCILIATION",
    }


def balance(currency: str, amount: str | int, *, account: str = "ACC1") -> Event:
    return _common("BalanceChanged", account) | {
        "currency": currency,
        "amount": q(amount),
        "reason": "DEPOSIT",
    }


def config(key: str, value: bool | int | str, version: int, value_type: str | None = None) -> Event:
    if value_type is None:
        value_type = {bool: "BOOLEAN", int: "INTEGER", str: "STRING"}[type(value)]
    return _common("ConfigChanged", "*", "operator:alice") | {
        "key": key,
        "value_type": value_type,
        "value": value,
        "version": version,
        "changed_by": "operator:alice",
    }


def apply_in_order(step: PolicyStep, events: list[Event]) -> list[Anomaly | None]:
    """Step through ``events`` at the offsets after ``step.offset``; return each one's anomaly."""
    results: list[Anomaly | None] = []
    for event in events:
        step.apply(event, step.offset + 1)
        results.append(step.anomaly)
    return results


def apply_all(state: MemoryState, events: list[Event], partition: int = 0) -> list[Anomaly | None]:
    """Fold ``events`` at consecutive offsets after ``state.offset`` under the quarantine policy."""
    step = EventsStep(state, partition, QUARANTINE, state.offset)
    results = apply_in_order(step, events)
    state.offset = step.offset
    return results


def apply_all_config(state: MemoryConfigState, events: list[Event]) -> list[Anomaly | None]:
    """Fold config events at consecutive offsets after ``state.offset`` under the quarantine policy."""
    step = ConfigStep(state, QUARANTINE, state.offset)
    results = apply_in_order(step, events)
    state.offset = step.offset
    return results
