"""Rewind's side of a reconciliation: its rows as of the statement's time, and the events that last
touched each break.

The rows come from the live state directory, or, for a moment, from a state built by time travel
(:func:`replayer.timetravel.build_state_at`, the projector's own fold bounded at the moment) in a
directory of its own that is removed afterwards. The events come from one replay per partition that
holds a break, with the projector's step (:class:`projector.policy.EventsStep`, the ``quarantine``
policy, as :mod:`replayer.history` does), from the log start (or the oldest verified snapshot that
covers a log trimmed by retention) up to the same point the rows were taken at. Nothing is written
outside the temporary directory; the live state and the topics are only read.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from projector import queries
from projector.model import Balance, Order, Position
from projector.policy import QUARANTINE, REFUSED, UNDECODABLE, EventsStep
from projector.state import MemoryState
from projector.state_directory import StateDirectory
from projector.store import partition_dir_name
from replayer.entity_location import HISTORY_DATA_LOSS_FIX, Target
from replayer.history import HistoryRow, apply_record, history_row, touches
from replayer.reconciliation import BALANCE, ORDER, Break, RewindRows
from replayer.start_snapshot import starting_state
from replayer.timetravel import build_state_at, points_at
from rewind.ground.errors import RewindError
from rewind.ground.kafka_reader import open_reader, read_range
from rewind.ground.partitioner import partition_for_key
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from rewind.ground.watermarks import watermark_offsets

LAST_EVENTS: Final = 3
"""Events shown with each break by default: the last ones that touched its entity."""

_MOVES_POSITION: Final = frozenset({"Fill", "PositionAdjusted"})
"""The events that change a position: the ones shown with a position's break."""

EntityKey = tuple[str, str | None, str]


@dataclass(frozen=True)
class RewindSide:
    """Rewind's rows and where they were taken: ``points`` per store (events included), and the
    stores' description (``live`` or ``time travel to <moment>``)."""

    rows: RewindRows
    points: dict[str, int]
    source: str


LiveRows = Callable[[], tuple[RewindRows, dict[str, int]]]
"""Reads the live state's rows and points: in the service, through the projector's own open
directory (LMDB lets a process open an environment once)."""


def rows_of_directory(state: StateDirectory) -> tuple[RewindRows, dict[str, int]]:
    """Positions, balances and orders of an open state directory, and its events included per store."""
    positions: dict[tuple[str, str], Position] = {
        (p.account_id, p.symbol): p for p in queries.positions(state)
    }
    balances: dict[tuple[str, str], Balance] = {
        (b.account_id, b.currency): b for b in queries.balances(state)
    }
    orders: dict[str, Order] = {o.order_id: o for o in queries.orders(state)}
    points = {partition_dir_name(p): state.partition(p).offset() + 1 for p in state.partitions()}
    return RewindRows(positions, balances, orders), points


def rows_of(state_dir: Path) -> tuple[RewindRows, dict[str, int]]:
    """:func:`rows_of_directory` of a state directory opened read-only for the call."""
    with StateDirectory.open_readonly(state_dir) as state:
        return rows_of_directory(state)


def rewind_side(settings: Settings, moment: datetime | None, live: LiveRows | None = None) -> RewindSide:
    """Rewind's rows as of ``moment`` by time travel, or of the live state when it is None (read by
    ``live`` when given, else from ``state.dir``)."""
    if moment is None:
        if live is not None:
            rows, points = live()
            return RewindSide(rows, points, f"live state {settings.state_dir}")
        if not settings.state_dir.is_dir():
            raise RewindError(
                f"no live state in {settings.state_dir}",
                "run `rewind project --until-caught-up` (or the service) first, or pass --as-of",
            )
        rows, points = rows_of(settings.state_dir)
        return RewindSide(rows, points, f"live state {settings.state_dir}")
    count = events_partition_count(AdminClient(settings.client_config()), settings.events_topic)
    stores = [partition_dir_name(p) for p in range(count)]
    points = points_at(settings, moment, stores)
    work = Path(tempfile.mkdtemp(prefix="rewind-reconcile-"))
    try:
        build_state_at(settings, work / "state", points)
        rows, _built = rows_of(work / "state")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return RewindSide(rows, points, f"time travel to {moment.isoformat()}")


def _matches(state: MemoryState, key: EntityKey, event: Mapping[str, Any]) -> bool:
    entity, account, name = key
    if entity == ORDER:
        return bool(event.get("order_id") == name)
    if entity == BALANCE:
        return bool(
            event["event_type"] == "BalanceChanged"
            and event["account_id"] == account
            and event["currency"] == name
        )
    if event["event_type"] not in _MOVES_POSITION:
        return False
    return touches(state, Target(account_id=account, symbol=name), event)


def _target(key: EntityKey) -> Target:
    entity, account, name = key
    if entity == ORDER:
        return Target(order_id=name)
    return Target(account_id=account, symbol=None if entity == BALANCE else name)


def last_events(
    settings: Settings, breaks: Iterable[Break], points: Mapping[str, int], keep: int = LAST_EVENTS
) -> dict[EntityKey, list[HistoryRow]]:
    """The last ``keep`` events before each point that touched the entity of each break: for a
    position its fills and adjustments, for a balance its BalanceChanged events, for an order every
    event that names it.

    An order that rewind does not know has no account, so no partition to look in: it gets none.
    """
    by_partition: dict[int, dict[str, list[EntityKey]]] = {}
    count = events_partition_count(AdminClient(settings.client_config()), settings.events_topic)
    partitioner = str(settings.client_config().get("partitioner", "consistent_random"))
    found: dict[EntityKey, deque[HistoryRow]] = {}
    for item in breaks:
        if item.account is None:
            continue
        partition = partition_for_key(item.account, count, partitioner)
        keys = by_partition.setdefault(partition, {}).setdefault(item.account, [])
        if item.entity_key not in found:
            keys.append(item.entity_key)
            found[item.entity_key] = deque(maxlen=keep)
    if not by_partition:
        return {}
    consumer = open_reader(settings.client_config(), "rewind-reconcile")
    topic = settings.events_topic
    try:
        for partition, accounts in sorted(by_partition.items()):
            low, high = watermark_offsets(consumer, TopicPartition(topic, partition), 30)
            end = min(high, points.get(partition_dir_name(partition), 0))
            state, _snapshot, _rejected = starting_state(settings, partition, low - 1, low)
            step = EventsStep(state, partition, QUARANTINE, state.offset)
            for message in read_range(
                consumer, topic, partition, state.offset + 1, end, HISTORY_DATA_LOSS_FIX
            ):
                if apply_record(step, state, partition, message) in (UNDECODABLE, REFUSED):
                    continue
                event = step.event
                for key in accounts.get(str(event["account_id"]), ()):
                    if _matches(state, key, event):
                        found[key].append(history_row(partition, message, step, state, _target(key)))
    finally:
        consumer.close()
    return {key: list(rows) for key, rows in found.items()}
