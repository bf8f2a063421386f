"""The broker watch against a real broker and against an address where nothing listens."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from projector.broker_watch import KAFKA_LOG, BrokerWatch
from rewind.ground.settings import load_settings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_brokers_that_answer_pass_the_check(bootstrap: str) -> None:
    settings = load_settings(environ={"REWIND_BOOTSTRAP": bootstrap})
    answers: list[bool] = []
    watch = BrokerWatch(settings, on_answer=lambda: answers.append(True)).start()
    try:
        assert watch.wait_for_first_probe(30)
        check = watch.check()
        assert check["ok"] is True and check["bootstrap"] == bootstrap
        assert check["lost_after_seconds"] == 30 and check["last_contact_seconds_ago"] < 5
        assert "error" not in check and not watch.lost()
        assert answers == [True], "the first answer is announced once"
    finally:
        watch.stop()


def test_brokers_that_never_answer_are_lost_after_the_setting_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    settings = load_settings(environ={"REWIND_BOOTSTRAP": address, "REWIND_BROKER_LOST_AFTER_SECONDS": "1"})
    with caplog.at_level(logging.INFO, logger="rewind.broker"):
        watch = BrokerWatch(settings).start()
        try:
            assert not watch.wait_for_first_probe(10)
            deadline = time.monotonic() + 15
            while not watch.lost() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2.5)  # a few more probes without an answer
            check = watch.check()
        finally:
            watch.stop()
    assert check["ok"] is False and check["last_contact_seconds_ago"] > 1
    assert check["error"].startswith(f"the Kafka brokers at {address} have not answered for ")
    assert "Connection refused" in check["error"], "the client's own reason is given"
    assert check["fix"].startswith(f"check that the brokers in kafka.bootstrap ({address}; REWIND_BOOTSTRAP)")
    lost = [r.getMessage() for r in caplog.records if "lost the Kafka brokers" in r.getMessage()]
    assert len(lost) == 1, lost
    assert address in lost[0] and "broker.lost_after_seconds=1" in lost[0] and "fix: check" in lost[0]


def test_librdkafka_messages_that_differ_only_in_numbers_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="rewind.kafka"):
        for after in (0, 2, 0, 1):
            KAFKA_LOG.error("FAIL [rdkafka#consumer-9] Connect to 127.0.0.1:9 failed (after %dms)", after)
        KAFKA_LOG.error("FAIL [rdkafka#consumer-9] Disconnected")
    assert [r.getMessage() for r in caplog.records] == [
        "FAIL [rdkafka#consumer-9] Connect to 127.0.0.1:9 failed (after 0ms)",
        "FAIL [rdkafka#consumer-9] Disconnected",
    ]
