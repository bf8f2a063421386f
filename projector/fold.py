"""The fold: one decoded event applied to one partition's state (docs/state.md is its specification).

Guarantees:

- **Pure and deterministic**: the only inputs are the state, the event and its (partition, offset).
  No clock, randomness, I/O or module state is read or written.
- **All or nothing**: an event that cannot apply is detected before anything changes; the function
  returns an :class:`~projector.model.Anomaly` and the state is untouched. The caller applies the
  policy (record and continue, or halt); see :mod:`projector.policy`. Benign duplicates are returned
  as anomalies too, with ``anomaly.benign`` true.
- **Invariants stop loudly**: every new order, position and risk value is checked before it is
  stored; a violation raises :class:`InvariantError` with nothing written, and the batch must be
  discarded.
- **Contract errors are not anomalies**: an unknown ``event_type`` or enum symbol, or an event on the
  wrong topic, means the codec and the fold disagree, and raises :class:`EventContractError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from projector.encoding import MAX_KEY_PART_BYTES
from projector.model import (
    AdjustMode,
    Anomaly,
    AnomalyKind,
    Balance,
    ConfigEntry,
    ConfigValueType,
    FillRecord,
    Order,
    OrderStatus,
    OrderType,
    Position,
    Risk,
    Side,
    TimeInForce,
)
from projector.state import ConfigState, PartitionState
from schemas.fixed import SCALE, div_half_even, format_fixed

Event = Mapping[str, Any]
"""A decoded event as docs/events.md describes it: field name -> int, str, bool or None."""

Handler = Callable[[PartitionState, Event, int, int], Anomaly | None]

CONFIG_TOPIC_PARTITION: Final = 0
"""The config topic's one partition: the partition number its anomalies carry."""

_NEW: Final = OrderStatus.NEW
_ACCEPTED: Final = OrderStatus.ACCEPTED
_PARTIALLY_FILLED: Final = OrderStatus.PARTIALLY_FILLED
_FILLED: Final = OrderStatus.FILLED
_OPEN: Final = OrderStatus.OPEN
_TERMINAL: Final = OrderStatus.TERMINAL
_BUY: Final = Side.BUY
_LIMIT: Final = OrderType.LIMIT
_K: Final = AnomalyKind


class InvariantError(Exception):
    """The fold computed a state that breaks an invariant of docs/state.md: a bug, never data.

    Raised before the value is stored. The batch in progress must be thrown away and the projector
    must stop; retrying cannot help.
    """


class EventContractError(ValueError):
    """An event the fold cannot interpret at all (unknown type or enum symbol, or the wrong topic)."""


def _fmt(value: int) -> str:
    return format_fixed(value, SCALE)


def _anomaly(event: Event, partition: int, offset: int, kind: str, detail: str) -> Anomaly:
    return Anomaly(partition, offset, event["event_id"], event["event_type"], kind, detail)


_KEY_PART_CHARS_ALWAYS_FIT: Final = MAX_KEY_PART_BYTES // 4
"""A string of at most this many characters is a short enough key part (UTF-8 takes at most 4 bytes
a character), so only longer ones are encoded to be measured."""


def _id_problem(field: str, value: str) -> str | None:
    """Why ``value`` cannot be a key part (empty, NUL, longer than :data:`MAX_KEY_PART_BYTES` UTF-8
    bytes), or None."""
    if (
        value
        and "\x00" not in value
        and (len(value) <= _KEY_PART_CHARS_ALWAYS_FIT or len(value.encode()) <= MAX_KEY_PART_BYTES)
    ):
        return None
    return f"{field} must be 1 to {MAX_KEY_PART_BYTES} UTF-8 bytes without NUL"


