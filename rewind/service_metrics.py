"""Prometheus metrics of the service around the projector: snapshots, recovery, brokers and producing.

The projector's own series live in :mod:`projector.metrics`, lag in the lag module. Everything here
is pushed by the service through small ``observe_*`` methods taking plain values (a manifest, the
recovery status document, a latency), so nothing in this module reaches into other components.
Every series is documented in ``docs/metrics.md``.

Snapshot series are labelled ``store`` (``config``, ``events-p0000``, ...), the snapshot's partition
store. All recovery-state series exist from the start (0), so alerts on them never see gaps; so do the
broker series (reachable, no time without contact) until :meth:`ServiceMetrics.observe_broker`, the
recovery's time target (:data:`RTO_TARGET_SECONDS`) and the data-loss flag, which is the one series
that says "data loss" while no lag is measured: a recovery that failed on a gap in the log leaves the
projector stopped, so no partition has a lag status.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from replayer.recovery_history import epoch_of
from replayer.recovery_tracker import RecoveryState
from rewind.ground.errors import DataLossError
from snapshotter.snapshot import Manifest

RECOVERY_PHASES: Final = ("restore", "replay", "validate")
RTO_TARGET_SECONDS: Final = 2.0
"""The recovery time objective: the firm's RTO target for a process crash, and what
``docs/benchmarks.md`` measures ``rewind recover`` against. ``RewindRecoverySlow`` pages once a
recovery runs 50 % past it (the firm's escalation rule)."""
_DELIVERY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The service's series on ``registry``; methods may be called from any thread.

    ``clock`` gives epoch seconds; snapshot age is computed from it at scrape time, so it keeps
    growing while no snapshot is taken. ``rto_target_seconds`` is exported as
    ``rewind_recovery_rto_target_seconds``, what the recovery alerts compare the elapsed time with.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        rto_target_seconds: float = RTO_TARGET_SECONDS,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._newest_snapshot: dict[str, float] = {}
        self._producer_counts: dict[str, tuple[int, int]] = {}
        self._newest_remote = 0.0

        self.snapshot_age = Gauge(
            "rewind_snapshot_age_seconds",
            "Seconds since the newest snapshot of the store was created.",
            ["store"],
            registry=registry,
        )
        self.snapshot_timestamp = Gauge(
            "rewind_snapshot_last_timestamp_seconds",
            "Creation time of the newest snapshot of the store, epoch seconds.",
            ["store"],
            registry=registry,
        )
        self.snapshot_duration = Gauge(
            "rewind_snapshot_last_duration_seconds",
            "How long the last snapshot this process took of the store took.",
            ["store"],
            registry=registry,
        )
        self.snapshot_size = Gauge(
            "rewind_snapshot_last_size_bytes",
            "Size of the last snapshot's compacted data file.",
            ["store"],
            registry=registry,
        )
        self.snapshot_offset = Gauge(
            "rewind_snapshot_last_offset",
            "Offset of the last event in the last snapshot.",
            ["store"],
            registry=registry,
        )
        self.snapshots_on_disk = Gauge(
            "rewind_snapshots_on_disk",
            "Snapshots of the store currently on disk (after retention).",
            ["store"],
            registry=registry,
        )
        self.snapshots_taken = Counter(
            "rewind_snapshots_taken",
            "Snapshots taken by this process.",
            ["store"],
            registry=registry,
        )
        self.snapshot_failures = Counter(
            "rewind_snapshot_failures",
            "Snapshots that failed to be taken.",
            ["store"],
            registry=registry,
        )
        self.upload_uploaded = Counter(
            "rewind_snapshot_upload_uploaded",
            "Rounds of snapshots shipped to the remote store.",
            registry=registry,
        )
        self.upload_failures = Counter(
            "rewind_snapshot_upload_failures",
            "Upload attempts that failed and are retried (store down, slow, refusing).",
            registry=registry,
        )
        self.upload_dropped = Counter(
            "rewind_snapshot_upload_dropped",
            "Rounds dropped from a full upload queue, oldest first; snapshots given up (local copy gone).",
            ["reason"],
            registry=registry,
        )
        self.upload_bytes = Counter(
            "rewind_snapshot_upload_bytes", "Bytes uploaded to the remote store.", registry=registry
        )
        self.upload_seconds = Histogram(
            "rewind_snapshot_upload_seconds",
            "Time of one upload of the waiting rounds (check, upload, manifest, remote prune).",
            buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
            registry=registry,
        )
        self.upload_queue = Gauge(
            "rewind_snapshot_upload_queue_length", "Rounds waiting for upload.", registry=registry
        )
        self.upload_newest_remote = Gauge(
            "rewind_snapshot_upload_newest_remote_timestamp_seconds",
            "Creation time of the newest snapshot this process knows in the remote store (0: none).",
            registry=registry,
        )
        self.upload_cadence = Gauge(
            "rewind_snapshot_upload_cadence_seconds",
            "Seconds between two snapshots (snapshots.every_seconds); 0 when no remote store is set.",
            registry=registry,
        )

        self.recovery_state = Gauge(
            "rewind_recovery_state",
            "1 for the current recovery state, 0 for every other.",
            ["state"],
            registry=registry,
        )
        for state in RecoveryState:
            self.recovery_state.labels(state.value).set(0)
        self.recovery_progress = Gauge(
            "rewind_recovery_progress_percent",
            "Progress of the current (or last) recovery, 0-100.",
            registry=registry,
        )
        self.recovery_phase = Gauge(
            "rewind_recovery_phase_seconds",
            "Duration of each finished phase of the current (or last) recovery.",
            ["phase"],
            registry=registry,
        )
        self.recovery_elapsed = Gauge(
            "rewind_recovery_elapsed_seconds",
            "Wall time of the current (or last) recovery, so far or in total.",
            registry=registry,
        )
        self.recovery_attempts = Gauge(
            "rewind_recovery_attempts",
            "Attempts of the current (or last) recovery; above 1 once a failed one was retried.",
            registry=registry,
        )
        self.recovery_rto_target = Gauge(
            "rewind_recovery_rto_target_seconds",
            "The recovery time objective: how long a recovery is meant to take at most.",
            registry=registry,
        )
        self.recovery_rto_target.set(rto_target_seconds)
        self.recovery_data_loss = Gauge(
            "rewind_recovery_data_loss",
            "1 while the recovery has failed because the log no longer holds events the state needs.",
            registry=registry,
        )

        self.recovery_last_duration = Gauge(
            "rewind_recovery_last_duration_seconds",
            "Duration of the newest recorded recovery of each reason, labelled with how it ended.",
            ["reason", "outcome"],
            registry=registry,
        )
        self.recovery_last_downtime = Gauge(
            "rewind_recovery_last_downtime_seconds",
            "Downtime of the newest recorded recovery of each reason that went live: from the last "
            "event applied before it to the recovered state being live.",
            ["reason"],
            registry=registry,
        )
        self.recovery_last_end = Gauge(
            "rewind_recovery_last_end_timestamp_seconds",
            "When the newest recorded recovery of each reason ended.",
            ["reason"],
            registry=registry,
        )

        self.broker_reachable = Gauge(
            "rewind_broker_reachable",
            "0 once the Kafka brokers have not answered for broker.lost_after_seconds, else 1.",
            registry=registry,
        )
        self.broker_reachable.set(1)
        self.broker_contact_age = Gauge(
            "rewind_broker_contact_age_seconds",
            "Seconds since the Kafka brokers last answered.",
            registry=registry,
        )

        self.producer_sent = Counter(
            "rewind_producer_sent", "Records the broker acknowledged.", registry=registry
        )
        self.producer_errors = Counter(
            "rewind_producer_errors", "Records the broker did not acknowledge.", registry=registry
        )
        self.producer_latency = Histogram(
            "rewind_producer_delivery_latency_seconds",
            "From produce() to the broker's acknowledgement, per record.",
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )

    # Snapshots

    def observe_snapshot(self, manifest: Manifest, seconds: float) -> None:
        """A snapshot was taken: ``manifest`` is what it published, ``seconds`` how long it took."""
        store = manifest.partition
        self.snapshots_taken.labels(store).inc()
        self.snapshot_duration.labels(store).set(seconds)
        self.snapshot_size.labels(store).set(manifest.file_size)
        self.snapshot_offset.labels(store).set(manifest.offset)
        self._newest(store, manifest.created_at)

    def snapshot_failed(self, store: str) -> None:
        self.snapshot_failures.labels(store).inc()

    def observe_upload(self, rounds: int, sent_bytes: int, seconds: float, newest_created_at: float) -> None:
        """``rounds`` rounds of snapshots reached the remote store in one upload of ``seconds``."""
        self.upload_uploaded.inc(rounds)
        self.upload_bytes.inc(sent_bytes)
        self.upload_seconds.observe(seconds)
        with self._lock:
            if newest_created_at > self._newest_remote:
                self._newest_remote = newest_created_at
                self.upload_newest_remote.set(newest_created_at)

    def observe_snapshots_on_disk(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """What is on disk now, as :func:`rewind.service_view.snapshot_rows` lists it: sets the count
        per store and the age of each store's newest readable snapshot (also after a restart)."""
        counts: dict[str, int] = {}
        for row in rows:
            store = str(row["store"])
            counts[store] = counts.get(store, 0) + 1
            created = row.get("created_at")
            if isinstance(created, int | float) and "error" not in row:
                self._newest(store, float(created))
        for store, count in counts.items():
            self.snapshots_on_disk.labels(store).set(count)
        for store in self._newest_snapshot.keys() - counts.keys():
            self.snapshots_on_disk.labels(store).set(0)

    def _newest(self, store: str, created_at: float) -> None:
        with self._lock:
            if created_at <= self._newest_snapshot.get(store, float("-inf")):
                return
            first = store not in self._newest_snapshot
            self._newest_snapshot[store] = created_at
            self.snapshot_timestamp.labels(store).set(created_at)
        if first:
            self.snapshot_age.labels(store).set_function(
                lambda: max(0.0, self._clock() - self._newest_snapshot[store])
            )

    # Recovery

    def observe_recovery(self, status: Mapping[str, Any]) -> None:
        """The recovery status document (:meth:`replayer.recovery_tracker.RecoveryTracker.status`); call it
        whenever the status may have changed (on each step, or on a timer)."""
        current = str(status["state"])
        for state in RecoveryState:
            self.recovery_state.labels(state.value).set(1 if state.value == current else 0)
        self.recovery_progress.set(float(status["progress_percent"]))
        steps: Mapping[str, Mapping[str, Any]] = status.get("steps") or {}
        for phase in RECOVERY_PHASES:
            seconds = steps.get(phase, {}).get("seconds")
            if seconds is not None:
                self.recovery_phase.labels(phase).set(float(seconds))
        elapsed = status.get("elapsed_seconds")
        self.recovery_elapsed.set(0.0 if elapsed is None else float(elapsed))
        self.recovery_attempts.set(int(status.get("attempt") or 1))
        if current != RecoveryState.RECOVERY_FAILED:
            self.recovery_data_loss.set(0)

    def observe_recovery_failure(self, error: BaseException) -> None:
        """A recovery attempt failed with ``error``: ``rewind_recovery_data_loss`` is 1 when it was a
        :class:`~rewind.ground.errors.DataLossError` (never retried), 0 for any other failure, and back
        to 0 once :meth:`observe_recovery` sees a state other than ``RECOVERY_FAILED``."""
        self.recovery_data_loss.set(1 if isinstance(error, DataLossError) else 0)

    def observe_recovery_record(self, record: Mapping[str, Any]) -> None:
        """A recovery history record (:mod:`replayer.recovery_history`), pushed as it is written and
        for each stored one, oldest first, at start: each reason's series then describe its newest
        record."""
        reason = str(record.get("reason"))
        outcome = str(record.get("outcome"))
        with self._lock:
            for other in ("live", "failed"):
                if other != outcome:
                    with contextlib.suppress(KeyError):
                        self.recovery_last_duration.remove(reason, other)
            duration = record.get("duration_seconds")
            if isinstance(duration, int | float):
                self.recovery_last_duration.labels(reason, outcome).set(float(duration))
            downtime = record.get("downtime_seconds")
            if isinstance(downtime, int | float):
                self.recovery_last_downtime.labels(reason).set(float(downtime))
            elif outcome == "live":
                with contextlib.suppress(KeyError):
                    self.recovery_last_downtime.remove(reason)
            ended = epoch_of(str(record.get("ended_at")))
            if ended is not None:
                self.recovery_last_end.labels(reason).set(ended)

    # Brokers

    def observe_broker(self, reachable: Callable[[], bool], contact_age: Callable[[], float]) -> None:
        """Read the brokers' state at every scrape: ``reachable()`` is False once they count as lost,
        ``contact_age()`` the seconds since they last answered
        (:class:`projector.broker_watch.BrokerWatch`'s ``lost`` and ``contact_age``)."""
        self.broker_reachable.set_function(lambda: 1.0 if reachable() else 0.0)
        self.broker_contact_age.set_function(contact_age)

    # Producing

    def observe_delivery(self, seconds: float) -> None:
        """One acknowledged record's delivery latency; fits ``EventProducer(latency_observer=...)``."""
        self.producer_latency.observe(seconds)

    def observe_producer_counts(self, sent: int, errors: int, producer: str = "default") -> None:
        """A producer's cumulative acknowledged and failed counts (``EventProducer.acked`` and
        ``.failed``); the counters grow by the difference since the last call for ``producer``.
        Counts below the last ones mean a new producer under the same name, counted from zero."""
        with self._lock:
            last_sent, last_errors = self._producer_counts.get(producer, (0, 0))
            if sent < last_sent or errors < last_errors:
                last_sent, last_errors = 0, 0
            self._producer_counts[producer] = (sent, errors)
        self.producer_sent.inc(sent - last_sent)
        self.producer_errors.inc(errors - last_errors)
