"""Corrections that clear reconciliation breaks: PositionAdjusted and BalanceChanged events, built
by the producers' builders, written to a file for review and emitted only from it.

Pure: :func:`propose` takes the statement, rewind's rows, the breaks and a time, and returns events;
the file format is :func:`proposal_document` / :func:`events_of_document`. Guarantees:

- Each event's ``event_id`` is a UUID derived from the statement's checksum and the entity (account
  and symbol, or account and currency): the same statement proposes the same ids, so emitting a
  proposal twice applies it once (the projector drops an ``event_id`` its partition already
  applied).
- Each event's ``source`` is ``reconciliation:<statement name>:<checksum>`` (the first 16 hex
  digits), PositionAdjusted carries reason ``RECONCILIATION``, BalanceChanged reason ``ADJUSTMENT``
  (the contract has no RECONCILIATION balance reason).
- A position correction SETs the position to the statement's quantity at the statement's average
  price (rounded half-even to 8 places), or at rewind's average cost when the statement gives none;
  a flat statement SETs 0. A balance correction moves the balance by the difference. Applied to the
  state that was compared, they clear every position and balance break; open-order breaks have no
  correcting event (they are fixed at the venue) and are listed as not corrected.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from producers import builders
from producers.builders import BuiltEvent
from replayer.reconciliation import BALANCE, ORDER, POSITION, Break, RewindRows
from replayer.statement import Statement
from rewind.ground.errors import RewindError
from schemas.fixed import ONE, SCALE, div_half_even, format_fixed

PROPOSAL_FORMAT: Final = 1
_NAMESPACE: Final = uuid.UUID("6f1c2a52-6b7e-4d0b-9a55-2f4f4a1c7e30")
_FIXED: Final = frozenset({"quantity", "price", "amount"})


@dataclass(frozen=True)
class Proposal:
    """The events that clear the breaks, and the breaks no event can clear (with why)."""

    events: list[BuiltEvent]
    uncorrected: list[tuple[Break, str]]


def correction_id(checksum: str, entity: str, account: str, key: str) -> str:
    """The event id of the correction of one entity for one statement: stable across runs."""
    return str(uuid.uuid5(_NAMESPACE, f"{checksum}\x00{entity}\x00{account}\x00{key}"))


def correction_source(statement: Statement) -> str:
    """``reconciliation:<name>:<checksum prefix>``, whitespace in the name replaced by ``_``."""
    name = "_".join(statement.name.split())[:120] or "statement"
    return f"reconciliation:{name}:{statement.checksum[:16]}"


def _price(statement: Statement, rows: RewindRows, account: str, symbol: str) -> int | None:
    positions = statement.positions or {}
    line = positions.get((account, symbol))
    if line is not None and line.quantity != 0 and line.avg_price is not None:
        numerator, denominator = line.avg_price.as_integer_ratio()
        price = div_half_even(numerator * ONE, denominator)
        if price > 0:
            return price
    position = rows.positions.get((account, symbol))
    if position is not None and position.quantity != 0:
        price = div_half_even(abs(position.cost_basis), abs(position.quantity))
        if price > 0:
            return price
    if position is not None and position.last_price > 0:
        return position.last_price
    return None


def propose(statement: Statement, rows: RewindRows, breaks: list[Break], occurred_at: int) -> Proposal:
    """One correcting event per position or balance with breaks, in the breaks' order."""
    source = correction_source(statement)
    events: list[BuiltEvent] = []
    uncorrected: list[tuple[Break, str]] = []
    done: set[tuple[str, str | None, str]] = set()
    for item in breaks:
        if item.entity_key in done:
            continue
        account = item.account
        if item.entity == ORDER or account is None:
            uncorrected.append((item, "no event corrects an order's remaining quantity; fix it at the venue"))
            continue
        done.add(item.entity_key)
        event_id = correction_id(statement.checksum, item.entity, account, item.key)
        if item.entity == POSITION:
            line = (statement.positions or {}).get((account, item.key))
            target = 0 if line is None else line.quantity
            price = _price(statement, rows, account, item.key)
            if price is None:
                uncorrected.append(
                    (item, "the statement gives no average price and rewind has none to keep; adjust by hand")
                )
                continue
            events.append(
                builders.position_adjusted(
                    account_id=account,
                    symbol=item.key,
                    mode="SET",
                    quantity=target,
                    price=price,
                    reason="RECONCILIATION",
                    source=source,
                    event_id=event_id,
                    occurred_at=occurred_at,
                )
            )
        elif item.entity == BALANCE:
            stated = (statement.balances or {}).get((account, item.key))
            ours = rows.balances.get((account, item.key))
            amount = (0 if stated is None else stated.amount) - (0 if ours is None else ours.amount)
            if amount == 0:
                continue
            try:
                event = builders.balance_changed(
                    account_id=account,
                    currency=item.key,
                    amount=amount,
                    reason="ADJUSTMENT",
                    source=source,
                    event_id=event_id,
                    occurred_at=occurred_at,
                )
            except ValueError as exc:
                uncorrected.append((item, str(exc)))
                continue
            events.append(event)
    return Proposal(events, uncorrected)


def _shown(event: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: format_fixed(value, SCALE) if name in _FIXED and type(value) is int else value
        for name, value in event.items()
    }


def proposal_document(statement: Statement, as_of: str | None, proposal: Proposal) -> dict[str, Any]:
    """The reviewable file: the statement it answers, the events (amounts as exact decimal text) and
    the breaks left uncorrected."""
    return {
        "format": PROPOSAL_FORMAT,
        "statement": statement.as_dict(),
        "as_of": as_of,
        "source": correction_source(statement),
        "events": [_shown(event) for event in proposal.events],
        "uncorrected": [dict(item.as_dict(), why=why) for item, why in proposal.uncorrected],
    }


def events_of_document(document: object, name: str) -> tuple[str, str, list[BuiltEvent]]:
    """The statement checksum, source and the events of a proposal file, each checked again by its
    builder; the source of every event must be the proposal's own, and be a reconciliation."""
    fix = "apply a file written by `rewind reconcile --propose`, unedited except for removed events"
    if not isinstance(document, dict) or document.get("format") != PROPOSAL_FORMAT:
        raise RewindError(f"{name}: not a reconciliation proposal (format {PROPOSAL_FORMAT})", fix)
    statement = document.get("statement")
    source = document.get("source")
    raw_events = document.get("events")
    if not isinstance(statement, dict) or not isinstance(source, str) or not isinstance(raw_events, list):
        raise RewindError(f"{name}: the proposal lacks its statement, source or events", fix)
    checksum = str(statement.get("checksum", ""))
    if not source.startswith("reconciliation:") or not source.endswith(":" + checksum[:16]) or not checksum:
        raise RewindError(f"{name}: the source {source!r} does not name the statement's checksum", fix)
    events: list[BuiltEvent] = []
    for index, raw in enumerate(raw_events, 1):
        if not isinstance(raw, dict):
            raise RewindError(f"{name}: event {index} is not an object", fix)
        kind = raw.get("event_type")
        if kind not in ("PositionAdjusted", "BalanceChanged"):
            raise RewindError(f"{name}: event {index} is a {kind!r}; a proposal holds corrections only", fix)
        if raw.get("source") != source:
            raise RewindError(f"{name}: event {index} has source {raw.get('source')!r}, not {source!r}", fix)
        try:
            events.append(builders.validate_event(raw))
        except ValueError as exc:
            raise RewindError(f"{name}: event {index}: {exc}", fix) from exc
    return checksum, source, events
