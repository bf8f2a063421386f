"""Log offsets of a partition, on a real broker: right after the topic is created, and for a
topic that does not exist."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from rewind.ground.watermarks import watermark_offsets
from tests.kafka_helpers import create_topic


def _consumer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks-test"})


def test_offsets_right_after_the_topic_is_created(bootstrap: str, unique_name: str) -> None:
    """The moment after creation is when a broker may still answer "not leader": asked again."""
    create_topic(bootstrap, unique_name, partitions=3)
    consumer = _consumer(bootstrap)
    try:
        assert [watermark_offsets(consumer, TopicPartition(unique_name, p), 30) for p in range(3)] == [
            (0, 0)
        ] * 3
        producer = Producer({"bootstrap.servers": bootstrap})
        for _ in range(5):
            producer.produce(unique_name, b"x", partition=1)
        assert producer.flush(30) == 0
        assert watermark_offsets(consumer, TopicPartition(unique_name, 1), 30) == (0, 5)
    finally:
        consumer.close()


def test_a_missing_topic_is_an_error_at_once(bootstrap: str, unique_name: str) -> None:
    consumer = _consumer(bootstrap)
    try:
        with pytest.raises(KafkaException):
            watermark_offsets(consumer, TopicPartition(f"{unique_name}-missing", 0), 5)
    finally:
        consumer.close()