def _enum(field: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise EventContractError(
            f"{field} {value!r} is not one of {sorted(allowed)}: codec and fold disagree"
        )


# Invariants


def _check_order(order_id: str, quantity: int, filled: int, status: str) -> None:
    if not 0 <= filled <= quantity or (status == _FILLED) != (filled == quantity):
        raise InvariantError(f"order {order_id}: filled {filled}, quantity {quantity}, status {status}")


def _check_position(account_id: str, symbol: str, quantity: int, basis: int) -> None:
    if not ((quantity > 0 and basis > 0) or (quantity < 0 and basis < 0) or (quantity == 0 and basis == 0)):
        raise InvariantError(f"position {account_id}/{symbol}: quantity {quantity} with cost basis {basis}")


def _check_risk(account_id: str, gross: int, net: int, open_notional: int, fees: int) -> None:
    if gross < (net if net >= 0 else -net) or open_notional < 0 or fees < 0:
        raise InvariantError(
            f"risk {account_id}: gross {gross}, net {net}, open-order notional {open_notional}, fees {fees}"
        )


# Position arithmetic


def _trade(quantity: int, basis: int, realized: int, traded: int, price: int) -> tuple[int, int, int]:
    """(quantity, basis, realized) after trading ``traded`` (signed, scale 8) at ``price``."""
    if quantity == 0 or (quantity > 0) == (traded > 0):
        return quantity + traded, basis + traded * price, realized
    held = quantity if quantity > 0 else -quantity
    size = traded if traded > 0 else -traded
    closed = size if size < held else held
    removed = div_half_even(basis * closed, held)
    realized += (closed * price if quantity > 0 else -closed * price) - removed
    basis -= removed
    if size > closed:
        if basis != 0:
            raise InvariantError(f"closing {held} left cost basis {basis}")
        rest = traded + closed if quantity > 0 else traded - closed
        return rest, rest * price, realized
    return quantity + (closed if traded > 0 else -closed), basis, realized


def _new_risk(account_id: str) -> Risk:
    return Risk(account_id, 0, 0, 0, 0, 0)


def _move_position(
    state: PartitionState,
    position: Position | None,
    account_id: str,
    symbol: str,
    quantity: int,
    basis: int,
    realized: int,
    fee: int,
    price: int,
    risk: Risk,
    open_delta: int,
) -> None:
    """Check then store a position's new values and the account's risk that follows from them."""
    if position is None:
        old_quantity = old_realized = old_exposure = 0
    else:
        old_quantity, old_realized = position.quantity, position.realized_pnl
        old_exposure = old_quantity * position.last_price
    new_exposure = quantity * price
    gross = (
        risk.gross_exposure
        + (new_exposure if new_exposure >= 0 else -new_exposure)
        - (old_exposure if old_exposure >= 0 else -old_exposure)
    )
    net = risk.net_exposure + new_exposure - old_exposure
    open_notional = risk.open_order_notional + open_delta
    fees = risk.fees + fee
    _check_position(account_id, symbol, quantity, basis)
    _check_risk(account_id, gross, net, open_notional, fees)
    if position is None:
        state.put_position(Position(account_id, symbol, quantity, basis, realized, fee, price))
    else:
        position.quantity = quantity
        position.cost_basis = basis
        position.realized_pnl = realized
        position.fees += fee
        position.last_price = price
        state.put_position(position)
    risk.gross_exposure = gross
    risk.net_exposure = net
    risk.realized_pnl += realized - old_realized
    risk.open_order_notional = open_notional
    risk.fees = fees
    state.put_risk(risk)


def _account_risk(state: PartitionState, account_id: str) -> Risk:
    risk = state.risk(account_id)
    if risk is None:
        raise InvariantError(f"account {account_id} has orders but no risk row")
    return risk


# Orders


def _open_order(state: PartitionState, event: Event, partition: int, offset: int) -> Order | Anomaly:
    """The live order an order event refers to, or the anomaly that stops the event."""
    order_id = event["order_id"]
    problem = _id_problem("order_id", order_id)
    if problem is not None:
        return _anomaly(event, partition, offset, _K.INVALID_EVENT, problem)
    order = state.order(order_id)
    if order is None:
        return _anomaly(event, partition, offset, _K.UNKNOWN_ORDER, f"no order {order_id}")
    if event["account_id"] != order.account_id:
        return _anomaly(
            event,
            partition,
            offset,
            _K.ACCOUNT_MISMATCH,
            f"order {order_id} belongs to account {order.account_id}",
        )
    if order.status in _TERMINAL:
        return _anomaly(
            event, partition, offset, _K.TERMINAL_ORDER, f"order {order_id} is already {order.status}"
        )
    return order


def _submitted(state: PartitionState, event: Event, partition: int, offset: int) -> Anomaly | None:
    order_id = event["order_id"]
    account_id = event["account_id"]
    symbol = event["symbol"]
    side = event["side"]
    order_type = event["order_type"]
    limit_price = event["limit_price"]
    quantity = event["quantity"]
    tif = event["time_in_force"]
    _enum("side", side, Side.ALL)
    _enum("order_type", order_type, OrderType.ALL)
    _enum("time_in_force", tif, TimeInForce.ALL)
    problem = (
        _id_problem("order_id", order_id)
        or _id_problem("account_id", account_id)
        or _id_problem("symbol", symbol)
    )
    if problem is None:
        if quantity <= 0:
            problem = "quantity must be > 0"
        elif order_type == _LIMIT:
            if limit_price is None or limit_price <= 0:
                problem = "a LIMIT order needs a limit_price > 0"
        elif limit_price is not None:
            problem = "a MARKET order must not have a limit_price"
    if problem is not None:
        return _anomaly(event, partition, offset, _K.INVALID_EVENT, problem)
    client_order_id = event["client_order_id"]
    existing = state.order(order_id)
    if existing is not None:
        differences = [
            name
            for name, stored, received in (
                ("account_id", existing.account_id, account_id),
                ("client_order_id", existing.client_order_id, client_order_id),
                ("symbol", existing.symbol, symbol),
                ("side", existing.side, side),
                ("order_type", existing.order_type, order_type),
                ("limit_price", existing.submitted_limit_price, limit_price),
                ("quantity", existing.submitted_quantity, quantity),
                ("time_in_force", existing.time_in_force, tif),
            )
            if stored != received
        ]
        if differences:
            detail = f"order {order_id} exists with a different {', '.join(differences)}"
            return _anomaly(event, partition, offset, _K.ORDER_ID_CONFLICT, detail)
        detail = f"order {order_id} was already submitted with the same content"
        return _anomaly(event, partition, offset, _K.DUPLICATE_ORDER, detail)
    _check_order(order_id, quantity, 0, _NEW)
    risk = state.risk(account_id)
    if risk is None:
        risk = _new_risk(account_id)
    elif limit_price is None:
        risk = None
    state.put_order(
        Order(
            order_id,
            account_id,
            symbol,
            side,
            order_type,
            tif,
            limit_price,
            quantity,
            0,
            0,
            _NEW,
            client_order_id,
            1,
            offset,
            limit_price,
            quantity,
        )
    )
    if risk is not None:
        if limit_price is not None:
            risk.open_order_notional += quantity * limit_price
        state.put_risk(risk)
    return None


def _transition(allowed: frozenset[str], target: str) -> Handler:
    """A handler moving a live order from ``allowed`` states to ``target`` (accept/reject/cancel/expire)."""
    releases = target in _TERMINAL

    def handle(state: PartitionState, event: Event, partition: int, offset: int) -> Anomaly | None:
        order = _open_order(state, event, partition, offset)
        if isinstance(order, Anomaly):
            return order
        if order.status not in allowed:
            detail = f"{event['event_type']} is not allowed on an order in {order.status}"
            return _anomaly(event, partition, offset, _K.INVALID_TRANSITION, detail)
        _check_order(order.order_id, order.quantity, order.filled, target)
        if releases and order.limit_price is not None:
            risk = _account_risk(state, order.account_id)
            open_notional = risk.open_order_notional - (order.quantity - order.filled) * order.limit_price
            _check_risk(risk.account_id, risk.gross_exposure, risk.net_exposure, open_notional, risk.fees)
            risk.open_order_notional = open_notional
            state.put_risk(risk)
        order.status = target
        order.event_count += 1
        order.last_offset = offset
        state.put_order(order)
        return None

    return handle


def _replaced(state: PartitionState, event: Event, partition: int, offset: int) -> Anomaly | None:
    new_limit = event["new_limit_price"]
    new_quantity = event["new_quantity"]
    problem = None
    if new_limit is None and new_quantity is None:
        problem = "new_limit_price or new_quantity must be set"
    elif new_quantity is not None and new_quantity <= 0:
        problem = "new_quantity must be > 0"
    elif new_limit is not None and new_limit <= 0:
        problem = "new_limit_price must be > 0"
    if problem is not None:
        return _anomaly(event, partition, offset, _K.INVALID_EVENT, problem)
    order = _open_order(state, event, partition, offset)
    if isinstance(order, Anomaly):
        return order
    if new_limit is not None and order.limit_price is None:
        detail = "a MARKET order has no limit price to replace"
        return _anomaly(event, partition, offset, _K.INVALID_REPLACE, detail)
    quantity = order.quantity if new_quantity is None else new_quantity
    filled = order.filled
    if quantity < filled:
        detail = f"new quantity {_fmt(quantity)} is below the filled quantity {_fmt(filled)}"
        return _anomaly(event, partition, offset, _K.INVALID_REPLACE, detail)
    limit = order.limit_price if new_limit is None else new_limit
    status = _FILLED if quantity == filled else order.status
    _check_order(order.order_id, quantity, filled, status)
    if limit is not None:
        old_limit = order.limit_price
        assert old_limit is not None
        risk = _account_risk(state, order.account_id)
        open_notional = (
            risk.open_order_notional + (quantity - filled) * limit - (order.quantity - filled) * old_limit
        )
        _check_risk(risk.account_id, risk.gross_exposure, risk.net_exposure, open_notional, risk.fees)
        risk.open_order_notional = open_notional
        state.put_risk(risk)
    order.quantity = quantity
    order.limit_price = limit
    order.status = status
    order.event_count += 1
    order.last_offset = offset
    state.put_order(order)
    return None


def _fill(state: PartitionState, event: Event, partition: int, offset: int) -> Anomaly | None:
    exec_id = event["exec_id"]
    order_id = event["order_id"]
    quantity = event["quantity"]
    price = event["price"]
    fee = event["fee"]
    problem = _id_problem("exec_id", exec_id) or _id_problem("order_id", order_id)
    if problem is None:
        if quantity <= 0:
            problem = "quantity must be > 0"
        elif price <= 0:
            problem = "price must be > 0"
        elif fee < 0:
            problem = "fee must be >= 0"
    if problem is not None:
        return _anomaly(event, partition, offset, _K.INVALID_EVENT, problem)
    seen = state.fill(exec_id)
    if seen is not None:
        if seen.order_id == order_id:
            return _anomaly(
                event, partition, offset, _K.DUPLICATE_FILL, f"exec_id {exec_id} was already applied"
            )
        detail = f"exec_id {exec_id} was already applied to order {seen.order_id}"
        return _anomaly(event, partition, offset, _K.EXEC_ID_CONFLICT, detail)
    order = _open_order(state, event, partition, offset)
    if isinstance(order, Anomaly):
        return order
    filled = order.filled + quantity
    if filled > order.quantity:
        detail = (
            f"fill of {_fmt(quantity)} on top of {_fmt(order.filled)} "
            f"exceeds the order quantity {_fmt(order.quantity)}"
        )
        return _anomaly(event, partition, offset, _K.OVERFILL, detail)
    status = _FILLED if filled == order.quantity else _PARTIALLY_FILLED
    _check_order(order_id, order.quantity, filled, status)
    account_id = order.account_id
    symbol = order.symbol
    position = state.position(account_id, symbol)
    traded = quantity if order.side == _BUY else -quantity
    if position is None:
        new_quantity, basis, realized = traded, traded * price, 0
    else:
        new_quantity, basis, realized = _trade(
            position.quantity, position.cost_basis, position.realized_pnl, traded, price
        )
    risk = _account_risk(state, account_id)
    limit = order.limit_price
    open_delta = 0 if limit is None else -quantity * limit
    _move_position(
        state, position, account_id, symbol, new_quantity, basis, realized, fee, price, risk, open_delta
    )
    order.filled = filled
    order.filled_notional += quantity * price
    order.status = status
    order.event_count += 1
    order.last_offset = offset
    state.put_order(order)
    state.put_fill(FillRecord(exec_id, order_id))
    return None


# Positions and balances


def _adjusted(state: PartitionState, event: Event, partition: int, offset: int) -> Anomaly | None:
    account_id = event["account_id"]
    symbol = event["symbol"]
    mode = event["mode"]
    quantity = event["quantity"]
    price = event["price"]
    _enum("mode", mode, _ADJUST_MODES)
    problem = _id_problem("account_id", account_id) or _id_problem("symbol", symbol)
    if problem is None:
        if price <= 0:
            problem = "price must be > 0"
        elif quantity == 0 and mode == AdjustMode.DELTA:
            problem = "a DELTA quantity must be non-zero"
    if problem is not None:
        return _anomaly(event, partition, offset, _K.INVALID_EVENT, problem)
    position = state.position(account_id, symbol)
    realized = 0 if position is None else position.realized_pnl
    if mode == AdjustMode.SET or position is None:
        new_quantity, basis = quantity, quantity * price
    else:
        new_quantity, basis, realized = _trade(
            position.quantity, position.cost_basis, realized, quantity, price
        )
    risk = state.risk(account_id)
    if risk is None:
        risk = _new_risk(account_id)
    _move_position(state, position, account_id, symbol, new_quantity, basis, realized, 0, price, risk, 0)
    return None


def _balance_changed(state: PartitionState, event: Event, partition: int, offset: int) -> Anomaly | None:
    account_id = event["account_id"]
    currency = event["currency"]
    amount = event["amount"]
    problem = _id_problem("account_id", account_id)
    if problem is None:
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()):
            problem = "currency must be 3 upper-case letters"
        elif amount == 0:
            problem = "amount must be non-zero"
    if problem is not None:
        return _anomaly(event, partition, offset, _K.INVALID_EVENT, problem)
    balance = state.balance(account_id, currency)
    if balance is None:
        state.put_balance(Balance(account_id, currency, amount))
    else:
        balance.amount += amount
        state.put_balance(balance)
    return None


