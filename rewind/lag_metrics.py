"""Prometheus series for consumer lag, fed from :class:`rewind.lag.LagReport`.

Per partition (labels ``group``, ``topic``, ``partition``): lag in messages and seconds, committed,
log start and log end offsets, messages lost to retention, the status as one 0/1 series per status
(``rewind_consumer_lag_status{status="STALLED"}``, one series for every
:class:`rewind.lag_status.Status`) and as a number (its severity, 0 OK to 6 OFFSET_BEYOND_LOG_END).
Per group: its status severity and the evaluation time histogram.

No consume-rate gauge: ``rate(rewind_consumer_committed_offset[5m])`` gives it in PromQL. A
partition whose lag in seconds could not be measured has no ``rewind_consumer_lag_seconds`` series
(absent, rather than a made-up value). Series of partitions that drop out of a group's report are
removed, so a scrape never shows stale partitions.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram

from rewind.lag import LagReport
from rewind.lag_status import Status

_LABELS: Final = ("group", "topic", "partition")
_EVALUATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SEVERITIES: Final = ", ".join(f"{int(status)} {status.name}" for status in Status)


class LagMetrics:
    """The lag series on ``registry`` (never the global default one); thread-safe :meth:`update`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, set[tuple[str, str, str]]] = {}

        def gauge(name: str, text: str, labels: tuple[str, ...] = _LABELS) -> Gauge:
            return Gauge(name, text, labels, registry=registry)

        self.lag_messages = gauge(
            "rewind_consumer_lag_messages", "Messages between the committed offset and the log end."
        )
        self.lag_seconds = gauge(
            "rewind_consumer_lag_seconds",
            "Age of the first unconsumed message: evaluation time minus its timestamp.",
        )
        self.committed_offset = gauge(
            "rewind_consumer_committed_offset", "The group's committed offset (next offset to consume)."
        )
        self.log_end_offset = gauge("rewind_log_end_offset", "Log end offset (high watermark).")
        self.log_start_offset = gauge("rewind_log_start_offset", "Log start offset (earliest retained).")
        self.lost_messages = gauge(
            "rewind_consumer_lost_messages",
            "Unconsumed messages retention deleted (committed offset below the log start).",
        )
        self.status = gauge(
            "rewind_consumer_lag_status",
            "1 for the partition's current lag status, 0 for the others.",
            (*_LABELS, "status"),
        )
        self.severity = gauge(
            "rewind_consumer_lag_severity",
            f"Lag status as a number: {_SEVERITIES}.",
        )
        self.group_severity = gauge(
            "rewind_consumer_group_lag_severity",
            "The group's status (its worst partition's) as a number, as for the partition series.",
            ("group",),
        )
        self.evaluation_seconds = Histogram(
            "rewind_lag_evaluation_seconds",
            "Wall time of one lag evaluation of a group.",
            ("group",),
            buckets=_EVALUATION_BUCKETS,
            registry=registry,
        )
        self._per_partition = (
            self.lag_messages,
            self.lag_seconds,
            self.committed_offset,
            self.log_end_offset,
            self.log_start_offset,
            self.lost_messages,
            self.severity,
        )

    def update(self, report: LagReport) -> None:
        """Set every series of ``report``'s group to the report; drop partitions it no longer has."""
        with self._lock:
            group = report.group
            current: set[tuple[str, str, str]] = set()
            for p in report.partitions:
                labels = (group, p.topic, str(p.partition))
                current.add(labels)
                self.lag_messages.labels(*labels).set(p.lag_messages)
                if p.lag_seconds is None:
                    _remove(self.lag_seconds, labels)
                else:
                    self.lag_seconds.labels(*labels).set(p.lag_seconds)
                self.committed_offset.labels(*labels).set(p.committed_offset)
                self.log_end_offset.labels(*labels).set(p.log_end_offset)
                self.log_start_offset.labels(*labels).set(p.log_start_offset)
                self.lost_messages.labels(*labels).set(p.lost_messages)
                self.severity.labels(*labels).set(int(p.status))
                for status in Status:
                    self.status.labels(*labels, status.name).set(1 if status is p.status else 0)
            for labels in self._seen.get(group, set()) - current:
                for series in self._per_partition:
                    _remove(series, labels)
                for status in Status:
                    _remove(self.status, (*labels, status.name))
            self._seen[group] = current
            self.group_severity.labels(group).set(int(report.status))
            self.evaluation_seconds.labels(group).observe(report.evaluation_seconds)


def _remove(series: Gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        series.remove(*labels)
