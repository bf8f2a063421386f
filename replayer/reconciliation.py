"""Reconciliation: rewind's positions, balances and open orders against an external statement.

:func:`compare` is pure: a :class:`~replayer.statement.Statement`, rewind's rows and the tolerances
in, a :class:`Reconciliation` out. No clock, no I/O, the same answer for the same input (breaks are
sorted). Guarantees:

- Every comparison is exact integer arithmetic on fractions (statement decimals, rewind's scale-8
  and scale-16 integers, tolerances); no float is involved. A value is within tolerance when
  ``|statement - rewind| <= tolerance``.
- A flat position (quantity 0) and an absent one are the same, on both sides: statements leave flat
  positions out, rewind keeps their rows. The same holds for a zero balance. Only open orders
  (NEW, ACCEPTED, PARTIALLY_FILLED) are compared with an open-orders statement.
- Every entity on either side is either a match or has at least one break; a position whose quantity
  and average price both differ has two breaks (``quantity_differs`` and ``price_differs``).
- Only the kinds of statement given are compared: balances without a balances file are not breaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from projector.model import Balance, Order, OrderStatus, Position
from replayer.statement import BALANCES, ORDERS, POSITIONS, BalanceLine, OrderLine, PositionLine, Statement
from rewind.ground.errors import InvariantViolation
from rewind.ground.settings import RECONCILE_FIELDS, Settings
from schemas.fixed import ONE, SCALE, div_half_even, format_fixed

MISSING_IN_REWIND: Final = "missing_in_rewind"
MISSING_IN_STATEMENT: Final = "missing_in_statement"
QUANTITY_DIFFERS: Final = "quantity_differs"
PRICE_DIFFERS: Final = "price_differs"
BALANCE_DIFFERS: Final = "balance_differs"
REMAINING_DIFFERS: Final = "remaining_differs"
BREAK_KINDS: Final = (
    MISSING_IN_REWIND,
    MISSING_IN_STATEMENT,
    QUANTITY_DIFFERS,
    PRICE_DIFFERS,
    BALANCE_DIFFERS,
    REMAINING_DIFFERS,
)
"""Every kind of break, in the order reports list them (``rewind_reconciliation_breaks{kind}``)."""

POSITION: Final = "position"
BALANCE: Final = "balance"
ORDER: Final = "order"

Ratio = tuple[int, int]
"""An exact number as (numerator, positive denominator)."""


def ratio_of(number: Decimal) -> Ratio:
    return number.as_integer_ratio()


def _within(a: Ratio, b: Ratio, tolerance: Ratio) -> bool:
    difference = abs(a[0] * b[1] - b[0] * a[1])
    return difference * tolerance[1] <= tolerance[0] * a[1] * b[1]


def _text(value: Ratio) -> str:
    """Exact decimal text of a ratio whose denominator divides a power of ten; else 8 places."""
    numerator, denominator = value
    for scale in range(0, 40):
        if (numerator * 10**scale) % denominator == 0:
            return format_fixed(numerator * 10**scale // denominator, scale)
    return format_fixed(div_half_even(numerator * ONE, denominator), SCALE)


@dataclass(frozen=True)
class Tolerances:
    """How far a statement may differ from rewind, per field, with overrides per instrument (a
    symbol for positions, a currency for balances)."""

    default: Mapping[str, Decimal]
    instruments: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)

    def of(self, name: str, instrument: str | None = None) -> Ratio:
        if instrument is not None:
            chosen = self.instruments.get(instrument, {}).get(name)
            if chosen is not None:
                return ratio_of(chosen)
        return ratio_of(self.default[name])

    def as_dict(self) -> dict[str, Any]:
        return {
            "default": {name: str(value) for name, value in self.default.items()},
            "instruments": {
                instrument: {name: str(value) for name, value in fields.items()}
                for instrument, fields in sorted(self.instruments.items())
            },
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Tolerances:
        """``reconcile.tolerance.*`` and ``reconcile.instruments`` (already checked by the settings)."""
        default = {name: Decimal(str(settings[f"reconcile.tolerance.{name}"])) for name in RECONCILE_FIELDS}
        instruments: dict[str, dict[str, Decimal]] = {}
        text = str(settings["reconcile.instruments"])
        for part in filter(None, text.split(",")):
            name, _eq, value = part.partition("=")
            instrument, _dot, field_name = name.rpartition(".")
            instruments.setdefault(instrument, {})[field_name] = Decimal(value)
        return cls(default, instruments)


@dataclass(frozen=True)
class Break:
    """One difference between the statement and rewind. Values are exact decimal text (None: the
    side has no such entity); ``line`` is the statement's line or row, when the statement has one."""

    kind: str
    entity: str
    account: str | None
    key: str
    statement: str | None
    rewind: str | None
    difference: str | None
    tolerance: str | None
    line: int | None

    @property
    def entity_key(self) -> tuple[str, str | None, str]:
        """What the break is about: (entity, account, symbol / currency / order id)."""
        return (self.entity, self.account, self.key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "entity": self.entity,
            "account": self.account,
            "key": self.key,
            "statement": self.statement,
            "rewind": self.rewind,
            "difference": self.difference,
            "tolerance": self.tolerance,
            "line": self.line,
        }


