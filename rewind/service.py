"""The rewind service: one process that recovers, follows the log, snapshots and reports.

Lifecycle of ``rewind serve``:
1. The HTTP API starts at once, so ``/health`` and ``/recovery/status`` answer during recovery.
2. Recovery (newest valid snapshot + replay) rebuilds the live state. After a SIGKILL this is what
   makes the next start correct by itself; a failed recovery keeps the API up, reporting
   RECOVERY_FAILED, and the process exits 1 when stopped.
3. The projector follows the log. Snapshots are taken in a background thread every N events or T
   seconds (read transactions: the projector keeps writing) and pruned by the retention policy;
   lag is evaluated in another background thread, never on the hot path.
4. SIGTERM or SIGINT: stop consuming after the current batch, take a final snapshot, mark the
   shutdown clean, exit 0.

Threads: the main thread runs recovery and the projector; the API has its own event loop thread; the
snapshotter and lag evaluator are daemon threads. LMDB environments are opened once, by the
projector, and shared read-only with the others (LMDB forbids opening one environment twice in a
process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from projector.metrics import ProjectorMetrics
from projector.runner import ProjectionProgress, Projector, store_source
from projector.state_directory import StateDirectory
from replayer.recovery import recover
from replayer.recovery_tracker import RecoveryTracker
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from rewind.http_api import HttpServer, create_app, serve_http
from rewind.lag import LagMonitor, LagReport
from rewind.lag_metrics import LagMetrics
from rewind.service_metrics import ServiceMetrics
from rewind.service_view import snapshot_row, snapshot_rows
from snapshotter.retention import RetentionPolicy, prune
from snapshotter.snapshot import load_snapshot

log = logging.getLogger("rewind.service")

REWIND = str(Path(sys.executable).with_name("rewind"))
SNAPSHOT_NICENESS = 19
"""Snapshots are background work: the kernel gives the projector's CPU time precedence over them
(and, on Linux, runs them only in CPU time nothing else wants: ``SCHED_IDLE``)."""
CLEAN_SHUTDOWN_MARKER = "CLEAN_SHUTDOWN"
LAG_INTERVAL_SECONDS = 5.0
"""Prometheus scrapes every 5 s (deploy/prometheus): evaluating lag more often only costs CPU."""
METRICS_INTERVAL_SECONDS = 1.0
SNAPSHOT_SCAN_EVERY = 10  # metrics ticks between scans of the snapshot directory


def snapshot_in_child(settings: Settings) -> subprocess.CompletedProcess[str]:
    """Run ``rewind snapshot --json`` on ``settings``' state directory in a lower-priority child.

    A separate process never competes for the projector's GIL; LMDB lets both in at once. The
    child's niceness is raised right after it starts, before it has imported enough to copy anything.
    """
    child = subprocess.Popen(
        [REWIND, "snapshot", "--json", "--state", str(settings.state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=settings.child_environ(),
    )
    with contextlib.suppress(OSError):  # it may have exited already; the snapshot is unaffected
        os.setpriority(os.PRIO_PROCESS, child.pid, SNAPSHOT_NICENESS)
    with contextlib.suppress(OSError, AttributeError):  # SCHED_IDLE is Linux-only
        os.sched_setscheduler(child.pid, os.SCHED_IDLE, os.sched_param(0))
    stdout, stderr = child.communicate()
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


class Service:
    """The running service; also the :class:`rewind.service_view.ServiceView` the API reads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.registry = CollectorRegistry()
        self.projector_metrics = ProjectorMetrics(self.registry)
        self.service_metrics = ServiceMetrics(self.registry)
        self.lag_metrics = LagMetrics(self.registry)
        self.tracker = RecoveryTracker()
        self._stop = threading.Event()
        self._rebuild = threading.Event()
        self._projector: Projector | None = None
        self._projector_stop = threading.Event()
        self._readable = threading.Event()
        self._snapshot_due = threading.Event()
        self._snapshot_lock = threading.Lock()
        self._lag_report: LagReport | None = None
        self._failed = False
        self._events_at_last_snapshot = 0
        self._last_snapshot_at = time.monotonic()
        self.http: HttpServer | None = None

    # ServiceView

    def settings(self) -> Settings:
        return self._settings

    def state_directory(self) -> StateDirectory:
        projector = self._projector
        if projector is None or not self._readable.is_set():
            raise RewindError("the state is not readable yet: recovery is in progress", "retry in a moment")
        return projector.directory

    def recovery_status(self) -> dict[str, Any]:
        return self.tracker.status()

    def recovered(self) -> bool:
        return self._readable.is_set() and self.tracker.status()["state"] == "RECOVERED"

    def projector_lag(self) -> dict[str, Any]:
        report = self._lag_report
        if report is None:
            raise RewindError("lag has not been evaluated yet", "retry in a few seconds")
        return report.to_json()

    def lag_seconds_max(self) -> float | None:
        report = self._lag_report
        return None if report is None else report.max_lag_seconds

    def snapshots(self) -> list[dict[str, Any]]:
        return snapshot_rows(self._settings.snapshot_dir)

    def metrics_registry(self) -> CollectorRegistry:
        return self.registry

    def take_snapshot(self) -> list[dict[str, Any]]:
        """Snapshot every store in a child process (``rewind snapshot``), so the copy and its digest
        never compete with the projector for this process's GIL; LMDB lets both processes in at once."""
        self.state_directory()
        rows: list[dict[str, Any]] = []
        with self._snapshot_lock:
            started = time.monotonic()
            taken = snapshot_in_child(self._settings)
            seconds = time.monotonic() - started
            if taken.returncode != 0:
                for name in self.state_directory().store_names():
                    self.service_metrics.snapshot_failed(name)
                raise RewindError(f"snapshot failed: {taken.stderr.strip()}", "see the service log")
            for row in json.loads(taken.stdout):
                snapshot = load_snapshot(Path(row["path"]))
                self.service_metrics.observe_snapshot(snapshot.manifest, seconds)
                rows.append(snapshot_row(row["store"], snapshot))
            prune(self._settings.snapshot_dir, RetentionPolicy.from_settings(self._settings))
            self._events_at_last_snapshot = self._applied()
            self._last_snapshot_at = time.monotonic()
        return rows

    def request_rebuild(self) -> dict[str, Any]:
        if self._rebuild.is_set() or not self._readable.is_set():
            raise RewindError("a recovery or rebuild is already running", "watch /recovery/status")
        self._rebuild.set()
        self._projector_stop.set()
        return {"scheduled": "rebuild", "from": "newest valid snapshot + log", "status": "/recovery/status"}

    # Lifecycle

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 if recovery failed."""
        host, port = str(self._settings["http.host"]), int(self._settings["http.port"])
        self.http = serve_http(create_app(self), host, port)
        log.info("serving on %s", self.http.url)
        print(
            f"rewind serving on {self.http.url} (health {self.http.url}/health, "
            f"metrics {self.http.url}/metrics)",
            flush=True,
        )
        self._install_signal_handlers()
        threading.Thread(target=self._snapshot_loop, name="snapshotter", daemon=True).start()
        threading.Thread(target=self._lag_loop, name="lag", daemon=True).start()
        threading.Thread(target=self._metrics_loop, name="metrics", daemon=True).start()
        try:
            while not self._stop.is_set():
                if not self._recover():
                    self._stop.wait()
                    return 1
                self._follow()
                if self._rebuild.is_set() and not self._stop.is_set():
                    self.tracker = RecoveryTracker()
                    self._rebuild.clear()
            return 0
        finally:
            self.http.stop()

    def _install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the current batch", signum)
            self._stop.set()
            self._projector_stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def _marker(self) -> Path:
        return self._settings.state_dir / CLEAN_SHUTDOWN_MARKER

    def _recover(self) -> bool:
        marker = self._marker()
        reason = "clean restart" if marker.exists() else "unclean shutdown (no clean-shutdown marker)"
        if self._rebuild.is_set():
            reason = "rebuild requested through the API"
        marker.unlink(missing_ok=True)
        try:
            report = recover(self._settings, self.tracker, reason=reason, metrics=self.projector_metrics)
        except Exception as exc:
            log.error("recovery failed: %s", exc)
            print(f"error: recovery failed: {exc}", flush=True)
            self._failed = True
            return False
        timings = report.as_dict()["timings_seconds"]
        print(f"recovered in {report.total_seconds:.3f}s {timings}; digest {report.digest}", flush=True)
        return True

    def _follow(self) -> None:
        settings = self._settings
        count = events_partition_count(AdminClient(settings.client_config()), settings.events_topic)
        self._projector_stop.clear()
        projector = Projector(settings, range(count), metrics=self.projector_metrics)
        for partition in range(count):
            projector.directory.partition(partition)
        projector.directory.config()
        self._projector = projector
        self._events_at_last_snapshot = 0
        self._last_snapshot_at = time.monotonic()
        self._readable.set()
        try:
            projector.run(stop=self._projector_stop, on_batch=self._after_batch)
            if self._stop.is_set():
                self._final_snapshot()
        finally:
            self._readable.clear()
            with self._snapshot_lock:
                self._projector = None
                projector.close()
        if self._stop.is_set():
            self._marker().write_text(f"{time.time()}\n")

    def _applied(self) -> int:
        projector = self._projector
        return 0 if projector is None else projector.progress.applied

    def _after_batch(self, progress: ProjectionProgress) -> None:
        every_events = int(self._settings["snapshots.every_events"])
        every_seconds = int(self._settings["snapshots.every_seconds"])
        if (every_events and progress.applied - self._events_at_last_snapshot >= every_events) or (
            every_seconds and time.monotonic() - self._last_snapshot_at >= every_seconds
        ):
            self._snapshot_due.set()

    def _final_snapshot(self) -> None:
        try:
            taken = self.take_snapshot()
            print(f"final snapshot: {len(taken)} stores", flush=True)
        except Exception as exc:
            log.error("final snapshot failed: %s", exc)
            print(f"error: final snapshot failed: {exc}", flush=True)

    def _snapshot_loop(self) -> None:
        every_seconds = int(self._settings["snapshots.every_seconds"])
        while not self._stop.is_set():
            self._snapshot_due.wait(timeout=every_seconds or None)
            self._snapshot_due.clear()
            if self._stop.is_set() or not self._readable.is_set():
                continue
            try:
                self.take_snapshot()
            except Exception as exc:
                log.error("scheduled snapshot failed: %s", exc)

    def _metrics_loop(self) -> None:
        """Push what is not measured on the hot path: recovery progress, snapshots on disk, the
        dead-letter producer's counts."""
        tick = 0
        while not self._stop.is_set():
            self.service_metrics.observe_recovery(self.tracker.status())
            if tick % SNAPSHOT_SCAN_EVERY == 0:
                self.service_metrics.observe_snapshots_on_disk(snapshot_rows(self._settings.snapshot_dir))
            projector = self._projector
            if projector is not None:
                letters = projector.dead_letters
                self.service_metrics.observe_producer_counts(letters.sent, letters.failed, "deadletter")
            tick += 1
            self._stop.wait(METRICS_INTERVAL_SECONDS)

    def _lag_loop(self) -> None:
        settings = self._settings
        with LagMonitor.from_settings(settings) as monitor:
            while not self._stop.wait(LAG_INTERVAL_SECONDS):
                projector = self._projector
                if projector is None or not self._readable.is_set():
                    continue
                offsets, commit_times = projector_offsets(settings, projector.progress)
                try:
                    report = monitor.evaluate_offsets(
                        offsets, name=str(settings["projector.group"]), commit_times=commit_times or None
                    )
                    self._lag_report = report
                    self.lag_metrics.update(report)
                except Exception as exc:
                    log.warning("lag evaluation failed: %s", exc)


def projector_offsets(
    settings: Settings, progress: ProjectionProgress
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], float]]:
    """The projector's next offsets (stored offset + 1) and when each was committed, by topic
    partition: what the lag monitor judges it on."""
    offsets: dict[tuple[str, int], int] = {}
    commit_times: dict[tuple[str, int], float] = {}
    for store, offset in dict(progress.offsets).items():
        topic_partition = store_source(settings, store)
        offsets[topic_partition] = offset + 1
        if store in progress.commit_times:
            commit_times[topic_partition] = progress.commit_times[store]
    return offsets, commit_times
