"""Prometheus lag series from real reports: values, status series, stale partitions removed."""

from __future__ import annotations

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from rewind.lag import LagMonitor
from rewind.lag_metrics import LagMetrics
from rewind.lag_status import Status
from tests.kafka_helpers import create_topic
from tests.lag_helpers import ScriptedConsumer, produce_old


def test_series_follow_the_report(bootstrap: str, unique_name: str) -> None:
    topic, other, group = unique_name, f"{unique_name}-b", f"{unique_name}-g"
    create_topic(bootstrap, topic, partitions=2)
    create_topic(bootstrap, other)
    produce_old(bootstrap, topic, {0: 10, 1: 10})
    produce_old(bootstrap, other, {0: 3})
    consumer = ScriptedConsumer(bootstrap, group)
    for _ in range(2):
        consumer.commit(topic, 0, 4)
    consumer.commit(topic, 1, 1)
    consumer.commit(other, 0, 3)
    consumer.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_records([TopicPartition(topic, 1, 5)])[TopicPartition(topic, 1, 5)].result(timeout=30)

    registry = CollectorRegistry()
    metrics = LagMetrics(registry)
    with LagMonitor({"bootstrap.servers": bootstrap}, window_seconds=30) as monitor:
        metrics.update(monitor.evaluate_group(group))

        def value(name: str, partition: int, table: str = topic, **extra: str) -> float | None:
            labels = {"group": group, "topic": table, "partition": str(partition), **extra}
            return registry.get_sample_value(name, labels)

        assert value("rewind_consumer_lag_messages", 0) == 6
        assert value("rewind_consumer_committed_offset", 0) == 4
        assert value("rewind_log_end_offset", 0) == 10
        assert (value("rewind_log_start_offset", 1), value("rewind_consumer_lost_messages", 1)) == (5, 4)
        assert value("rewind_consumer_lag_status", 0, status="STALLED") == 1
        assert value("rewind_consumer_lag_status", 0, status="OK") == 0
        assert value("rewind_consumer_lag_status", 1, status="DATA_LOSS") == 1
        assert (value("rewind_consumer_lag_severity", 0), value("rewind_consumer_lag_severity", 1)) == (3, 5)
        assert value("rewind_consumer_lag_seconds", 0) is not None
        assert value("rewind_consumer_lag_seconds", 0, other) == 0
        assert registry.get_sample_value("rewind_consumer_group_lag_severity", {"group": group}) == 5
        assert registry.get_sample_value("rewind_lag_evaluation_seconds_count", {"group": group}) == 1

        metrics.update(monitor.evaluate_group(group, topic))
        assert value("rewind_consumer_lag_messages", 0, other) is None
        assert value("rewind_consumer_lag_status", 0, other, status="OK") is None
        assert value("rewind_consumer_lag_messages", 0) == 6
        assert registry.get_sample_value("rewind_lag_evaluation_seconds_count", {"group": group}) == 2


def test_an_offset_past_the_log_end_has_its_status_series_and_severity(
    bootstrap: str, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    produce_old(bootstrap, topic, {0: 3})
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, 30)
    consumer.close()

    registry = CollectorRegistry()
    with LagMonitor({"bootstrap.servers": bootstrap}, window_seconds=30) as monitor:
        LagMetrics(registry).update(monitor.evaluate_group(group))
    labels = {"group": group, "topic": topic, "partition": "0"}
    for status in Status:
        expected = 1 if status is Status.OFFSET_BEYOND_LOG_END else 0
        assert (
            registry.get_sample_value("rewind_consumer_lag_status", {**labels, "status": status.name})
            == expected
        )
    assert registry.get_sample_value("rewind_consumer_lag_severity", labels) == 6
    assert registry.get_sample_value("rewind_consumer_group_lag_severity", {"group": group}) == 6
    assert registry.get_sample_value("rewind_consumer_lag_messages", labels) == 0
    assert (
        registry.get_sample_value("rewind_consumer_committed_offset", labels),
        registry.get_sample_value("rewind_log_end_offset", labels),
    ) == (30, 3)