def _config_on_events_topic(
    state: PartitionState, event: Event, partition: int, offset: int
) -> Anomaly | None:
    raise EventContractError(
        f"ConfigChanged at partition {partition} offset {offset} of the events topic: "
        "it belongs on the config topic"
    )


_ADJUST_MODES: Final = frozenset({AdjustMode.SET, AdjustMode.DELTA})

_HANDLERS: Final[dict[str, Handler]] = {
    "OrderSubmitted": _submitted,
    "OrderAccepted": _transition(frozenset({_NEW}), _ACCEPTED),
    "OrderRejected": _transition(frozenset({_NEW, _ACCEPTED}), OrderStatus.REJECTED),
    "OrderReplaced": _replaced,
    "OrderCanceled": _transition(_OPEN, OrderStatus.CANCELED),
    "OrderExpired": _transition(_OPEN, OrderStatus.EXPIRED),
    "Fill": _fill,
    "PositionAdjusted": _adjusted,
    "BalanceChanged": _balance_changed,
    "ConfigChanged": _config_on_events_topic,
}

EVENT_TYPES: Final = frozenset(_HANDLERS) - {"ConfigChanged"}
"""The event types :func:`apply_event` folds (the events topic)."""


def apply_event(state: PartitionState, event: Event, partition: int, offset: int) -> Anomaly | None:
    """Apply one events-topic event; return None, or the anomaly that left the state unchanged."""
    handler = _HANDLERS.get(event["event_type"])
    if handler is None:
        raise EventContractError(
            f"unknown event_type {event['event_type']!r} at partition {partition} offset {offset}: "
            "the codec and the fold disagree"
        )
    return handler(state, event, partition, offset)


