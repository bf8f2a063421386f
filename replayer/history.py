"""The post-mortem view of one entity: every event that touched it, and its state after each one.

An entity (an order, or an account and optionally one of its symbols) lives in exactly one
events-topic partition, because every event is keyed by its ``account_id``. :func:`history` finds that
partition, starts from the newest snapshot that :func:`snapshotter.snapshot.verify` accepts at or
before the first offset the history needs (or from the log start with an empty state), replays the
partition with the projector's own fold (:func:`projector.fold.apply_event`, anomalies recorded as
under the ``quarantine`` policy) up to the end of the window, and keeps a :class:`HistoryRow` for every
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

import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from projector import encoding, views
from projector.fold import EventContractError, InvariantError, apply_event
from projector.model import Anomaly
from projector.state import MemoryState
from projector.store import DATA_FILE, PartitionStore, partition_dir_name, read_layout
from rewind.ground.errors import DataLossError, RewindError
from rewind.ground.kafka_reader import consume_error, open_reader
from rewind.ground.partitioner import partition_for_key
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from rewind.ground.watermarks import watermark_offsets
from schemas.codec import decode
from schemas.errors import EventDecodeError
from schemas.fixed import SCALE, format_fixed
from snapshotter.snapshot import newest_valid

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: phase is ``"scan"`` (finding an order) or ``"replay"``."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH: Final = 1000
_STALL_SECONDS: Final = 60.0
_COMMON_FIELDS: Final = frozenset({"event_id", "event_type", "occurred_at", "account_id", "source"})
_FIXED_FIELDS: Final = frozenset(
    {"limit_price", "quantity", "new_limit_price", "new_quantity", "price", "fee", "amount"}
)
"""Event fields that are scale-8 fixed-point integers (docs/events.md)."""


@dataclass(frozen=True)
class Target:
    """What the history is about: ``order_id``, or ``account_id`` (optionally narrowed to ``symbol``)."""

    order_id: str | None = None
    account_id: str | None = None
    symbol: str | None = None

    def __post_init__(self) -> None:
        if (self.order_id is None) == (self.account_id is None):
            raise ValueError("a history is about exactly one order or one account")
        if self.symbol is not None and self.account_id is None:
            raise ValueError("a symbol narrows an account's history; it needs an account")

    def describe(self) -> str:
        if self.order_id is not None:
            return f"order {self.order_id}"
        suffix = f" symbol {self.symbol}" if self.symbol is not None else ""
        return f"account {self.account_id}{suffix}"

    def as_dict(self) -> dict[str, str]:
        found = {"order_id": self.order_id, "account_id": self.account_id, "symbol": self.symbol}
        return {name: value for name, value in found.items() if value is not None}


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


def iso_millis(millis: int) -> str:
    """A Kafka timestamp (ms since the epoch) as ISO-8601 UTC with milliseconds."""
    moment = _EPOCH + timedelta(milliseconds=millis)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_micros(micros: int) -> str:
    """An ``occurred_at`` (µs since the epoch) as ISO-8601 UTC with microseconds, exactly."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


# Reading one partition.


def _consumer(settings: Settings) -> Consumer:
    return open_reader(settings.client_config(), "rewind-history")


def _read(
    consumer: Consumer, topic: str, partition: int, start: int, end: int
) -> Generator[Message, None, None]:
    """Every record of ``topic[partition]`` with an offset in ``[start, end)``, in offset order."""
    if start >= end:
        return
    tp = TopicPartition(topic, partition)
    consumer.assign([TopicPartition(topic, partition, start)])
    last_progress = time.monotonic()
    try:
        while True:
            batch = consumer.consume(_BATCH, 1.0)
            if not batch:
                position = consumer.position([tp])[0].offset
                if position >= end:
                    return
                if time.monotonic() - last_progress > _STALL_SECONDS:
                    raise RewindError(
                        f"{topic}[{partition}]: nothing read for {_STALL_SECONDS:.0f} s at offset "
                        f"{max(position, start)} (log end {end})",
                        "check that the broker is reachable",
                    )
                continue
            last_progress = time.monotonic()
            for message in batch:
                error = message.error()
                if error is not None:
                    raise consume_error(
                        topic,
                        partition,
                        error,
                        "the offsets this history needs were deleted by retention; pass a later --from",
                    )
                offset = message.offset()
                assert offset is not None
                if offset >= end:
                    return
                yield message
                if offset == end - 1:
                    return
    finally:
        consumer.unassign()


