"""Foreseeable faults end in an ``error:`` and a ``fix:`` line with exit status 1, never a traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import lmdb
import pytest
from confluent_kafka import KafkaException, Producer

from rewind.foreseeable_faults import explain
from rewind.ground.errors import ConfigError
from tests.cli_runner import run_rewind


def _assert_clean_failure(result: object, *expected: str) -> None:
    stderr = getattr(result, "stderr", "")
    assert getattr(result, "returncode", None) == 1, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line.strip() for line in stderr.splitlines() if not line.startswith("%")]
    assert any(line.startswith("error: ") for line in lines), stderr
    assert any(line.startswith("fix: ") for line in lines), stderr
    for text in expected:
        assert text in stderr, stderr


def test_a_misspelled_kafka_property_names_the_property_and_where_to_fix_it(tmp_path: Path) -> None:
    env = {
        "REWIND_HOME": str(tmp_path),
        "REWIND_BOOTSTRAP": "127.0.0.1:9",
        "REWIND_KAFKA_FETCH_MAX_BYTEZ": "5",
    }
    result = run_rewind("topics", "list", env=env, timeout=60)
    _assert_clean_failure(result, '"fetch.max.bytez"', "REWIND_KAFKA_", "rewind config show")


def test_a_misspelled_property_in_rewind_toml_is_refused_the_same_way(tmp_path: Path) -> None:
    config = tmp_path / "rewind.toml"
    config.write_text('[kafka]\nbootstrap = "127.0.0.1:9"\n[kafka.properties]\n"socket.timeout.mz" = "100"\n')
    result = run_rewind(
        "--config", str(config), "topics", "list", env={"REWIND_HOME": str(tmp_path)}, timeout=60
    )
    _assert_clean_failure(result, '"socket.timeout.mz"', "[kafka.properties]")


def test_the_kafka_clients_own_refusal_is_explained_as_a_configuration_error() -> None:
    with pytest.raises(KafkaException) as caught:
        Producer({"bootstrap.servers": "127.0.0.1:9", "linger.mz": 5})
    explained = explain(caught.value)
    assert isinstance(explained, ConfigError)
    assert "linger.mz" in explained.what and explained.fix


def test_a_full_disk_names_the_file_and_the_fix() -> None:
    explained = explain(OSError(errno.ENOSPC, "No space left on device", "/var/rewind/snapshots/x.tmp"))
    assert explained is not None
    assert "/var/rewind/snapshots/x.tmp" in explained.what and "free space" in (explained.fix or "")


def test_an_lmdb_failure_says_the_state_stays_as_of_its_last_commit() -> None:
    explained = explain(lmdb.Error("mdb_txn_commit: Input/output error"))
    assert explained is not None and "last commit" in (explained.fix or "")


def test_a_bug_is_not_dressed_up_as_a_foreseeable_fault() -> None:
    assert explain(ValueError("a bug")) is None
    assert explain(OSError(errno.EBADF, "Bad file descriptor")) is None


@pytest.mark.parametrize("verb", ["list", "create"])
def test_an_unreachable_broker_is_reported_after_broker_wait_seconds(tmp_path: Path, verb: str) -> None:
    env = {"REWIND_HOME": str(tmp_path), "REWIND_BOOTSTRAP": "127.0.0.1:9", "REWIND_BROKER_WAIT_SECONDS": "2"}
    result = run_rewind("topics", verb, env=env, timeout=60)
    _assert_clean_failure(result, "Kafka did not answer", "broker.wait_seconds", "REWIND_BROKER_WAIT_SECONDS")
