"""Real-broker fixtures for the lag tests: old-timestamped records and scripted consumers."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.kafka_helpers import create_topic

OLD_SECONDS = 120.0


def produce_old(
    bootstrap: str, topic: str, counts: dict[int, int], age: float = OLD_SECONDS
) -> dict[int, list[int]]:
    """Produce ``counts[p]`` records to each partition ``p`` with explicit timestamps ``age`` seconds
    in the past (one millisecond apart); returns each partition's timestamps in milliseconds."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    base = int((time.time() - age) * 1000)
    stamps: dict[int, list[int]] = {}
    for partition, count in counts.items():
        stamps[partition] = [base + i for i in range(count)]
        for i, stamp in enumerate(stamps[partition]):
            producer.produce(topic, value=f"{partition}-{i}".encode(), partition=partition, timestamp=stamp)
    assert producer.flush(30) == 0
    return stamps


class ScriptedConsumer:
    """A real consumer of one group that reads records and commits exactly what it is told to."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )

    def read(self, topic: str, partition: int, start: int, count: int) -> int:
        """Read ``count`` records of a partition from ``start``; returns the next offset."""
        self.consumer.assign([TopicPartition(topic, partition, start)])
        next_offset = start
        deadline = time.monotonic() + 30
        while next_offset < start + count:
            assert time.monotonic() < deadline, f"{topic}[{partition}] not read up to {start + count}"
            message = self.consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            next_offset = int(message.offset() or 0) + 1
        self.consumer.unassign()
        return next_offset

    def commit(self, topic: str, partition: int, offset: int) -> None:
        self.consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class StoppedGroup:
    topic: str
    group: str
    window: int
    committed: int
    lag: int
    first_unconsumed_ts: float


def make_stopped_group(bootstrap: str, window: int = 2) -> StoppedGroup:
    """A group that read 3 of 12 records, committed once and stopped, returned once ``window``
    seconds (plus a margin) have passed since that commit: from then on it is STOPPED."""
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"t-stopped-{suffix}", f"g-stopped-{suffix}"
    create_topic(bootstrap, topic)
    stamps = produce_old(bootstrap, topic, {0: 12})
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, consumer.read(topic, 0, 0, 3))
    consumer.close()
    time.sleep(window + 0.5)
    return StoppedGroup(topic, group, window, committed=3, lag=9, first_unconsumed_ts=stamps[0][3] / 1000)


def recreate_topic(bootstrap: str, topic: str) -> None:
    """Delete ``topic`` and create it again, empty, under the same name (the broker may take a moment
    to finish the deletion; the creation is retried until then)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            create_topic(bootstrap, topic)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
