"""The newest records of the dead-letter topic, as the console and ``GET /dead-letters`` show them.

Guarantees: only reads (a reader that commits nothing, :func:`rewind.ground.kafka_reader.open_reader`);
at most ``limit`` records, newest first by Kafka timestamp across partitions; each names the error,
its class and where the record came from (``rewind.*`` headers of :mod:`projector.deadletter`), with
the original key as text and the value's size (the value is Avro that could not be decoded: not
shown). A dead-letter topic that does not exist yet has no records.
"""

from __future__ import annotations

from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from projector.deadletter import (
    HEADER_ERROR,
    HEADER_ERROR_CLASS,
    HEADER_FINGERPRINT,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_TOPIC,
)
from replayer.timestamps import iso_millis
from rewind.ground.errors import RewindError
from rewind.ground.kafka_reader import open_reader, read_range
from rewind.ground.settings import Settings
from rewind.ground.watermarks import watermark_offsets

__all__ = ["LIMIT_MAX", "dead_letters"]

LIMIT_MAX: Final = 500
TIMEOUT_SECONDS: Final = 5.0

_FIELDS: Final = {
    HEADER_ERROR: "error",
    HEADER_ERROR_CLASS: "error_class",
    HEADER_TOPIC: "source_topic",
    HEADER_PARTITION: "source_partition",
    HEADER_OFFSET: "source_offset",
    HEADER_FINGERPRINT: "fingerprint",
}


def _row(message: Message) -> dict[str, Any]:
    _kind, millis = message.timestamp()
    key = message.key()
    row: dict[str, Any] = {
        "partition": message.partition(),
        "offset": message.offset(),
        "logged_at": iso_millis(millis),
        "timestamp_ms": millis,
        "key": None if key is None else bytes(key).decode("utf-8", "replace"),
        "value_bytes": len(message.value() or b""),
    }
    for header in message.headers() or []:
        name, value = header[0], header[1]
        if name in _FIELDS and value is not None:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            row[_FIELDS[name]] = int(text) if name in (HEADER_PARTITION, HEADER_OFFSET) else text
    return row


def dead_letters(settings: Settings, limit: int) -> dict[str, Any]:
    """``{"topic", "total", "dead_letters"}``: how many records the topic holds, and the newest
    ``limit`` of them."""
    topic = settings.deadletter_topic
    consumer = open_reader(settings.client_config(), "rewind-console-deadletters")
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=TIMEOUT_SECONDS)
        except KafkaException as exc:
            raise RewindError(
                f"cannot list the dead-letter topic {topic}: {exc}", "check the brokers (see /health)"
            ) from exc
        found = metadata.topics.get(topic)
        missing = found is not None and found.error is not None
        if found is None or (missing and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return {"topic": topic, "total": 0, "dead_letters": []}
        rows: list[dict[str, Any]] = []
        total = 0
        for partition in sorted(found.partitions):
            low, high = watermark_offsets(consumer, TopicPartition(topic, partition), TIMEOUT_SECONDS)
            total += high - low
            start = max(low, high - limit)
            fix = "nothing to do: older dead letters were deleted by retention"
            rows.extend(_row(m) for m in read_range(consumer, topic, partition, start, high, fix))
    finally:
        consumer.close()
    rows.sort(key=lambda r: (r["timestamp_ms"], r["partition"], r["offset"]), reverse=True)
    return {"topic": topic, "total": total, "dead_letters": rows[:limit]}
