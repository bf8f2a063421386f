"""Kafka I/O for lag: committed offsets, log start/end offsets and first-unconsumed timestamps.

Every call is batched so that one evaluation costs a fixed number of round trips, not one per
partition: one ``OffsetFetch`` for the group, one ``ListOffsets`` for the earliest and one for the
latest offsets of all partitions (sent together, awaited together), and one consumer assignment
that fetches the record at every lagging partition's committed offset at once.

Offsets are read with ``read_uncommitted`` isolation, the way Kafka's own tools (and kcat) report
the log end offset: the high watermark.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Message,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import OFFSET_INVALID, AdminClient, OffsetSpec

from rewind.ground.errors import RewindError
from rewind.ground.kafka_reader import reader_config

PartitionKey = tuple[str, int]
"""A partition as ``(topic, partition)``."""

ClientConfig = Mapping[str, str | int | float | bool]

_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_UNREACHABLE_FIX = (
    "check that the broker is running and kafka.bootstrap (REWIND_BOOTSTRAP, --bootstrap) points at it"
)


@dataclass(frozen=True)
class LogOffsets:
    """A partition's log start (earliest retained) and log end (high watermark) offsets."""

    start: int
    end: int


@dataclass(frozen=True)
class FirstUnconsumed:
    """The record a consumer will read next, as fetched from the log.

    ``offset`` can exceed the position asked for when transaction markers sit there (a consumer
    skips them too). ``timestamp`` is in epoch seconds, ``None`` if the record carries none.
    """

    offset: int
    timestamp: float | None


def _fail(what: str, exc: BaseException) -> RewindError:
    return RewindError(f"{what}: {exc}", _UNREACHABLE_FIX)


