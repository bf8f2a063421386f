"""Read-side figures derived from stored rows, and JSON-ready renderings of every entity.

Derived figures (leaves, averages, unrealized P&L) are computed at read time and never stored.
Averages are rounded half-even to scale 8, the price scale. In :func:`to_dict` every amount is an
exact decimal string (:func:`schemas.fixed.format_fixed`: trailing zeros trimmed, never a float), so
JSON consumers cannot lose precision; counters and offsets stay JSON integers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from projector.model import (
    Anomaly,
    Balance,
    ConfigEntry,
    ConfigValueType,
    Entity,
    FillRecord,
    Order,
    OrderStatus,
    Position,
    Risk,
)
from schemas.fixed import ONE, PRODUCT_SCALE, SCALE, div_half_even, format_fixed


def leaves_quantity(order: Order) -> int:
    """What is still to be filled (scale 8); zero once the order is terminal."""
    if order.status in OrderStatus.TERMINAL:
        return 0
    return order.quantity - order.filled


def average_fill_price(order: Order) -> int | None:
    """Filled notional / filled quantity at scale 8 (half-even), or None before the first fill."""
    if order.filled == 0:
        return None
    return div_half_even(order.filled_notional, order.filled)


def average_cost(position: Position) -> int | None:
    """Cost basis / quantity at scale 8 (half-even, positive for long and short), or None when flat."""
    if position.quantity == 0:
        return None
    return div_half_even(position.cost_basis, position.quantity)


def market_value(position: Position) -> int:
    """Signed quantity × last price, scale 16."""
    return position.quantity * position.last_price


def unrealized_pnl(position: Position) -> int:
    """Mark-to-last-price P&L of the open quantity, scale 16: market value minus cost basis."""
    return position.quantity * position.last_price - position.cost_basis


def limit_usage_percent(exposure: int, limit: int) -> str | None:
    """``exposure`` (scale 16) as a percentage of ``limit`` (a scale-8 DECIMAL config value),
    to 2 places half-even; None when the limit is not positive."""
    if limit <= 0:
        return None
    return format_fixed(div_half_even(exposure * 100 * 100, limit * ONE), 2)


def _p(value: int | None) -> str | None:
    return None if value is None else format_fixed(value, SCALE)


def _pp(value: int) -> str:
    return format_fixed(value, PRODUCT_SCALE)


def order_to_dict(o: Order) -> dict[str, Any]:
    return {
        "order_id": o.order_id,
        "account_id": o.account_id,
        "symbol": o.symbol,
        "side": o.side,
        "order_type": o.order_type,
        "time_in_force": o.time_in_force,
        "limit_price": _p(o.limit_price),
        "quantity": _p(o.quantity),
        "filled": _p(o.filled),
        "leaves": _p(leaves_quantity(o)),
        "filled_notional": _pp(o.filled_notional),
        "average_fill_price": _p(average_fill_price(o)),
        "status": o.status,
        "client_order_id": o.client_order_id,
        "event_count": o.event_count,
        "last_offset": o.last_offset,
        "submitted_limit_price": _p(o.submitted_limit_price),
        "submitted_quantity": _p(o.submitted_quantity),
    }


def fill_to_dict(f: FillRecord) -> dict[str, Any]:
    return {"exec_id": f.exec_id, "order_id": f.order_id}


def position_to_dict(p: Position) -> dict[str, Any]:
    return {
        "account_id": p.account_id,
        "symbol": p.symbol,
        "quantity": _p(p.quantity),
        "cost_basis": _pp(p.cost_basis),
        "average_cost": _p(average_cost(p)),
        "realized_pnl": _pp(p.realized_pnl),
        "fees": _p(p.fees),
        "last_price": _p(p.last_price),
        "market_value": _pp(market_value(p)),
        "unrealized_pnl": _pp(unrealized_pnl(p)),
    }


def balance_to_dict(b: Balance) -> dict[str, Any]:
    return {"account_id": b.account_id, "currency": b.currency, "amount": _p(b.amount)}


def risk_to_dict(r: Risk) -> dict[str, Any]:
    return {
        "account_id": r.account_id,
        "gross_exposure": _pp(r.gross_exposure),
        "net_exposure": _pp(r.net_exposure),
        "realized_pnl": _pp(r.realized_pnl),
        "open_order_notional": _pp(r.open_order_notional),
        "fees": _p(r.fees),
    }


def config_value_text(c: ConfigEntry) -> bool | int | str:
    """The value as a person reads it: DECIMAL as an exact decimal string, the others as stored."""
    if c.value_type == ConfigValueType.DECIMAL and type(c.value) is int:
        return format_fixed(c.value, SCALE)
    return c.value


def config_to_dict(c: ConfigEntry) -> dict[str, Any]:
    return {
        "key": c.key,
        "value_type": c.value_type,
        "value": config_value_text(c),
        "version": c.version,
        "changed_by": c.changed_by,
        "occurred_at": c.occurred_at,
        "offset": c.offset,
    }


def anomaly_to_dict(a: Anomaly) -> dict[str, Any]:
    return {
        "partition": a.partition,
        "offset": a.offset,
        "event_id": a.event_id,
        "event_type": a.event_type,
        "kind": a.kind,
        "benign": a.benign,
        "detail": a.detail,
    }


_RENDERERS: Final[dict[type, Callable[[Any], dict[str, Any]]]] = {
    Order: order_to_dict,
    FillRecord: fill_to_dict,
    Position: position_to_dict,
    Balance: balance_to_dict,
    Risk: risk_to_dict,
    ConfigEntry: config_to_dict,
    Anomaly: anomaly_to_dict,
}


def to_dict(entity: Entity) -> dict[str, Any]:
    """Any entity as a JSON-ready dict (amounts as exact decimal strings, derived figures included)."""
    return _RENDERERS[type(entity)](entity)
