"""The post-mortem view of one entity: every event that touched it, and its state after each one.

An entity (an order, or an account and optionally one of its symbols) lives in exactly one
events-topic partition, because every event is keyed by its ``account_id``. :func:`history` finds that
partition, starts from the newest snapshot that :func:`snapshotter.snapshot.verify` accepts at or
before the first offset the history needs (or from the log start with an empty state), replays the
partition with the projector's own step (:class:`projector.policy.EventsStep`, under the
``quarantine`` policy) up to the end of the window, and keeps a :class:`HistoryRow` for every
event that touched the entity from the start of the window on.

Guarantees:

- The state shown after an event is exactly what the projector holds after that offset: same fold,
  same starting state (a verified snapshot is byte-for-byte a state the projector committed).
- The window ``[from, to]`` is in Kafka record timestamps, mapped to offsets with
  ``offsets_for_times`` exactly as ``rewind replay --at`` does: ``--to T`` ends after the last record
  logged at or before ``T``, ``--from T`` starts at the first record logged at or after ``T``.
- Nothing is written anywhere: the live state, the snapshots and the topics are only read.
- A gap in the log (retention deleted offsets the history needs) is a :class:`DataLossError`
  naming the partition and offsets, never silently skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Message, TopicPartition
from confluent_kafka.admin import AdminClient

from projector import views
from projector.fold import InvariantError
from projector.policy import QUARANTINE, REFUSED, UNDECODABLE, EventsStep
from projector.state import MemoryState
from replayer.entity_location import (
    HISTORY_DATA_LOSS_FIX,
    PROGRESS_EVERY,
    PhaseProgress,
    Target,
    locate_partition,
)
from replayer.start_snapshot import starting_state
from replayer.timestamps import first_millis_after, first_millis_at_or_after, iso_micros, iso_millis
from rewind.ground.errors import InvariantViolation, RewindError
from rewind.ground.kafka_reader import first_offset_at_or_after, open_reader, read_range
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from rewind.ground.watermarks import watermark_offsets
from schemas.fixed import SCALE, format_fixed

__all__ = ["History", "HistoryRow", "PhaseProgress", "Target", "entity_state", "history", "replay_rows"]

_COMMON_FIELDS: Final = frozenset({"event_id", "event_type", "occurred_at", "account_id", "source"})
_FIXED_FIELDS: Final = frozenset(
    {"limit_price", "quantity", "new_limit_price", "new_quantity", "price", "fee", "amount"}
)
"""Event fields that are scale-8 fixed-point integers (docs/events.md)."""


@dataclass(frozen=True)
class HistoryRow:
    """One event that touched the entity, and the entity's state right after it was applied.

    ``fields`` holds the event's own fields (amounts as exact decimal strings, absent optionals left
    out); ``anomaly`` is set when the event could not apply (the state is then unchanged).
    """

    partition: int
    offset: int
    timestamp_ms: int
    occurred_at_us: int
    event_type: str
    event_id: str
    account_id: str
    source: str
    fields: dict[str, Any]
    anomaly: dict[str, Any] | None
    state: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "logged_at": iso_millis(self.timestamp_ms),
            "timestamp_ms": self.timestamp_ms,
            "occurred_at": iso_micros(self.occurred_at_us),
            "occurred_at_us": self.occurred_at_us,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "account_id": self.account_id,
            "source": self.source,
            "fields": self.fields,
            "anomaly": self.anomaly,
            "state": self.state,
        }


@dataclass
class History:
    """The rows of one history and where they came from.

    ``start_offset`` is the first offset replayed (the snapshot's offset + 1, or the log start);
    rows are kept from ``first_offset`` to ``end_offset - 1``.
    """

    target: Target
    partition: int
    partition_source: str
    snapshot_offset: int | None
    rejected_snapshots: list[str]
    start_offset: int
    first_offset: int
    end_offset: int
    rows: list[HistoryRow] = field(default_factory=list)
    replayed: int = 0
    undecodable: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.as_dict(),
            "partition": self.partition,
            "partition_found_by": self.partition_source,
            "start": {
                "snapshot_offset": self.snapshot_offset,
                "rejected_snapshots": self.rejected_snapshots,
                "replayed_from_offset": self.start_offset,
                "events_replayed": self.replayed,
            },
            "window": {"first_offset": self.first_offset, "last_offset": self.end_offset - 1},
            "undecodable_records": self.undecodable,
            "rows": [row.as_dict() for row in self.rows],
        }


# The replay.


def _event_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name, value in event.items():
        if name in _COMMON_FIELDS or value is None:
            continue
        shown[name] = format_fixed(value, SCALE) if name in _FIXED_FIELDS and type(value) is int else value
    return shown


def touches(state: MemoryState, target: Target, event: Mapping[str, Any]) -> bool:
    """Whether an event (already folded into ``state``) is about the target entity."""
    if target.order_id is not None:
        return bool(event.get("order_id") == target.order_id)
    if event["account_id"] != target.account_id:
        return False
    if target.symbol is None:
        return True
    symbol = event.get("symbol")
    if symbol is None and event.get("order_id") is not None:
        order = state.order(event["order_id"])
        symbol = None if order is None else order.symbol
    return bool(symbol == target.symbol)


def entity_state(state: MemoryState, target: Target) -> dict[str, Any]:
    """The target's rows in ``state`` as JSON-ready dicts (:func:`projector.views.to_dict`)."""
    if target.order_id is not None:
        order = state.order(target.order_id)
        return {"order": None if order is None else views.to_dict(order)}
    account = target.account_id
    assert account is not None
    risk = state.risk(account)
    balances = [views.to_dict(b) for (a, _c), b in sorted(state.balances.items()) if a == account]
    shown: dict[str, Any] = {"risk": None if risk is None else views.to_dict(risk), "balances": balances}
    if target.symbol is not None:
        position = state.position(account, target.symbol)
        shown["position"] = None if position is None else views.to_dict(position)
    return shown


def replay_rows(
    state: MemoryState,
    target: Target,
    partition: int,
    messages: Iterator[Message],
    first_offset: int,
    history: History,
    on_event: Callable[[int], None] | None = None,
) -> None:
    """Fold ``messages`` into ``state`` with the projector's step (:mod:`projector.policy`) and append
    the target's rows at or after ``first_offset`` to ``history.rows``. Anomalies are recorded in the
    state, as the projector does under the ``quarantine`` policy; undecodable and refused records only
    advance the offset, as they do when the projector sends them to the dead-letter topic."""
    step = EventsStep(state, partition, QUARANTINE, state.offset)
    for message in messages:
        outcome = apply_record(step, state, partition, message)
        if outcome in (UNDECODABLE, REFUSED):
            history.undecodable += 1
            continue
        offset = state.offset
        history.replayed += 1
        if on_event is not None:
            on_event(offset)
        if offset < first_offset or not touches(state, target, step.event):
            continue
        history.rows.append(history_row(partition, message, step, state, target))


def apply_record(step: EventsStep, state: MemoryState, partition: int, message: Message) -> int:
    """Fold one record read from ``partition``'s log with the projector's own step and move
    ``state.offset`` to it; the step's outcome. The fold breaking an invariant is a
    :class:`RewindError` naming the record, as it stops the projector at the same record."""
    offset = message.offset()
    if offset is None:
        raise InvariantViolation(f"partition {partition}: a record read from the log has no offset")
    try:
        outcome = step.record(message.value(), offset, message.key())
    except InvariantError as exc:
        raise RewindError(
            f"the fold broke an invariant at partition {partition} offset {offset}: {exc}",
            "the projector stops at this record too; report it with the partition and offset",
        ) from exc
    state.offset = offset
    return outcome


def history_row(
    partition: int, message: Message, step: EventsStep, state: MemoryState, target: Target
) -> HistoryRow:
    """The row of the event ``step`` just applied from ``message``, with ``target``'s state after it."""
    event, anomaly = step.event, step.anomaly
    _kind, timestamp = message.timestamp()
    return HistoryRow(
        partition=partition,
        offset=state.offset,
        timestamp_ms=int(timestamp),
        occurred_at_us=int(event["occurred_at"]),
        event_type=str(event["event_type"]),
        event_id=str(event["event_id"]),
        account_id=str(event["account_id"]),
        source=str(event["source"]),
        fields=_event_fields(event),
        anomaly=None if anomaly is None else views.to_dict(anomaly),
        state=entity_state(state, target),
    )


def history(
    settings: Settings,
    target: Target,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    lookup_dir: Path | None = None,
    progress: PhaseProgress | None = None,
) -> History:
    """The history of ``target`` in the window ``[since, until]`` (Kafka timestamps; None: open end).

    ``lookup_dir`` is the state directory where an order's partition is looked up first (default:
    the live state); when it does not hold the order, the events topic is scanned.
    """
    topic = settings.events_topic
    count = events_partition_count(AdminClient(settings.client_config()), topic)
    consumer = open_reader(settings.client_config(), "rewind-history")
    try:
        partition, found_by = locate_partition(settings, consumer, target, count, lookup_dir, progress)
        tp = TopicPartition(topic, partition)
        low, high = watermark_offsets(consumer, tp, 30)
        end = (
            high
            if until is None
            else first_offset_at_or_after(consumer, topic, partition, first_millis_after(until), high)
        )
        first = (
            low
            if since is None
            else first_offset_at_or_after(consumer, topic, partition, first_millis_at_or_after(since), high)
        )
        state, snapshot_offset, rejected = starting_state(settings, partition, min(first, end) - 1, low)
        start = state.offset + 1
        result = History(target, partition, found_by, snapshot_offset, rejected, start, first, end)
        total = max(0, end - start)

        def on_event(offset: int) -> None:
            if progress is not None and (offset - start + 1) % PROGRESS_EVERY == 0:
                progress("replay", offset - start + 1, total)

        messages = read_range(consumer, topic, partition, start, end, HISTORY_DATA_LOSS_FIX)
        replay_rows(state, target, partition, messages, first, result, on_event)
        if progress is not None:
            progress("replay", total, total)
        return result
    finally:
        consumer.close()