class OffsetSampler:
    """Batched reads of offsets and timestamps. Not thread-safe; call :meth:`close` when done.

    Owns one AdminClient, reused across calls. Records are fetched with a consumer made for each
    call (it never joins a group and never commits): a reused consumer can hand back records still
    queued from its previous assignment, which would give a wrong first-unconsumed record.
    """

    def __init__(
        self, client_config: ClientConfig, timeout: float = 15.0, admin: AdminClient | None = None
    ) -> None:
        """``admin``: a client of the same cluster to reuse (one already connected saves ~50 ms)."""
        self.timeout = timeout
        self._admin = admin if admin is not None else AdminClient(dict(client_config))
        self._connected = False
        self._probe_config = reader_config(
            client_config,
            "rewind-lag-probe",
            {
                "enable.partition.eof": True,
                "isolation.level": "read_uncommitted",
                "queued.min.messages": 1,
                "fetch.message.max.bytes": 32_768,
                "fetch.wait.max.ms": 10,
                "fetch.queue.backoff.ms": 10,
            },
        )

    def close(self) -> None:
        """Release the clients (the AdminClient has no close; dropping it is enough)."""

    def _connect(self, topics: Iterable[str] = ()) -> None:
        """Wait for the cluster's metadata once, before the first admin request.

        A request made while a new client still talks to its bootstrap address can be lost when that
        connection is retired for the broker's own (librdkafka 2.10+); its retry then waits for the
        client's 1 s timer, and ``ListOffsets`` took 1-3 s instead of 2 ms in one call of four.
        A metadata request first waits for the real connection: describing the ``topics`` about to
        be asked about (2-4 ms), else listing every topic (30-80 ms on a cluster of 1,700 topics).
        Neither creates a topic. A topic that is missing is reported by the request that follows.
        """
        if self._connected:
            return
        try:
            if names := sorted(set(topics)):
                described = self._admin.describe_topics(TopicCollection(names), request_timeout=self.timeout)
                wait(described.values())
            else:
                self._admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise _fail("reading the cluster's metadata", exc) from exc
        self._connected = True

    def committed_offsets(self, group: str, topic: str | None = None) -> dict[PartitionKey, int]:
        """The group's committed offsets (next offset to consume), optionally of one topic only.

        Partitions the group never committed (or whose offsets expired) are absent.
        """
        request = [ConsumerGroupTopicPartitions(group)]
        self._connect([] if topic is None else [topic])
        try:
            future = self._admin.list_consumer_group_offsets(request, request_timeout=self.timeout)[group]
            result = future.result()
        except KafkaException as exc:
            raise _fail(f"reading the committed offsets of group {group}", exc) from exc
        offsets: dict[PartitionKey, int] = {}
        for tp in result.topic_partitions or []:
            if tp.error is not None or tp.offset == OFFSET_INVALID or tp.offset < 0:
                continue
            if topic is None or tp.topic == topic:
                offsets[(tp.topic, tp.partition)] = int(tp.offset)
        return offsets

    def log_offsets(
        self, partitions: Iterable[PartitionKey]
    ) -> tuple[dict[PartitionKey, LogOffsets], dict[PartitionKey, str]]:
        """Log start and end offsets of ``partitions``, plus the reason for each one that failed.

        Both ``ListOffsets`` requests are in flight at the same time.
        """
        keys = list(partitions)
        if not keys:
            return {}, {}
        self._connect(topic for topic, _ in keys)
        try:
            earliest = self._admin.list_offsets(
                {TopicPartition(t, p): _EARLIEST for t, p in keys},
                request_timeout=self.timeout,
            )
            latest = self._admin.list_offsets(
                {TopicPartition(t, p): _LATEST for t, p in keys},
                request_timeout=self.timeout,
            )
        except KafkaException as exc:
            raise _fail("listing log offsets", exc) from exc
        starts, start_errors = _collect(earliest)
        ends, end_errors = _collect(latest)
        failed = {**end_errors, **start_errors}
        if failed and len(failed) == len(keys):
            reason = next(iter(failed.values()))
            raise RewindError(f"listing log offsets failed for every partition: {reason}", _UNREACHABLE_FIX)
        found = {k: LogOffsets(starts[k], ends[k]) for k in keys if k in starts and k in ends}
        return found, failed

    def first_unconsumed(self, positions: Mapping[PartitionKey, int]) -> dict[PartitionKey, FirstUnconsumed]:
        """The record at each position (the first one a consumer there would read), in one assignment.

        A partition is absent from the result when no record could be read from its position before
        ``timeout``: the end of the log was reached (only transaction markers were left), or the
        position was deleted meanwhile. ``queued.min.messages=1`` stops fetching a partition once a
        record is queued, so about one batch per partition is fetched; a short
        ``fetch.queue.backoff.ms`` keeps librdkafka's default 1 s back-off for such full partitions
        from also delaying the partitions still waiting for their first record.
        """
        if not positions:
            return {}
        consumer = Consumer(self._probe_config)
        consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in positions.items()])
        found: dict[PartitionKey, FirstUnconsumed] = {}
        pending = set(positions)
        deadline = time.monotonic() + self.timeout
        try:
            while pending and time.monotonic() < deadline:
                for message in drain(consumer, 0.1):
                    key = _key(message)
                    if key is None or key not in pending:
                        continue
                    pending.discard(key)
                    if message.error() is None:
                        found[key] = _record(message)
        except KafkaException as exc:
            raise _fail("fetching the first unconsumed records", exc) from exc
        finally:
            consumer.close()
        return found


def drain(consumer: Consumer, timeout: float) -> list[Message]:
    """Whatever is ready: waits up to ``timeout`` for the first message only, then takes the rest."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(10_000, timeout=0)]


def _key(message: Message) -> PartitionKey | None:
    topic, partition = message.topic(), message.partition()
    if topic is None or partition is None or partition < 0:
        return None
    return (topic, partition)


def _record(message: Message) -> FirstUnconsumed:
    kind, millis = message.timestamp()
    timestamp = None if kind == TIMESTAMP_NOT_AVAILABLE or millis < 0 else millis / 1000.0
    return FirstUnconsumed(offset=int(message.offset() or 0), timestamp=timestamp)


def _collect(
    futures: Mapping[TopicPartition, Future[Any]],
) -> tuple[dict[PartitionKey, int], dict[PartitionKey, str]]:
    values: dict[PartitionKey, int] = {}
    errors: dict[PartitionKey, str] = {}
    for tp, future in futures.items():
        key = (tp.topic, tp.partition)
        try:
            values[key] = int(future.result().offset)
        except KafkaException as exc:
            errors[key] = str(exc.args[0] if exc.args else exc)
    return values, errors
