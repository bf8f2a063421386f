"""Where an entity's events live: the one events-topic partition of an order or an account.

Every event is keyed by its ``account_id``, so an account's partition follows from the producers'
partitioner (:mod:`rewind.ground.partitioner`). An order's account is not known up front: its
partition is looked up in a state directory first, and found by scanning the events topic when the
state does not hold it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from confluent_kafka import Consumer, TopicPartition

from projector import encoding
from projector.store import DATA_FILE, PartitionStore, read_layout
from rewind.ground.errors import RewindError
from rewind.ground.kafka_reader import read_range
from rewind.ground.partitioner import partition_for_key
from rewind.ground.settings import Settings
from rewind.ground.watermarks import watermark_offsets
from schemas.codec import decode
from schemas.errors import EventDecodeError

PhaseProgress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: phase is ``"scan"`` (finding an order) or ``"replay"``."""

PROGRESS_EVERY: Final = 1000
"""Records between two progress reports."""

HISTORY_DATA_LOSS_FIX: Final = "the offsets this history needs were deleted by retention; pass a later --from"


@dataclass(frozen=True)
class Target:
    """What a history is about: ``order_id``, or ``account_id`` (optionally narrowed to ``symbol``)."""

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


def order_in_state(state_dir: Path, events_topic: str, order_id: str) -> int | None:
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


def scan_for_order(
    consumer: Consumer, topic: str, count: int, order_id: str, progress: PhaseProgress | None
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
        with closing(read_range(consumer, topic, partition, low, high, HISTORY_DATA_LOSS_FIX)) as messages:
            for message in messages:
                done += 1
                if progress is not None and done % PROGRESS_EVERY == 0:
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


def locate_partition(
    settings: Settings,
    consumer: Consumer,
    target: Target,
    count: int,
    lookup_dir: Path | None,
    progress: PhaseProgress | None,
) -> tuple[int, str]:
    """The partition the entity lives on, and how it was found."""
    if target.account_id is not None:
        partitioner = str(settings.client_config().get("partitioner", "consistent_random"))
        return partition_for_key(target.account_id, count, partitioner), f"key hash ({partitioner})"
    if target.order_id is None:
        raise ValueError("a target is an order or an account")
    state_dir = lookup_dir or settings.state_dir
    found = order_in_state(state_dir, settings.events_topic, target.order_id)
    if found is not None and found < count:
        return found, f"state directory {state_dir}"
    scanned = scan_for_order(consumer, settings.events_topic, count, target.order_id, progress)
    if scanned is None:
        raise RewindError(
            f"no event on {settings.events_topic} carries order_id {target.order_id}",
            "check the order id (it is case-sensitive) and the topics rewind is configured for",
        )
    return scanned, "scan of the events topic"