def _offset_for_time(consumer: Consumer, tp: TopicPartition, millis: int, high: int) -> int:
    """The first offset logged at or after ``millis`` (Kafka timestamp), or ``high`` if none is."""
    found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, millis)], timeout=30)
    offset = found[0].offset
    return high if offset < 0 else min(int(offset), high)


def _first_millis_at_or_after(moment: datetime) -> int:
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


def _first_millis_after(moment: datetime) -> int:
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return micros // 1000 + 1


# Finding the partition.


def _order_in_state(state_dir: Path, events_topic: str, order_id: str) -> int | None:
    """The partition whose store holds ``order_id`` in a state directory of ``events_topic``, if any."""
    try:
        layout = read_layout(state_dir)
    except RewindError:
        return None
    if layout.events_topic != events_topic:
        return None
    key = encoding.order_key(order_id)
    for path in sorted(state_dir.glob("events-p*")):
        if not (path / DATA_FILE).is_file():
            continue
        with PartitionStore(path, encoding.EVENTS_TABLES, readonly=True) as store:
            if store.get(encoding.ORDERS, key) is not None:
                return int(path.name.removeprefix("events-p"))
    return None


def _scan_for_order(
    consumer: Consumer, topic: str, count: int, order_id: str, progress: Progress | None
) -> int | None:
    """Read the whole events topic for events carrying ``order_id``: the partition of its submit, or
    else of the first such event. The raw bytes are searched first (Avro strings are plain UTF-8),
    so only candidate records are decoded."""
    needle = order_id.encode()
    marks = [watermark_offsets(consumer, TopicPartition(topic, p), 30) for p in range(count)]
    total = sum(high - low for low, high in marks)
    done = 0
    seen: int | None = None
    for partition, (low, high) in enumerate(marks):
        with closing(_read(consumer, topic, partition, low, high)) as messages:
            for message in messages:
                done += 1
                if progress is not None and done % _BATCH == 0:
                    progress("scan", done, total)
                value = message.value()
                if value is None or needle not in value:
                    continue
                try:
                    event = decode(value)
                except EventDecodeError:
                    continue
                if event.get("order_id") != order_id:
                    continue
                if event["event_type"] == "OrderSubmitted":
                    return partition
                if seen is None:
                    seen = partition
    if progress is not None:
        progress("scan", total, total)
    return seen


def _locate(
    settings: Settings,
    consumer: Consumer,
    target: Target,
    count: int,
    lookup_dir: Path | None,
    progress: Progress | None,
) -> tuple[int, str]:
    """The partition the entity lives on, and how it was found."""
    if target.account_id is not None:
        partitioner = str(settings.client_config().get("partitioner", "consistent_random"))
        return partition_for_key(target.account_id, count, partitioner), f"key hash ({partitioner})"
    assert target.order_id is not None
    state_dir = lookup_dir or settings.state_dir
    found = _order_in_state(state_dir, settings.events_topic, target.order_id)
    if found is not None and found < count:
        return found, f"state directory {state_dir}"
    scanned = _scan_for_order(consumer, settings.events_topic, count, target.order_id, progress)
    if scanned is None:
        raise RewindError(
            f"no event on {settings.events_topic} carries order_id {target.order_id}",
            "check the order id (it is case-sensitive) and the topics rewind is configured for",
        )
    return scanned, "scan of the events topic"


# The replay.


