"""ServiceMetrics: what each observe_* call does to the exported series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from replayer.recovery_tracker import RecoveryTracker
from rewind.service_metrics import ServiceMetrics
from snapshotter.snapshot import Manifest


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _manifest(store: str, offset: int, created_at: float, size: int = 4096) -> Manifest:
    return Manifest(
        partition=store,
        offset=offset,
        event_count=offset + 1,
        created_at=created_at,
        file_size=size,
        file_xxh3_128="0" * 32,
        state_digest="1" * 32,
        schema_fingerprints=(),
    )


def test_snapshot_series_and_age_from_the_clock() -> None:
    registry = CollectorRegistry()
    now = [1_000.0]
    metrics = ServiceMetrics(registry, clock=lambda: now[0])
    metrics.observe_snapshot(_manifest("events-p0000", 41, created_at=990.0, size=8192), 0.5)
    assert _value(registry, "rewind_snapshots_taken_total", store="events-p0000") == 1
    assert _value(registry, "rewind_snapshot_last_duration_seconds", store="events-p0000") == 0.5
    assert _value(registry, "rewind_snapshot_last_size_bytes", store="events-p0000") == 8192
    assert _value(registry, "rewind_snapshot_last_offset", store="events-p0000") == 41
    assert _value(registry, "rewind_snapshot_last_timestamp_seconds", store="events-p0000") == 990
    assert _value(registry, "rewind_snapshot_age_seconds", store="events-p0000") == 10
    now[0] = 1_060.0
    assert _value(registry, "rewind_snapshot_age_seconds", store="events-p0000") == 70
    metrics.snapshot_failed("events-p0000")
    assert _value(registry, "rewind_snapshot_failures_total", store="events-p0000") == 1


def test_snapshots_on_disk_counts_and_ages_what_a_restart_finds() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry, clock=lambda: 500.0)
    metrics.observe_snapshots_on_disk(
        [
            {"store": "config", "offset": 3, "created_at": 400.0},
            {"store": "config", "offset": 1, "created_at": 300.0},
            {"store": "events-p0001", "offset": 9, "error": "manifest missing"},
        ]
    )
    assert _value(registry, "rewind_snapshots_on_disk", store="config") == 2
    assert _value(registry, "rewind_snapshots_on_disk", store="events-p0001") == 1
    assert _value(registry, "rewind_snapshot_age_seconds", store="config") == 100
    assert _value(registry, "rewind_snapshot_age_seconds", store="events-p0001") is None
    metrics.observe_snapshots_on_disk([])
    assert _value(registry, "rewind_snapshots_on_disk", store="config") == 0


def test_recovery_series_follow_the_status_document() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    assert _value(registry, "rewind_recovery_state", state="RECOVERY_FAILED") == 0
    tracker = RecoveryTracker()
    tracker.begin()
    for step in ("detect", "restore", "replay"):
        tracker.start_step(step)
        tracker.finish_step(step)
    tracker.start_step("validate")
    tracker.failed("digest mismatch")
    metrics.observe_recovery(tracker.status())
    states = {
        s.labels["state"]: s.value
        for family in registry.collect()
        if family.name == "rewind_recovery_state"
        for s in family.samples
    }
    assert states == {
        "HEALTHY": 0,
        "FAILURE_DETECTED": 0,
        "RECOVERY_IN_PROGRESS": 0,
        "VALIDATING": 0,
        "RECOVERED": 0,
        "RECOVERY_FAILED": 1,
    }
    assert _value(registry, "rewind_recovery_progress_percent") == tracker.percent()
    for phase in ("restore", "replay"):
        assert _value(registry, "rewind_recovery_phase_seconds", phase=phase) is not None
    assert _value(registry, "rewind_recovery_phase_seconds", phase="validate") is None
    assert _value(registry, "rewind_recovery_elapsed_seconds") == tracker.status()["elapsed_seconds"]


def test_retried_recovery_attempts_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    tracker = RecoveryTracker()
    tracker.failure_detected("unclean shutdown")
    tracker.failed("the Kafka brokers at kafka-1:9092 do not answer")
    metrics.observe_recovery(tracker.status())
    assert _value(registry, "rewind_recovery_attempts") == 1
    tracker.schedule_retry(0.1)
    tracker.failure_detected("unclean shutdown")
    tracker.begin()
    metrics.observe_recovery(tracker.status())
    assert _value(registry, "rewind_recovery_attempts") == 2
    assert _value(registry, "rewind_recovery_state", state="RECOVERY_IN_PROGRESS") == 1


def test_broker_series_are_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    assert _value(registry, "rewind_broker_reachable") == 1
    assert _value(registry, "rewind_broker_contact_age_seconds") == 0
    lost, age = [False], [0.5]
    metrics.observe_broker(lambda: not lost[0], lambda: age[0])
    assert _value(registry, "rewind_broker_reachable") == 1
    lost[0], age[0] = True, 42.0
    assert _value(registry, "rewind_broker_reachable") == 0
    assert _value(registry, "rewind_broker_contact_age_seconds") == 42


def test_producer_counts_grow_by_differences_and_survive_a_new_producer() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    metrics.observe_producer_counts(sent=10, errors=1)
    metrics.observe_producer_counts(sent=15, errors=1)
    assert _value(registry, "rewind_producer_sent_total") == 15
    metrics.observe_producer_counts(sent=4, errors=0)  # a new producer counts from zero
    assert _value(registry, "rewind_producer_sent_total") == 19
    assert _value(registry, "rewind_producer_errors_total") == 1
    metrics.observe_producer_counts(sent=1, errors=2, producer="deadletter")
    assert _value(registry, "rewind_producer_errors_total") == 3
    metrics.observe_delivery(0.004)
    assert _value(registry, "rewind_producer_delivery_latency_seconds_count") == 1
    assert _value(registry, "rewind_producer_delivery_latency_seconds_bucket", le="0.005") == 1
