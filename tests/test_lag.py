"""LagMonitor against the real broker: each status from real consumers, figures equal Kafka's own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from rewind.lag import LagMonitor, LagReport, PartitionLag, _History
from rewind.lag_status import Commit, Status
from tests.kafka_helpers import create_topic
from tests.lag_helpers import OLD_SECONDS, ScriptedConsumer, make_stopped_group, produce_old, recreate_topic

WIDE_WINDOW = 30
EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]


@pytest.fixture
def monitor(bootstrap: str) -> Iterator[LagMonitor]:
    with LagMonitor({"bootstrap.servers": bootstrap}, window_seconds=WIDE_WINDOW) as lag_monitor:
        yield lag_monitor


def by_partition(report: LagReport) -> dict[int, PartitionLag]:
    return {p.partition: p for p in report.partitions}


def test_a_consumer_that_keeps_up_is_ok(bootstrap: str, unique_name: str, monitor: LagMonitor) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic, partitions=3)
    produce_old(bootstrap, topic, {0: 20, 1: 5, 2: 0})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    read = 0
    deadline = time.monotonic() + 30
    while read < 25:
        assert time.monotonic() < deadline, f"read only {read} of 25"
        message = consumer.poll(1.0)
        if message is None or message.error() is not None:
            continue
        consumer.commit(message=message, asynchronous=False)
        read += 1
    consumer.close()

    report = monitor.evaluate_group(group)
    assert report.status is Status.OK
    assert report.commit_timestamps == "commit-log"
    rows = by_partition(report)
    assert set(rows) == {0, 1}  # partition 2 was never committed
    assert [(rows[p].committed_offset, rows[p].lag_messages, rows[p].lag_seconds) for p in (0, 1)] == [
        (20, 0, 0.0),
        (5, 0, 0.0),
    ]
    assert all(rows[p].last_commit_at is not None for p in (0, 1))


def test_committing_the_same_offset_with_lag_is_stalled(
    bootstrap: str, unique_name: str, monitor: LagMonitor
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    stamps = produce_old(bootstrap, topic, {0: 10})
    consumer = ScriptedConsumer(bootstrap, group)
    position = consumer.read(topic, 0, 0, 4)
    for _ in range(3):
        consumer.commit(topic, 0, position)
    consumer.close()

    before = time.time()
    report = monitor.evaluate_group(group, topic)
    after = time.time()
    (row,) = report.partitions
    assert (row.status, row.committed_offset, row.lag_messages) == (Status.STALLED, 4, 6)
    assert row.lag_seconds is not None
    assert before - stamps[0][4] / 1000 <= row.lag_seconds <= after - stamps[0][4] / 1000
    assert report.status is Status.STALLED


def test_a_consumer_that_stopped_committing_is_stopped(bootstrap: str) -> None:
    stopped = make_stopped_group(bootstrap)
    with LagMonitor({"bootstrap.servers": bootstrap}, window_seconds=stopped.window) as monitor:
        before = time.time()
        report = monitor.evaluate_group(stopped.group, stopped.topic)
        after = time.time()
    (row,) = report.partitions
    assert (row.status, row.committed_offset, row.lag_messages) == (
        Status.STOPPED,
        stopped.committed,
        stopped.lag,
    )
    assert row.lag_seconds is not None
    assert before - stopped.first_unconsumed_ts <= row.lag_seconds <= after - stopped.first_unconsumed_ts


def test_committing_an_earlier_offset_is_rewound(
    bootstrap: str, unique_name: str, monitor: LagMonitor
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    produce_old(bootstrap, topic, {0: 10})
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, consumer.read(topic, 0, 0, 8))
    consumer.commit(topic, 0, 3)
    consumer.close()

    (row,) = monitor.evaluate_group(group, topic).partitions
    assert (row.status, row.committed_offset, row.lag_messages) == (Status.REWOUND, 3, 7)


def test_records_deleted_below_the_committed_offset_are_data_loss(
    bootstrap: str, unique_name: str, monitor: LagMonitor
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    stamps = produce_old(bootstrap, topic, {0: 10})
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, consumer.read(topic, 0, 0, 2))
    consumer.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_records([TopicPartition(topic, 0, 6)])[TopicPartition(topic, 0, 6)].result(timeout=30)

    before = time.time()
    report = monitor.evaluate_group(group, topic)
    (row,) = report.partitions
    assert row.status is Status.DATA_LOSS and report.status is Status.DATA_LOSS
    assert (row.log_start_offset, row.log_end_offset, row.committed_offset) == (6, 10, 2)
    assert (row.lag_messages, row.lost_range, row.lost_messages) == (8, (2, 6), 4)
    assert row.first_unconsumed_offset == 6  # the oldest unread record still there: a lower bound
    assert row.lag_seconds is not None and row.lag_seconds >= before - stamps[0][6] / 1000


def test_lag_growing_while_the_consumer_moves_is_warning(
    bootstrap: str, unique_name: str, monitor: LagMonitor
) -> None:
    """Each round 10 produced, 4 read and committed. The consumer may have read past its committed
    offset, so a sample's lag is proven only down to what its next commit allows: the growth is
    certain from the third evaluation on."""
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    consumer = ScriptedConsumer(bootstrap, group)
    position, produced = 0, 0
    statuses = []
    for _ in range(4):
        produce_old(bootstrap, topic, {0: 10}, age=1)
        produced += 10
        position = consumer.read(topic, 0, position, 4)
        consumer.commit(topic, 0, position)
        report = monitor.evaluate_group(group, topic)
        statuses.append(report.status)
        assert report.partitions[0].lag_messages == produced - position
    consumer.close()
    assert statuses == [Status.OK, Status.OK, Status.WARNING, Status.WARNING]
    assert report.partitions[0].consume_rate is not None and report.partitions[0].consume_rate > 0


def test_a_committed_offset_past_the_log_end_is_offset_beyond_log_end(
    bootstrap: str, unique_name: str, monitor: LagMonitor
) -> None:
    """Kafka accepts a commit of any offset; here one past the end of a three-record log."""
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    produce_old(bootstrap, topic, {0: 3})
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, 50)
    consumer.close()

    report = monitor.evaluate_group(group, topic)
    (row,) = report.partitions
    assert (row.status, report.status) == (Status.OFFSET_BEYOND_LOG_END, Status.OFFSET_BEYOND_LOG_END)
    assert (row.log_end_offset, row.committed_offset, row.lag_messages, row.lag_seconds) == (3, 50, 0, 0.0)
    document = row.to_json()
    assert (document["status"], document["severity"]) == ("OFFSET_BEYOND_LOG_END", 6)
    assert document["reason"].startswith("committed offset 50, log end 3: ")
    assert "--reset-offsets" in document["fix"]


def test_a_topic_recreated_under_a_group_is_offset_beyond_log_end_until_the_group_moves(
    bootstrap: str, unique_name: str, monitor: LagMonitor
) -> None:
    """The group read 10 records; the topic was deleted and created again and holds 4. Kafka drops
    a deleted topic's committed offsets, but a running consumer's next commit (auto-commit) writes
    its position back. The status stays while that offset does not move, after the new log grew
    past it too; once the group commits a reset offset it is REWOUND."""
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    produce_old(bootstrap, topic, {0: 10})
    consumer = ScriptedConsumer(bootstrap, group)
    position = consumer.read(topic, 0, 0, 10)
    consumer.commit(topic, 0, position)
    recreate_topic(bootstrap, topic)
    produce_old(bootstrap, topic, {0: 4})
    consumer.commit(topic, 0, position)

    (row,) = monitor.evaluate_group(group, topic).partitions
    assert (row.status, row.log_end_offset, row.committed_offset) == (Status.OFFSET_BEYOND_LOG_END, 4, 10)
    produce_old(bootstrap, topic, {0: 8})
    (row,) = monitor.evaluate_group(group, topic).partitions
    assert (row.status, row.log_end_offset, row.lag_messages) == (Status.OFFSET_BEYOND_LOG_END, 12, 2)
    consumer.commit(topic, 0, 0)
    consumer.close()
    (row,) = monitor.evaluate_group(group, topic).partitions
    assert (row.status, row.committed_offset) == (Status.REWOUND, 0)


def test_lag_seconds_is_the_age_of_the_first_unconsumed_record(
    bootstrap: str, unique_name: str, monitor: LagMonitor
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic, partitions=2)
    stamps = produce_old(bootstrap, topic, {0: 50, 1: 50}, age=OLD_SECONDS)
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, 17)
    consumer.commit(topic, 1, 50)
    consumer.close()

    before = time.time()
    report = monitor.evaluate_group(group, topic)
    after = time.time()
    rows = by_partition(report)
    assert rows[0].first_unconsumed_offset == 17
    assert rows[0].first_unconsumed_timestamp == stamps[0][17] / 1000
    assert rows[0].lag_seconds is not None
    assert before - stamps[0][17] / 1000 <= rows[0].lag_seconds <= after - stamps[0][17] / 1000
    assert rows[0].lag_seconds == pytest.approx(OLD_SECONDS, abs=after - before + 5)
    assert (rows[1].lag_messages, rows[1].lag_seconds, rows[1].first_unconsumed_offset) == (0, 0.0, None)
    assert report.max_lag_seconds == rows[0].lag_seconds


def test_figures_equal_the_admin_clients(bootstrap: str, unique_name: str, monitor: LagMonitor) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic, partitions=4)
    produce_old(bootstrap, topic, {0: 30, 1: 7, 2: 12, 3: 1})
    consumer = ScriptedConsumer(bootstrap, group)
    for partition, offset in {0: 11, 1: 7, 2: 0, 3: 1}.items():
        consumer.commit(topic, partition, offset)
    consumer.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_records([TopicPartition(topic, 2, 5)])[TopicPartition(topic, 2, 5)].result(timeout=30)

    rows = by_partition(monitor.evaluate_group(group, topic))
    expected = kafka_figures(admin, group, topic, 4)
    got = {
        p: (r.log_start_offset, r.log_end_offset, r.committed_offset, r.lag_messages) for p, r in rows.items()
    }
    assert got == expected


def kafka_figures(admin: AdminClient, group: str, topic: str, partitions: int) -> dict[int, tuple[int, ...]]:
    """(log start, log end, committed, lag) per partition, straight from AdminClient calls."""
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, tps)])[group].result()
    offsets = {tp.partition: tp.offset for tp in committed.topic_partitions}
    figures: dict[int, tuple[int, ...]] = {}
    for p in range(partitions):
        tp = TopicPartition(topic, p)
        start = int(admin.list_offsets({tp: EARLIEST})[tp].result().offset)
        end = int(admin.list_offsets({tp: LATEST})[tp].result().offset)
        figures[p] = (start, end, offsets[p], max(0, end - offsets[p]))
    return figures


def test_an_offsets_mapping_is_judged_with_the_callers_commit_times(
    bootstrap: str, unique_name: str, monitor: LagMonitor
) -> None:
    topic = unique_name
    create_topic(bootstrap, topic, partitions=3)
    stamps = produce_old(bootstrap, topic, {0: 10, 1: 10, 2: 10})
    offsets = {(topic, 0): 10, (topic, 1): 4, (topic, 2): 6}
    long_ago = {(topic, 0): time.time() - 100, (topic, 1): time.time() - 100, (topic, 2): time.time()}

    first = monitor.evaluate_offsets(offsets, name=f"{unique_name}-lmdb", commit_times=long_ago)
    rows = by_partition(first)
    assert (
        first.group == f"{unique_name}-lmdb" and first.topic == topic and first.commit_timestamps == "caller"
    )
    assert [rows[p].status for p in range(3)] == [Status.OK, Status.STOPPED, Status.OK]
    assert [rows[p].lag_messages for p in range(3)] == [0, 6, 4]
    assert rows[1].first_unconsumed_timestamp == stamps[1][4] / 1000

    again = monitor.evaluate_offsets(offsets, name=f"{unique_name}-lmdb")
    assert by_partition(again)[2].status is Status.STALLED  # re-stored 6 while record 6 waited


def test_without_the_commit_log_commits_are_inferred_from_samples(bootstrap: str, unique_name: str) -> None:
    """The documented fallback: a moving consumer is seen moving, a re-committing one as STOPPED."""
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic, partitions=2)
    produce_old(bootstrap, topic, {0: 10, 1: 10})
    consumer = ScriptedConsumer(bootstrap, group)
    config = {"bootstrap.servers": bootstrap}
    with LagMonitor(config, window_seconds=WIDE_WINDOW, read_commit_log=False) as monitor:
        consumer.commit(topic, 0, 2)
        consumer.commit(topic, 1, 5)
        first = monitor.evaluate_group(group, topic)
        consumer.commit(topic, 0, 6)
        consumer.commit(topic, 1, 5)
        second = monitor.evaluate_group(group, topic)
    consumer.close()
    assert first.commit_timestamps.startswith("inferred from samples")
    assert [p.status for p in second.partitions] == [Status.OK, Status.STOPPED]
    assert second.partitions[0].last_commit_at == second.evaluated_at


def test_two_commits_of_one_offset_in_one_millisecond_are_two_commits() -> None:
    """The commit log hands each record over once, so equal ones are distinct commits (a fast
    consumer re-committing); a caller restates its one stored commit on every call."""
    commit = Commit(at=1_800_000_000.123, offset=4)
    from_log, from_caller = _History(), _History()
    for _ in range(2):
        from_log.add_commit(commit, restated=False)
        from_caller.add_commit(commit, restated=True)
    assert (len(from_log.commits), len(from_caller.commits)) == (2, 1)
