"""The latest version and type of every config key, read from the config topic itself.

A ``ConfigChanged`` applies only when its ``version`` is greater than the key's stored one
(``docs/state.md``), so whoever changes a key must know the highest version already on the topic. The
topic is the source of truth (the projector's state may lag or not run at all), and it is small (one
partition, one record per change), so it is read from the beginning to the end it had when asked.
Two writers racing on the same key can still pick the same version: the later one is then recorded by
the projector as ``STALE_CONFIG_VERSION`` and changes nothing, never silently overwrites.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from rewind.ground.errors import RewindError
from rewind.ground.kafka_reader import open_reader
from rewind.ground.watermarks import watermark_offsets
from schemas.codec import Codec, default_codec
from schemas.errors import EventDecodeError


@dataclass(frozen=True)
class ConfigEntry:
    """The newest change of one key on the config topic."""

    version: int
    value_type: str
    value: bool | int | str
    offset: int


@dataclass(frozen=True)
class ConfigSnapshot:
    """Every key's newest change, plus how many records could not be decoded (and were skipped)."""

    entries: Mapping[str, ConfigEntry]
    undecodable: int

    def next_version(self, key: str) -> int:
        entry = self.entries.get(key)
        return 1 if entry is None else entry.version + 1


def read_config_topic(
    client_config: Mapping[str, str | int | float | bool],
    topic: str,
    *,
    codec: Codec | None = None,
    timeout: float = 30.0,
) -> ConfigSnapshot:
    """Read ``topic`` (partition 0) from its start to its current end; the highest version per key."""
    codec = codec or default_codec()
    consumer = open_reader(
        client_config,
        f"rewind-config-reader-{uuid.uuid4().hex[:8]}",
        {"auto.offset.reset": "earliest", "enable.partition.eof": True},
    )
    entries: dict[str, ConfigEntry] = {}
    undecodable = 0
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise RewindError(
                f"config topic {topic} does not exist", "create rewind's topics with `rewind topics create`"
            )
        low, high = watermark_offsets(consumer, TopicPartition(topic, 0), timeout)
        if high <= low:
            return ConfigSnapshot({}, 0)
        consumer.assign([TopicPartition(topic, 0, low)])
        position = low
        while position < high:
            message = consumer.poll(timeout)
            if message is None:
                raise RewindError(
                    f"reading config topic {topic} stalled at offset {position} of {high}",
                    "check that the broker is reachable",
                )
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    break
                raise RewindError(f"reading config topic {topic} failed: {error.str()}")
            offset = message.offset()
            assert offset is not None
            position = offset + 1
            try:
                event = codec.decode(message.value())
            except EventDecodeError:
                undecodable += 1
                continue
            key = str(event["key"])
            known = entries.get(key)
            if known is None or event["version"] > known.version:
                entries[key] = ConfigEntry(event["version"], event["value_type"], event["value"], offset)
    except KafkaException as exc:
        raise RewindError(f"cannot read config topic {topic}: {exc}", "check the bootstrap address") from exc
    finally:
        consumer.close()
    return ConfigSnapshot(entries, undecodable)
