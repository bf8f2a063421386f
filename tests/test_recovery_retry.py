"""Which failures the service retries (recovery, the projector) and how long it waits between attempts."""

from __future__ import annotations

import errno

import lmdb
import pytest
from confluent_kafka import KafkaError, KafkaException

from projector.runner import AnomalyHalt
from projector.store import MapCeilingReached
from rewind.ground.errors import ConfigError, DataLossError, InvariantViolation, RewindError
from rewind.ground.settings import load_settings
from rewind.service import needs_a_person, retry_delay


@pytest.mark.parametrize(
    "failure",
    [
        DataLossError("data loss on rewind.events[3]", "restore a snapshot"),
        AnomalyHalt("halted before partition 3 offset 1200", "inspect it"),
        InvariantViolation("an offset that does not move forward", "report it"),
        ConfigError("the Kafka client refused its configuration", "correct it"),
        MapCeilingReached("events-p0003 reached its map ceiling", "raise state.max_map_mb"),
        KafkaException(KafkaError(KafkaError._INVALID_ARG, 'No such configuration property: "linger.mz"')),
        lmdb.CorruptedError("mdb_get: MDB_CORRUPTED"),
        ValueError("a bug"),
    ],
)
def test_failures_that_need_a_person_are_not_retried(failure: Exception) -> None:
    assert needs_a_person(failure)


@pytest.mark.parametrize(
    "failure",
    [
        RewindError("the Kafka brokers at kafka-1:9092 do not answer", "check them"),
        RewindError("could not describe topic rewind.events: timed out", "check the brokers"),
        RewindError("state directory /s is being written by pid 7", "stop that process"),
        KafkaException(KafkaError(KafkaError._TRANSPORT, "Connection refused")),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_failures_that_can_pass_are_retried(failure: Exception) -> None:
    assert not needs_a_person(failure)


def test_retries_wait_100_ms_then_double_up_to_the_bound() -> None:
    assert [retry_delay(n, 30.0) for n in range(1, 11)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        6.4,
        12.8,
        25.6,
        30.0,
    ]
    assert retry_delay(1_000, 30.0) == 30.0
    assert retry_delay(2, 0.15) == 0.15


def test_the_retry_bound_is_a_setting() -> None:
    assert load_settings(environ={})["recovery.retry_max_seconds"] == 30
    settings = load_settings(environ={"REWIND_RECOVERY_RETRY_MAX_SECONDS": "5"})
    assert settings["recovery.retry_max_seconds"] == 5
    assert load_settings(environ={})["broker.lost_after_seconds"] == 30
