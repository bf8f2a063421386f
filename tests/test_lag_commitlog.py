"""Commit timestamps from __consumer_offsets: record formats as the real broker writes them."""

from __future__ import annotations

import struct
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from rewind.lag_commitlog import (
    OFFSETS_TOPIC,
    CommitLogReader,
    coordinator_partition,
    java_string_hash,
    parse_offset_commit,
)
from tests.kafka_helpers import create_topic
from tests.lag_helpers import ScriptedConsumer, produce_old


def test_java_string_hash_matches_java() -> None:
    assert java_string_hash("") == 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("é") == 233
    assert java_string_hash("😀") == 0xD83D * 31 + 0xDE00  # two UTF-16 code units
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert coordinator_partition("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) is 0


def test_other_record_types_are_not_offset_commits() -> None:
    group_metadata_key = struct.pack(">hh", 2, 1) + b"g"
    assert parse_offset_commit(group_metadata_key, b"\x00\x03") is None
    assert parse_offset_commit(struct.pack(">hh", 1, 1) + b"g", None) is None  # a tombstone


def _raw_records(bootstrap: str, group: str) -> list[tuple[bytes, bytes, int]]:
    """(key, value, record timestamp ms) of every record of the group's __consumer_offsets partition."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    count = len(admin.list_topics(OFFSETS_TOPIC, timeout=15).topics[OFFSETS_TOPIC].partitions)
    partition = coordinator_partition(group, count)
    reader = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "rewind-tests", "enable.partition.eof": True}
    )
    reader.assign([TopicPartition(OFFSETS_TOPIC, partition, 0)])
    records = []
    try:
        while True:
            message = reader.poll(10)
            assert message is not None, "__consumer_offsets not read to its end"
            if message.error() is not None:
                break
            key, value = message.key(), message.value()
            if key and value and group.encode() in key:
                records.append((key, value, message.timestamp()[1]))
    finally:
        reader.close()
    return records


def test_the_broker_writes_key_v1_value_v4_and_the_parser_reads_them(
    bootstrap: str, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic, partitions=2)
    produce_old(bootstrap, topic, {0: 5, 1: 5})
    consumer = ScriptedConsumer(bootstrap, group)
    before = time.time()
    consumer.commit(topic, 0, 3)
    consumer.consumer.commit(
        offsets=[TopicPartition(topic, 1, 5, metadata="a note", leader_epoch=0)], asynchronous=False
    )
    after = time.time()
    consumer.close()

    raw = _raw_records(bootstrap, group)  # found where coordinator_partition says they are
    assert {(struct.unpack(">h", k[:2])[0], struct.unpack(">h", v[:2])[0]) for k, v, _ in raw} == {(1, 4)}
    parsed = [parse_offset_commit(k, v) for k, v, _ in raw]
    assert [(r.topic, r.partition, r.offset) for r in parsed if r] == [(topic, 0, 3), (topic, 1, 5)]
    for record, (_, _, stamp) in zip(parsed, raw, strict=True):
        assert record is not None and record.group == group
        assert before - 1 <= record.committed_at <= after + 1
        assert abs(record.committed_at - stamp / 1000) < 0.1  # the broker stamps both, moments apart


def test_the_reader_returns_only_new_commits_of_its_group(bootstrap: str, unique_name: str) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    produce_old(bootstrap, topic, {0: 10})
    other = ScriptedConsumer(bootstrap, f"{unique_name}-other")
    other.commit(topic, 0, 9)
    other.close()
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, 2)
    consumer.commit(topic, 0, 2)

    reader = CommitLogReader({"bootstrap.servers": bootstrap}, group, history_seconds=60)
    try:
        assert [(r.partition, r.offset) for r in reader.read_new()] == [(0, 2), (0, 2)]
        assert reader.complete and reader.skipped == 0
        assert reader.read_new() == []
        consumer.commit(topic, 0, 7)
        assert [r.offset for r in reader.read_new()] == [7]
    finally:
        reader.close()
        consumer.close()
