"""Typed builders: the only way rewind's own code makes an event, and the gate every event passes.

One function per event type, keyword-only arguments, returning the event ``dict`` in the decoded form
of ``docs/events.md`` (fields in schema order). Every field is checked against the contract, and a
violation raises ``ValueError`` naming the type and field, what was expected and what was given, e.g.
``Fill.quantity must be > 0 (scale-8 integer), got 0``. So an event that a builder returned is valid,
and :func:`validate_event` runs an arbitrary dict through the same builder before it may be produced.

Fixed-point arguments take a scale-8 ``int`` (``1_250_000_000``) or a human decimal as ``str`` or
``Decimal`` (``"12.50"``), converted exactly; floats are refused.

Defaults: ``event_id`` is a fresh UUID4 everywhere. ``occurred_at`` (microseconds) defaults to now
only for events whose source time *is* the moment they are emitted: ``OrderSubmitted``,
``PositionAdjusted``, ``BalanceChanged``, ``ConfigChanged``. Events a venue reports (accept, reject,
replace, cancel, expiry, fill) must carry the venue's time, so there it is required.
"""

from __future__ import annotations

import inspect
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn

from producers.fixed_point import INT64_MAX, FixedInput, to_fixed

Event = dict[str, Any]


class BuiltEvent(dict[str, Any]):
    """An event as a builder returned it: valid by construction, and read-only so it stays valid.

    Every builder returns one. Because nothing can change it afterwards, :class:`EventProducer`
    encodes it without checking the builder's rules a second time. It compares, prints and
    serializes as a plain ``dict``; ``dict(event)``, ``{**event}``, ``copy.copy`` and pickling give a
    plain, mutable ``dict``, which is checked again like any other input. (Calling ``dict``'s own
    methods on it, ``dict.__setitem__(event, ...)``, bypasses this and is not supported.)
    """

    __slots__ = ()

    def _refuse(self, *_args: object, **_kwargs: object) -> NoReturn:
        raise TypeError(
            f"a built {self.get('event_type', 'event')} is read-only; to change a field, call its "
            "builder again (or copy it with dict(event); the copy is validated again when produced)"
        )

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (dict(self),)


SIDES: Final = ("BUY", "SELL")
ORDER_TYPES: Final = ("LIMIT", "MARKET")
TIMES_IN_FORCE: Final = ("DAY", "GTC", "IOC", "FOK")
LIQUIDITY: Final = ("MAKER", "TAKER")
ADJUST_MODES: Final = ("SET", "DELTA")
ADJUST_REASONS: Final = ("RECONCILIATION", "START_OF_DAY", "TRANSFER", "CORPORATE_ACTION")
BALANCE_REASONS: Final = ("DEPOSIT", "WITHDRAWAL", "FEE", "TRADE_SETTLEMENT", "INTEREST", "ADJUSTMENT")
CONFIG_VALUE_TYPES: Final = ("BOOLEAN", "INTEGER", "DECIMAL", "STRING")
DESK_WIDE: Final = "*"

# occurred_at plausibility: microseconds between 1973-03-03 and 2100-01-01 (catches s/ms mix-ups).
MIN_OCCURRED_AT: Final = 10**14
MAX_OCCURRED_AT: Final = 4_102_444_800 * 10**6
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
MIC_RE = re.compile(r"^[A-Z0-9]{4}$")
_NAME = re.compile(r"\S+")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def now_micros() -> int:
    """The wall clock in microseconds since the epoch: the default ``occurred_at``."""
    return time.time_ns() // 1000