@dataclass(frozen=True)
class RewindRows:
    """Rewind's side: positions by (account, symbol), balances by (account, currency), orders by id
    (every order; only open ones are compared)."""

    positions: Mapping[tuple[str, str], Position]
    balances: Mapping[tuple[str, str], Balance]
    orders: Mapping[str, Order]


@dataclass
class Reconciliation:
    """The outcome: matches per entity, and the breaks in a stable order."""

    matches: dict[str, int]
    compared: dict[str, int]
    breaks: list[Break]

    @property
    def clean(self) -> bool:
        return not self.breaks

    def counts(self) -> dict[str, int]:
        """Breaks per kind, every kind present (0 when none)."""
        found = dict.fromkeys(BREAK_KINDS, 0)
        for item in self.breaks:
            found[item.kind] += 1
        return found


def _diff(statement: Ratio, rewind: Ratio) -> str:
    return _text((statement[0] * rewind[1] - rewind[0] * statement[1], statement[1] * rewind[1]))


def _positions(
    lines: Mapping[tuple[str, str], PositionLine],
    rows: Mapping[tuple[str, str], Position],
    tolerances: Tolerances,
    breaks: list[Break],
) -> tuple[int, int]:
    matches = compared = 0
    held = {key: p for key, p in rows.items() if p.quantity != 0}
    for key in sorted(set(held) | {k for k, line in lines.items() if line.quantity != 0}):
        account, symbol = key
        line = lines.get(key)
        position = held.get(key)
        compared += 1
        before = len(breaks)
        quantity_tolerance = tolerances.of("quantity", symbol)
        if line is None or line.quantity == 0:
            if position is None:
                raise InvariantViolation(f"position {account} {symbol} is on neither side")
            rewind_qty = (position.quantity, ONE)
            if _within((0, 1), rewind_qty, quantity_tolerance):
                matches += 1
                continue
            breaks.append(
                Break(
                    MISSING_IN_STATEMENT,
                    POSITION,
                    account,
                    symbol,
                    None,
                    _text(rewind_qty),
                    _diff((0, 1), rewind_qty),
                    _text(quantity_tolerance),
                    None if line is None else line.line,
                )
            )
            continue
        stated = (line.quantity, ONE)
        if position is None:
            if _within(stated, (0, 1), quantity_tolerance):
                matches += 1
                continue
            breaks.append(
                Break(
                    MISSING_IN_REWIND,
                    POSITION,
                    account,
                    symbol,
                    _text(stated),
                    None,
                    _diff(stated, (0, 1)),
                    _text(quantity_tolerance),
                    line.line,
                )
            )
            continue
        rewind_qty = (position.quantity, ONE)
        if not _within(stated, rewind_qty, quantity_tolerance):
            breaks.append(
                Break(
                    QUANTITY_DIFFERS,
                    POSITION,
                    account,
                    symbol,
                    _text(stated),
                    _text(rewind_qty),
                    _diff(stated, rewind_qty),
                    _text(quantity_tolerance),
                    line.line,
                )
            )
        if line.avg_price is not None:
            stated_price = ratio_of(line.avg_price)
            # cost basis (scale 16) / quantity (scale 8) = price; positive for longs and shorts
            average = (abs(position.cost_basis), abs(position.quantity) * ONE)
            price_tolerance = tolerances.of("avg_price", symbol)
            if not _within(stated_price, average, price_tolerance):
                breaks.append(
                    Break(
                        PRICE_DIFFERS,
                        POSITION,
                        account,
                        symbol,
                        _text(stated_price),
                        _text(average),
                        _diff(stated_price, average),
                        _text(price_tolerance),
                        line.line,
                    )
                )
        if len(breaks) == before:
            matches += 1
    return matches, compared


