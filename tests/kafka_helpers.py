"""Small real-broker helpers for tests: create a topic, read a topic to its end."""

from __future__ import annotations

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(
    bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None
) -> None:
    """Create ``name`` and wait until the broker confirms it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})])[name].result(timeout=30)


def read_partition(bootstrap: str, topic: str, partition: int, timeout: float = 30.0) -> list[Message]:
    """Every message of one partition from its log start to the end it had when called."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "rewind-tests", "enable.auto.commit": False}
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        if high <= low:
            return []
        consumer.assign([TopicPartition(topic, partition, low)])
        messages: list[Message] = []
        while True:
            message = consumer.poll(timeout)
            assert message is not None, f"{topic}[{partition}]: nothing read before offset {high}"
            assert message.error() is None, message.error()
            messages.append(message)
            if message.offset() >= high - 1:
                return messages
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str) -> list[Message]:
    """Every message of every partition of ``topic``, partition by partition."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = len(admin.list_topics(topic, timeout=30).topics[topic].partitions)
    return [m for p in range(partitions) for m in read_partition(bootstrap, topic, p)]