_VALUE_TYPES: Final[dict[str, type]] = {
    ConfigValueType.BOOLEAN: bool,
    ConfigValueType.INTEGER: int,
    ConfigValueType.DECIMAL: int,
    ConfigValueType.STRING: str,
}


def apply_config(state: ConfigState, event: Event, offset: int) -> Anomaly | None:
    """Apply one ConfigChanged from the config topic; return None, or the anomaly (state unchanged)."""
    if event["event_type"] != "ConfigChanged":
        raise EventContractError(
            f"{event['event_type']!r} at offset {offset} of the config topic: "
            "only ConfigChanged belongs there"
        )
    key = event["key"]
    value_type = event["value_type"]
    value = event["value"]
    version = event["version"]
    _enum("value_type", value_type, ConfigValueType.ALL)
    problem = _id_problem("key", key)
    if problem is None:
        if version <= 0:
            problem = "version must be > 0"
        elif type(value) is not _VALUE_TYPES[value_type]:
            problem = f"value does not match value_type {value_type}"
    if problem is not None:
        return _anomaly(event, CONFIG_TOPIC_PARTITION, offset, _K.INVALID_EVENT, problem)
    entry = state.config(key)
    if entry is not None and version <= entry.version:
        detail = f"version {version} of {key} is not newer than the stored version {entry.version}"
        return _anomaly(event, CONFIG_TOPIC_PARTITION, offset, _K.STALE_CONFIG_VERSION, detail)
    changed_by = event["changed_by"]
    occurred_at = event["occurred_at"]
    if entry is None:
        state.put_config(ConfigEntry(key, value_type, value, version, changed_by, occurred_at, offset))
    else:
        entry.value_type = value_type
        entry.value = value
        entry.version = version
        entry.changed_by = changed_by
        entry.occurred_at = occurred_at
        entry.offset = offset
        state.put_config(entry)
    return None
