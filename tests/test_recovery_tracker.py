"""The recovery tracker's retry: RECOVERY_FAILED is final unless a retry was scheduled."""

from __future__ import annotations

import time

import pytest

from replayer.recovery_tracker import RecoveryTracker


def test_a_failed_recovery_is_final_unless_a_retry_is_scheduled() -> None:
    tracker = RecoveryTracker()
    tracker.failure_detected("unclean shutdown")
    tracker.begin()
    tracker.start_step("restore")
    tracker.failed("the Kafka brokers at kafka-1:9092 do not answer")
    with pytest.raises(AssertionError, match="cannot go from RECOVERY_FAILED"):
        tracker.failure_detected("unclean shutdown")
    failed = tracker.status()
    assert failed["state"] == "RECOVERY_FAILED" and failed["attempt"] == 1
    assert failed["retrying"] is False and failed["next_attempt_at"] is None

    before = time.time()
    tracker.schedule_retry(2.0)
    waiting = tracker.status()
    assert waiting["state"] == "RECOVERY_FAILED" and waiting["retrying"] is True
    assert 0 < waiting["next_attempt_in_seconds"] <= 2.0
    assert waiting["next_attempt_at"].endswith("Z")
    assert waiting["error"] == "the Kafka brokers at kafka-1:9092 do not answer"

    tracker.failure_detected("unclean shutdown")
    again = tracker.status()
    assert again["state"] == "FAILURE_DETECTED" and again["attempt"] == 2
    assert again["retrying"] is False and again["completed_steps"] == []
    assert again["error"] == "the Kafka brokers at kafka-1:9092 do not answer", "kept while the retry runs"
    assert time.time() - before < 2.0
    tracker.begin()
    for step in ("detect", "restore", "replay", "validate"):
        tracker.start_step(step)
        tracker.finish_step(step)
    tracker.recovered()
    done = tracker.status()
    assert done["state"] == "RECOVERED" and done["error"] is None and done["attempt"] == 2


def test_only_a_failed_recovery_can_be_retried() -> None:
    tracker = RecoveryTracker()
    with pytest.raises(AssertionError, match="nothing to retry in HEALTHY"):
        tracker.schedule_retry(1.0)


def test_a_failure_detected_again_before_its_recovery_begins_only_records_the_reason() -> None:
    tracker = RecoveryTracker()
    tracker.failure_detected("rebuild requested through the API")
    tracker.failure_detected("rebuild requested through the API, as the recovery starts")
    status = tracker.status()
    assert status["state"] == "FAILURE_DETECTED" and status["attempt"] == 1
    assert status["steps"]["detect"]["detail"] == "rebuild requested through the API, as the recovery starts"
    tracker.begin()
    assert tracker.status()["state"] == "RECOVERY_IN_PROGRESS"
