"""Prometheus metrics of the projector's hot path, updated once per batch (never per event)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ProjectorMetrics:
    """Counters and histograms of what the projector applied, and how long batches and commits took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "rewind_events_applied",
            "Events applied to state, by event type.",
            ["event_type"],
            registry=registry,
        )
        self.anomalies = Counter(
            "rewind_anomalies", "Events recorded as anomalies instead of being applied.", registry=registry
        )
        self.dead_letters = Counter(
            "rewind_dead_letters",
            "Records sent to the dead-letter topic, by error.",
            ["error"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "rewind_batch_apply_seconds",
            "Time to apply one consumed batch: decode, fold and LMDB commit.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "rewind_lmdb_commit_seconds",
            "Time of the LMDB commits of one batch (state and offsets, durable).",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def applied(self, counts: dict[str, int], anomalies: int) -> None:
        for event_type, count in counts.items():
            self.events.labels(event_type).inc(count)
        if anomalies:
            self.anomalies.inc(anomalies)

    def dead_letter(self, error: str) -> None:
        self.dead_letters.labels(error).inc()

    def observe_batch(self, batch_seconds: float, commit_seconds: float) -> None:
        self.batch_seconds.observe(batch_seconds)
        self.commit_seconds.observe(commit_seconds)