def _balances(
    lines: Mapping[tuple[str, str], BalanceLine],
    rows: Mapping[tuple[str, str], Balance],
    tolerances: Tolerances,
    breaks: list[Break],
) -> tuple[int, int]:
    matches = compared = 0
    held = {key: b for key, b in rows.items() if b.amount != 0}
    for key in sorted(set(held) | {k for k, line in lines.items() if line.amount != 0}):
        account, currency = key
        line = lines.get(key)
        balance = held.get(key)
        compared += 1
        stated = (0 if line is None else line.amount, ONE)
        ours = (0 if balance is None else balance.amount, ONE)
        tolerance = tolerances.of("balance", currency)
        if _within(stated, ours, tolerance):
            matches += 1
            continue
        kind = BALANCE_DIFFERS
        if line is None or line.amount == 0:
            kind = MISSING_IN_STATEMENT
        elif balance is None:
            kind = MISSING_IN_REWIND
        breaks.append(
            Break(
                kind,
                BALANCE,
                account,
                currency,
                None if kind == MISSING_IN_STATEMENT else _text(stated),
                None if kind == MISSING_IN_REWIND else _text(ours),
                _diff(stated, ours),
                _text(tolerance),
                None if line is None else line.line,
            )
        )
    return matches, compared


def remaining_of(order: Order) -> int:
    """What an open order still has to fill (scale 8); 0 once it is terminal."""
    return 0 if order.status in OrderStatus.TERMINAL else order.quantity - order.filled


def _orders(
    lines: Mapping[str, OrderLine], rows: Mapping[str, Order], tolerances: Tolerances, breaks: list[Break]
) -> tuple[int, int]:
    matches = compared = 0
    open_orders = {key: o for key, o in rows.items() if o.status in OrderStatus.OPEN}
    for key in sorted(set(open_orders) | set(lines)):
        line = lines.get(key)
        order = open_orders.get(key)
        compared += 1
        known = rows.get(key)
        account = None if known is None else known.account_id
        symbol = None if known is None else known.symbol
        tolerance = tolerances.of("remaining", symbol)
        if order is None:
            if line is None:
                raise InvariantViolation(f"order {key} is on neither side of the reconciliation")
            breaks.append(
                Break(
                    MISSING_IN_REWIND,
                    ORDER,
                    account,
                    key,
                    _text((line.remaining, ONE)),
                    None if known is None else f"0 ({known.status})",
                    None,
                    _text(tolerance),
                    line.line,
                )
            )
            continue
        ours = (remaining_of(order), ONE)
        if line is None:
            breaks.append(
                Break(
                    MISSING_IN_STATEMENT, ORDER, account, key, None, _text(ours), None, _text(tolerance), None
                )
            )
            continue
        stated = (line.remaining, ONE)
        if _within(stated, ours, tolerance):
            matches += 1
            continue
        breaks.append(
            Break(
                REMAINING_DIFFERS,
                ORDER,
                account,
                key,
                _text(stated),
                _text(ours),
                _diff(stated, ours),
                _text(tolerance),
                line.line,
            )
        )
    return matches, compared


def statement_accounts(statement: Statement) -> frozenset[str]:
    """The accounts a statement's positions and balances name."""
    named = {account for account, _symbol in statement.positions or {}}
    named.update(account for account, _currency in statement.balances or {})
    return frozenset(named)


def in_scope(rewind: RewindRows, accounts: frozenset[str]) -> RewindRows:
    """Rewind's rows of ``accounts`` only: for a statement that covers some of the desk's accounts."""
    return RewindRows(
        {key: p for key, p in rewind.positions.items() if key[0] in accounts},
        {key: b for key, b in rewind.balances.items() if key[0] in accounts},
        {key: o for key, o in rewind.orders.items() if o.account_id in accounts},
    )


def compare(statement: Statement, rewind: RewindRows, tolerances: Tolerances) -> Reconciliation:
    """The statement against rewind's rows: every match and every break."""
    breaks: list[Break] = []
    matches: dict[str, int] = {}
    compared: dict[str, int] = {}
    if statement.positions is not None:
        matches[POSITIONS], compared[POSITIONS] = _positions(
            statement.positions, rewind.positions, tolerances, breaks
        )
    if statement.balances is not None:
        matches[BALANCES], compared[BALANCES] = _balances(
            statement.balances, rewind.balances, tolerances, breaks
        )
    if statement.orders is not None:
        matches[ORDERS], compared[ORDERS] = _orders(statement.orders, rewind.orders, tolerances, breaks)
    order = {kind: index for index, kind in enumerate(BREAK_KINDS)}
    breaks.sort(key=lambda b: (b.entity, b.account or "", b.key, order[b.kind]))
    return Reconciliation(matches, compared, breaks)
