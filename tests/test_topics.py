"""`rewind topics create` against the real broker: right shape, idempotent, never alters silently."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from rewind.ground.errors import RewindError
from rewind.ground.topics import events_partition_count
from tests.cli_runner import run_rewind


def _env(bootstrap: str, prefix: str) -> dict[str, str]:
    return {
        "REWIND_BOOTSTRAP": bootstrap,
        "REWIND_TOPICS_EVENTS": f"{prefix}.events",
        "REWIND_TOPICS_CONFIG": f"{prefix}.config",
        "REWIND_TOPICS_DEADLETTER": f"{prefix}.dlq",
    }


def test_creates_three_topics_with_infinite_retention(bootstrap: str, unique_name: str) -> None:
    env = _env(bootstrap, unique_name)
    first = json.loads(run_rewind("topics", "create", "--json", env=env, check=True).stdout)
    assert [o["action"] for o in first] == ["created", "created", "created"]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = admin.list_topics(timeout=15).topics
    assert len(topics[f"{unique_name}.events"].partitions) == 12
    assert len(topics[f"{unique_name}.config"].partitions) == 1
    for name in (f"{unique_name}.events", f"{unique_name}.config"):
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        config = admin.describe_configs([resource])[resource].result()
        assert config["retention.ms"].value == "-1"
        assert config["min.insync.replicas"].value == "1"

    second = json.loads(run_rewind("topics", "create", "--json", env=env, check=True).stdout)
    assert [o["action"] for o in second] == ["exists", "exists", "exists"]


def test_a_differing_topic_is_reported_and_left_alone(bootstrap: str, unique_name: str) -> None:
    env = _env(bootstrap, unique_name)
    run_rewind("topics", "create", "--partitions", "3", env=env, check=True)
    result = run_rewind("topics", "create", "--partitions", "6", env=env, check=True)
    assert "warning: partitions: wanted 6, topic has 3 (left unchanged)" in result.stderr
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics
    assert len(topics[f"{unique_name}.events"].partitions) == 3


def test_partition_count_of_one_topic_and_a_clear_error_for_a_missing_one(
    bootstrap: str, unique_name: str
) -> None:
    env = _env(bootstrap, unique_name)
    run_rewind("topics", "create", "--partitions", "5", env=env, check=True)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert events_partition_count(admin, f"{unique_name}.events") == 5
    missing = f"{unique_name}.missing"
    with pytest.raises(RewindError, match=f"topic {missing} does not exist") as raised:
        events_partition_count(admin, missing, wait_seconds=0.5)
    assert "rewind topics create" in str(raised.value.fix)
    assert missing not in admin.list_topics(timeout=15).topics  # reporting it missing did not create it