def _text(owner: str, name: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{owner}.{name} must be a non-empty string, got {value!r}")
    if value != value.strip():
        raise ValueError(f"{owner}.{name} must not start or end with whitespace, got {value!r}")
    return value


def _name(owner: str, name: str, value: object) -> str:
    if type(value) is str and _NAME.fullmatch(value):
        return value
    text = _text(owner, name, value)
    raise ValueError(f"{owner}.{name} must not contain whitespace, got {text!r}")


def _account(owner: str, value: object) -> str:
    account = _name(owner, "account_id", value)
    if account == DESK_WIDE:
        raise ValueError(f"{owner}.account_id '*' is reserved for desk-wide ConfigChanged events")
    return account


def _choice(owner: str, name: str, value: object, symbols: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in symbols:
        raise ValueError(f"{owner}.{name} must be one of {', '.join(symbols)}, got {value!r}")
    return value


def _event_id(owner: str, value: object) -> str:
    if value is None:
        return str(uuid.uuid4())
    if type(value) is not str or not UUID_RE.fullmatch(value):
        raise ValueError(f"{owner}.event_id must be a lowercase canonical UUID string, got {value!r}")
    return value


def _occurred_at(owner: str, value: object, *, default_now: bool) -> int:
    if value is None:
        if default_now:
            return now_micros()
        raise ValueError(
            f"{owner}.occurred_at is required: the source's time in microseconds since the epoch"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{owner}.occurred_at must be an int of microseconds since the epoch, got {type(value).__name__}"
        )
    if not MIN_OCCURRED_AT <= value < MAX_OCCURRED_AT:
        raise ValueError(
            f"{owner}.occurred_at must be microseconds since the epoch between 1973 and 2100, got {value} "
            "(seconds or milliseconds by mistake?)"
        )
    return value


def _fixed(owner: str, name: str, value: object, rule: str) -> int:
    field = f"{owner}.{name}"
    number = to_fixed(value, field=field)
    ok = {">0": number > 0, ">=0": number >= 0, "!=0": number != 0, "any": True}[rule]
    if not ok:
        wanted = {">0": "> 0", ">=0": ">= 0", "!=0": "non-zero"}[rule]
        raise ValueError(f"{field} must be {wanted} (scale-8 integer), got {number}")
    return number


def _optional_fixed(owner: str, name: str, value: object, rule: str) -> int | None:
    return None if value is None else _fixed(owner, name, value, rule)


def _common(
    owner: str,
    *,
    event_id: str | None,
    occurred_at: int | None,
    account_id: str,
    source: str,
    default_now: bool,
) -> Event:
    return {
        "event_id": _event_id(owner, event_id),
        "event_type": owner,
        "occurred_at": _occurred_at(owner, occurred_at, default_now=default_now),
        "account_id": account_id,
        "source": _name(owner, "source", source),
    }


def order_submitted(
    *,
    account_id: str,
    order_id: str,
    client_order_id: str,
    symbol: str,
    side: str,
    order_type: str,
    quantity: FixedInput,
    time_in_force: str,
    source: str,
    limit_price: FixedInput | None = None,
    event_id: str | None = None,
    occurred_at: int | None = None,
) -> BuiltEvent:
    """A new order: ``limit_price`` is required (> 0) for LIMIT and must be None for MARKET."""
    o = "OrderSubmitted"
    event = _common(
        o,
        event_id=event_id,
        occurred_at=occurred_at,
        account_id=_account(o, account_id),
        source=source,
        default_now=True,
    )
    kind = _choice(o, "order_type", order_type, ORDER_TYPES)
    if kind == "LIMIT" and limit_price is None:
        raise ValueError(f"{o}.limit_price is required for a LIMIT order")
    if kind == "MARKET" and limit_price is not None:
        raise ValueError(f"{o}.limit_price must be None for a MARKET order, got {limit_price!r}")
    event.update(
        order_id=_name(o, "order_id", order_id),
        client_order_id=_name(o, "client_order_id", client_order_id),
        symbol=_name(o, "symbol", symbol),
        side=_choice(o, "side", side, SIDES),
        order_type=kind,
        limit_price=_optional_fixed(o, "limit_price", limit_price, ">0"),
        quantity=_fixed(o, "quantity", quantity, ">0"),
        time_in_force=_choice(o, "time_in_force", time_in_force, TIMES_IN_FORCE),
    )
    return BuiltEvent(event)


def _order_only(
    o: str, account_id: str, order_id: str, occurred_at: int, source: str, event_id: str | None
) -> BuiltEvent:
    """An order event that carries nothing but the order it refers to."""
    event = _common(
        o,
        event_id=event_id,
        occurred_at=occurred_at,
        account_id=_account(o, account_id),
        source=source,
        default_now=False,
    )
    event["order_id"] = _name(o, "order_id", order_id)
    return BuiltEvent(event)


def order_accepted(
    *, account_id: str, order_id: str, occurred_at: int, source: str, event_id: str | None = None
) -> BuiltEvent:
    """The venue acknowledged the order."""
    return _order_only("OrderAccepted", account_id, order_id, occurred_at, source, event_id)


def order_rejected(
    *,
    account_id: str,
    order_id: str,
    reason: str,
    occurred_at: int,
    source: str,
    reject_code: str | None = None,
    event_id: str | None = None,
) -> BuiltEvent:
    """The venue or OMS refused the order; ``reject_code`` is its machine-readable code, if any."""
    o = "OrderRejected"
    event = _common(
        o,
        event_id=event_id,
        occurred_at=occurred_at,
        account_id=_account(o, account_id),
        source=source,
        default_now=False,
    )
    event.update(
        order_id=_name(o, "order_id", order_id),
        reason=_text(o, "reason", reason),
        reject_code=_text(o, "reject_code", reject_code, optional=True),
    )
    return BuiltEvent(event)


def order_replaced(
    *,
    account_id: str,
    order_id: str,
    occurred_at: int,
    source: str,
    new_limit_price: FixedInput | None = None,
    new_quantity: FixedInput | None = None,
    event_id: str | None = None,
) -> BuiltEvent:
    """The order's limit price and/or quantity changed; at least one of them must be given."""
    o = "OrderReplaced"
    if new_limit_price is None and new_quantity is None:
        raise ValueError(f"{o}.new_limit_price or {o}.new_quantity must be set (both are None)")
    event = _common(
        o,
        event_id=event_id,
        occurred_at=occurred_at,
        account_id=_account(o, account_id),
        source=source,
        default_now=False,
    )
    event.update(
        order_id=_name(o, "order_id", order_id),
        new_limit_price=_optional_fixed(o, "new_limit_price", new_limit_price, ">0"),
        new_quantity=_optional_fixed(o, "new_quantity", new_quantity, ">0"),
    )
    return BuiltEvent(event)


def order_canceled(
    *,
    account_id: str,
    order_id: str,
    occurred_at: int,
    source: str,
    reason: str | None = None,
    event_id: str | None = None,
) -> BuiltEvent:
    """The order was canceled (terminal)."""
    o = "OrderCanceled"
    event = _common(
        o,
        event_id=event_id,
        occurred_at=occurred_at,
        account_id=_account(o, account_id),
        source=source,
        default_now=False,
    )
    event.update(order_id=_name(o, "order_id", order_id), reason=_text(o, "reason", reason, optional=True))
    return BuiltEvent(event)


def order_expired(
    *, account_id: str, order_id: str, occurred_at: int, source: str, event_id: str | None = None
) -> BuiltEvent:
    """The order expired (terminal)."""
    return _order_only("OrderExpired", account_id, order_id, occurred_at, source, event_id)


def fill(
    *,
    account_id: str,
    exec_id: str,
    order_id: str,
    quantity: FixedInput,
    price: FixedInput,
    fee: FixedInput,
    liquidity: str,
    occurred_at: int,
    source: str,
    venue: str | None = None,
    event_id: str | None = None,
) -> BuiltEvent:
    """An execution: ``quantity`` and ``price`` > 0, ``fee`` >= 0, ``venue`` a 4-character MIC or None."""
    o = "Fill"
    event = _common(
        o,
        event_id=event_id,
        occurred_at=occurred_at,
        account_id=_account(o, account_id),
        source=source,
        default_now=False,
    )
    if venue is not None and (not isinstance(venue, str) or not MIC_RE.match(venue)):
        raise ValueError(f"{o}.venue must be an ISO 10383 MIC (4 characters A-Z, 0-9) or None, got {venue!r}")
    event.update(
        exec_id=_name(o, "exec_id", exec_id),
        order_id=_name(o, "order_id", order_id),
        quantity=_fixed(o, "quantity", quantity, ">0"),
        price=_fixed(o, "price", price, ">0"),
        fee=_fixed(o, "fee", fee, ">=0"),
        liquidity=_choice(o, "liquidity", liquidity, LIQUIDITY),
        venue=venue,
    )
    return BuiltEvent(event)


def position_adjusted(
    *,
    account_id: str,
    symbol: str,
    mode: str,
    quantity: FixedInput,
    price: FixedInput,
    reason: str,
    source: str,
    event_id: str | None = None,
    occurred_at: int | None = None,
) -> BuiltEvent:
    """SET the position to ``quantity`` (signed, 0 = flat) at cost ``price``, or trade a DELTA."""
    o = "PositionAdjusted"
    event = _common(
        o,
        event_id=event_id,
        occurred_at=occurred_at,
        account_id=_account(o, account_id),
        source=source,
        default_now=True,
    )
    chosen = _choice(o, "mode", mode, ADJUST_MODES)
    event.update(
        symbol=_name(o, "symbol", symbol),
        mode=chosen,
        quantity=_fixed(o, "quantity", quantity, "!=0" if chosen == "DELTA" else "any"),
        price=_fixed(o, "price", price, ">0"),
        reason=_choice(o, "reason", reason, ADJUST_REASONS),
    )
    return BuiltEvent(event)


def balance_changed(
    *,
    account_id: str,
    currency: str,
    amount: FixedInput,
    reason: str,
    source: str,
    event_id: str | None = None,
    occurred_at: int | None = None,
) -> BuiltEvent:
    """Cash in or out: ``amount`` signed and non-zero, ``currency`` ISO 4217 (``USD``)."""
    o = "BalanceChanged"
    event = _common(
        o,
        event_id=event_id,
        occurred_at=occurred_at,
        account_id=_account(o, account_id),
        source=source,
        default_now=True,
    )
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        raise ValueError(f"{o}.currency must be 3 upper-case letters (ISO 4217, e.g. USD), got {currency!r}")
    event.update(
        currency=currency,
        amount=_fixed(o, "amount", amount, "!=0"),
        reason=_choice(o, "reason", reason, BALANCE_REASONS),
    )
    return BuiltEvent(event)


def config_value(value_type: str, value: object, *, field: str = "ConfigChanged.value") -> bool | int | str:
    """``value`` checked against ``value_type``: BOOLEAN a bool, INTEGER an int, DECIMAL a scale-8 int
    (or a decimal string), STRING a str."""
    if value_type == "BOOLEAN":
        if type(value) is not bool:
            raise ValueError(f"{field} must be true or false for BOOLEAN, got {value!r}")
        return value
    if value_type == "INTEGER":
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > INT64_MAX:
            raise ValueError(f"{field} must be a 64-bit integer for INTEGER, got {value!r}")
        return value
    if value_type == "DECIMAL":
        return to_fixed(value, field=field)
    if value_type == "STRING":
        if not isinstance(value, str):
            raise ValueError(f"{field} must be a string for STRING, got {value!r}")
        return value
    raise ValueError(
        f"ConfigChanged.value_type must be one of {', '.join(CONFIG_VALUE_TYPES)}, got {value_type!r}"
    )


def config_changed(
    *,
    key: str,
    value_type: str,
    value: bool | int | str | FixedInput,
    version: int,
    changed_by: str,
    source: str,
    event_id: str | None = None,
    occurred_at: int | None = None,
    account_id: str = DESK_WIDE,
) -> BuiltEvent:
    """A desk-wide config value: ``version`` > 0 and greater than the key's stored version to apply."""
    o = "ConfigChanged"
    if account_id != DESK_WIDE:
        raise ValueError(f"{o}.account_id must be '*' (config is desk-wide), got {account_id!r}")
    event = _common(
        o, event_id=event_id, occurred_at=occurred_at, account_id=DESK_WIDE, source=source, default_now=True
    )
    kind = _choice(o, "value_type", value_type, CONFIG_VALUE_TYPES)
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version <= INT64_MAX:
        raise ValueError(f"{o}.version must be an integer > 0, got {version!r}")
    event.update(
        key=_name(o, "key", key),
        value_type=kind,
        value=config_value(kind, value),
        version=version,
        changed_by=_name(o, "changed_by", changed_by),
    )
    return BuiltEvent(event)


BUILDERS: Final[Mapping[str, Callable[..., BuiltEvent]]] = {
    "OrderSubmitted": order_submitted,
    "OrderAccepted": order_accepted,
    "OrderRejected": order_rejected,
    "OrderReplaced": order_replaced,
    "OrderCanceled": order_canceled,
    "OrderExpired": order_expired,
    "Fill": fill,
    "PositionAdjusted": position_adjusted,
    "BalanceChanged": balance_changed,
    "ConfigChanged": config_changed,
}


def _signature(build: Callable[..., BuiltEvent]) -> tuple[frozenset[str], tuple[str, ...]]:
    parameters = inspect.signature(build).parameters.values()
    return (
        frozenset(p.name for p in parameters),
        tuple(p.name for p in parameters if p.default is inspect.Parameter.empty),
    )


_SIGNATURES: Final = {name: _signature(build) for name, build in BUILDERS.items()}


def validate_event(event: Mapping[str, Any]) -> BuiltEvent:
    """``event`` re-checked by its type's builder; returns the normalized event or raises ValueError.

    Unlike a builder call, nothing is defaulted: ``event_id`` and ``occurred_at`` must be present, so a
    retried emit of the same dict is the same event. A :class:`BuiltEvent` is returned as it is.
    """
    if type(event) is BuiltEvent:
        return event
    type_name = event.get("event_type")
    if not isinstance(type_name, str) or type_name not in BUILDERS:
        raise ValueError(f"event_type must be one of {', '.join(BUILDERS)}, got {type_name!r}")
    allowed, required = _SIGNATURES[type_name]
    fields = dict(event)
    del fields["event_type"]
    if not allowed.issuperset(fields):
        unknown = ", ".join(map(repr, sorted(set(fields) - allowed)))
        raise ValueError(f"{type_name} has no field {unknown}")
    for name in ("event_id", "occurred_at"):
        if fields.get(name) is None:
            raise ValueError(f"{type_name}.{name} is required in an event to be produced")
    for name in required:
        if name not in fields:
            raise ValueError(f"{type_name}.{name} is required")
    return BUILDERS[type_name](**fields)
