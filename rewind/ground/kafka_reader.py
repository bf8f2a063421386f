"""The one way rewind reads Kafka without taking part in it: a reader that never commits or guesses.

The projector, history, time travel, the config reader and the lag probes all read partitions they
assign themselves. Such a reader stores and commits no offsets on its own, and an offset the log no
longer holds is an error, never a jump to the other end of the log (``auto.offset.reset=error``): a
skipped event is lost silently. Where a reader needs something else (the lag probes want end-of-log
signals, the config reader starts at the log start) it says so in ``overrides``.

A consume error is turned into a message for a person by :func:`consume_error`, in one place.
:func:`read_range` reads a bounded range of one partition, and :func:`first_offset_at_or_after` maps a
Kafka timestamp to an offset, as ``offsets_for_times`` does, clamped to the log end.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from typing import Final

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from rewind.ground.errors import DataLossError, RewindError

ConfigValue = str | int | float | bool

READER_DEFAULTS: Final[Mapping[str, ConfigValue]] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "auto.offset.reset": "error",
}
"""What makes a consumer a reader: nothing committed or stored by itself, no silent offset reset."""


def reader_config(
    client_config: Mapping[str, ConfigValue], group: str, overrides: Mapping[str, ConfigValue] | None = None
) -> dict[str, ConfigValue]:
    """The librdkafka configuration of a reader in ``group`` (the group only names it to the broker)."""
    return {**client_config, **READER_DEFAULTS, "group.id": group, **(overrides or {})}


def open_reader(
    client_config: Mapping[str, ConfigValue], group: str, overrides: Mapping[str, ConfigValue] | None = None
) -> Consumer:
    """A reader on ``client_config``'s cluster; the caller assigns its partitions and closes it."""
    return Consumer(reader_config(client_config, group, overrides))


def consume_error(
    topic: str | None, partition: int | None, error: KafkaError, data_loss_fix: str
) -> RewindError:
    """The error to raise for a record that came back as ``error``.

    An offset reset refused by ``auto.offset.reset=error`` means retention deleted offsets the reader
    needs: a :class:`DataLossError` with ``data_loss_fix``. Anything else names the partition and
    points at the broker and the topics.
    """
    where = f"{topic}[{partition}]"
    if error.code() == KafkaError._AUTO_OFFSET_RESET:
        return DataLossError(f"data loss on {where}: {error.str()}", data_loss_fix)
    return RewindError(
        f"reading {where} failed: {error.str()}",
        "check the broker and that the topics exist (`rewind topics create`)",
    )


def read_range(
    consumer: Consumer,
    topic: str,
    partition: int,
    start: int,
    end: int,
    data_loss_fix: str,
    *,
    batch_size: int = 1000,
    stall_seconds: float = 60.0,
) -> Generator[Message, None, None]:
    """Every record of ``topic[partition]`` with an offset in ``[start, end)``, in offset order.

    A gap (retention deleted offsets in the range) raises :class:`DataLossError` with
    ``data_loss_fix``; no record for ``stall_seconds`` raises a :class:`RewindError` naming the offset.
    The reader is unassigned when the iteration ends or is closed.
    """
    if start >= end:
        return
    tp = TopicPartition(topic, partition)
    consumer.assign([TopicPartition(topic, partition, start)])
    last_progress = time.monotonic()
    try:
        while True:
            batch = consumer.consume(batch_size, 1.0)
            if not batch:
                position = consumer.position([tp])[0].offset
                if position >= end:
                    return
                if time.monotonic() - last_progress > stall_seconds:
                    raise RewindError(
                        f"{topic}[{partition}]: nothing read for {stall_seconds:.0f} s at offset "
                        f"{max(position, start)} (log end {end})",
                        "check that the broker is reachable",
                    )
                continue
            last_progress = time.monotonic()
            for message in batch:
                error = message.error()
                if error is not None:
                    raise consume_error(topic, partition, error, data_loss_fix)
                offset = message.offset()
                if offset is None:
                    raise RewindError(f"{topic}[{partition}]: a record without an offset", "report it")
                if offset >= end:
                    return
                yield message
                if offset == end - 1:
                    return
    finally:
        consumer.unassign()


def first_offset_at_or_after(consumer: Consumer, topic: str, partition: int, millis: int, high: int) -> int:
    """The first offset of ``topic[partition]`` logged at or after ``millis`` (Kafka timestamp), or
    ``high`` (the log end) if none is."""
    found = consumer.offsets_for_times([TopicPartition(topic, partition, millis)], timeout=30)
    offset = found[0].offset
    return high if offset < 0 else min(int(offset), high)