def _event_fields(event: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for name, value in event.items():
        if name in _COMMON_FIELDS or value is None:
            continue
        shown[name] = format_fixed(value, SCALE) if name in _FIXED_FIELDS and type(value) is int else value
    return shown


def _touches(state: MemoryState, target: Target, event: Mapping[str, Any]) -> bool:
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
    """Fold ``messages`` into ``state`` with the projector's fold and append the target's rows at or
    after ``first_offset`` to ``history.rows``. Anomalies are recorded in the state, as the projector
    does under the ``quarantine`` policy; undecodable records only advance the offset, as they do
    when the projector sends them to the dead-letter topic."""
    for message in messages:
        offset = message.offset()
        assert offset is not None
        try:
            event = decode(message.value())
        except EventDecodeError:
            history.undecodable += 1
            state.offset = offset
            continue
        try:
            anomaly: Anomaly | None = apply_event(state, event, partition, offset)
        except (EventContractError, InvariantError) as exc:
            raise RewindError(
                f"the fold refused partition {partition} offset {offset}: {exc}",
                "the projector stops at this record too; report it with the partition and offset",
            ) from exc
        if anomaly is not None:
            state.put_anomaly(anomaly)
        state.offset = offset
        history.replayed += 1
        if on_event is not None:
            on_event(offset)
        if offset < first_offset or not _touches(state, target, event):
            continue
        _kind, timestamp = message.timestamp()
        history.rows.append(
            HistoryRow(
                partition=partition,
                offset=offset,
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
        )


def _starting_state(
    settings: Settings, partition: int, bound: int, low: int
) -> tuple[MemoryState, int | None, list[str]]:
    """The newest verified snapshot at or below ``bound`` as a :class:`MemoryState`, or an empty one.

    Refuses (data loss) when the replay would have to start before the log start ``low``.
    """
    name = partition_dir_name(partition)
    snapshot, rejected = (
        (None, []) if bound < 0 else newest_valid(settings.snapshot_dir, name, bound, deep=True)
    )
    if snapshot is None:
        state = MemoryState()
    else:
        with PartitionStore(snapshot.path, encoding.EVENTS_TABLES, readonly=True, shared=False) as copy:
            state = MemoryState.from_records(copy.records())
    start = state.offset + 1
    if start < low:
        raise DataLossError(
            f"data loss on {settings.events_topic}[{partition}]: the history needs offsets "
            f"{start}-{low - 1}, deleted by retention (the log now starts at {low}), and no verified "
            f"snapshot between offsets {low - 1} and {bound} covers them",
            f"pass a later --from (at or after the time of offset {low}) so a newer snapshot can be the "
            "start, or re-ingest the deleted events",
        )
    return state, None if snapshot is None else snapshot.offset, rejected


def history(
    settings: Settings,
    target: Target,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    lookup_dir: Path | None = None,
    progress: Progress | None = None,
) -> History:
    """The history of ``target`` in the window ``[since, until]`` (Kafka timestamps; None: open end).

    ``lookup_dir`` is the state directory where an order's partition is looked up first (default:
    the live state); when it does not hold the order, the events topic is scanned.
    """
    topic = settings.events_topic
    count = events_partition_count(AdminClient(settings.client_config()), topic)
    consumer = _consumer(settings)
    try:
        partition, found_by = _locate(settings, consumer, target, count, lookup_dir, progress)
        tp = TopicPartition(topic, partition)
        low, high = watermark_offsets(consumer, tp, 30)
        end = high if until is None else _offset_for_time(consumer, tp, _first_millis_after(until), high)
        first = (
            low if since is None else _offset_for_time(consumer, tp, _first_millis_at_or_after(since), high)
        )
        state, snapshot_offset, rejected = _starting_state(settings, partition, min(first, end) - 1, low)
        start = state.offset + 1
        result = History(target, partition, found_by, snapshot_offset, rejected, start, first, end)
        total = max(0, end - start)

        def on_event(offset: int) -> None:
            if progress is not None and (offset - start + 1) % _BATCH == 0:
                progress("replay", offset - start + 1, total)

        replay_rows(
            state, target, partition, _read(consumer, topic, partition, start, end), first, result, on_event
        )
        if progress is not None:
            progress("replay", total, total)
        return result
    finally:
        consumer.close()
