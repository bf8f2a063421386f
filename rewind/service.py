"""The rewind service: one process that recovers, follows the log, snapshots and reports.

Lifecycle of ``rewind serve``:
1. The HTTP API starts at once, so ``/health`` and ``/recovery/status`` answer during recovery, and
   so does the broker watch (:class:`projector.broker_watch.BrokerWatch`): brokers without an answer
   for ``broker.lost_after_seconds`` are logged once, fail ``/health`` and set
   ``rewind_broker_reachable`` to 0, until they answer again.
2. Recovery (newest valid snapshot + replay) rebuilds the live state. After a SIGKILL this is what
   makes the next start correct by itself. An attempt starts only once the brokers answer; one that
   fails for a reason that can pass (the brokers, a lock another process holds) is retried after
   0.1 s, 0.2 s, 0.4 s, ... at most every ``recovery.retry_max_seconds``, and at once when the
   brokers answer again, while the API reports RECOVERY_FAILED with the error and the next attempt.
   A failure that needs a person (:func:`needs_a_person`) is not retried: the API stays up reporting
   it, and the process exits 1 when stopped.
3. The projector follows the log. Snapshots are taken in a background thread every N events or T
   seconds (read transactions: the projector keeps writing) and pruned by the retention policy;
   lag is evaluated in another background thread, never on the hot path. A projector that stops for
   a reason that can pass is started again the same way recovery is retried.
4. SIGTERM or SIGINT: stop consuming after the current batch, take a final snapshot, mark the
   shutdown clean, exit 0. The consumer's close is bounded; whatever else still runs 9 s after the
   signal is cut short (:mod:`rewind.commands.stop_deadline`), so a stop always ends.

Threads: the main thread runs recovery and the projector; the API has its own event loop thread; the
snapshotter, lag evaluator and broker watch are daemon threads. LMDB environments are opened once,
by the projector, and shared read-only with the others (LMDB forbids opening one environment twice
in a process). State reads are answered by the API's reader processes (:mod:`rewind.state_readers`,
``http.readers``), each with its own read-only environments; they end with the API.

Processes: with ``http.front`` (the default) the public HTTP socket belongs to a front process
(:mod:`rewind.http_front`, started and replaced by :mod:`rewind.front_supervision`), which answers
``/live``, the state reads, ``/metrics`` and ``/lag`` itself and forwards every other request to this
process's API, served on a private Unix socket; the service tells it when the state may be read
through a status file (:mod:`rewind.front_status`). The front ends with the service, even after a
SIGKILL.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from aiohttp import web
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from projector.broker_watch import BrokerWatch
from projector.metrics import ProjectorMetrics
from projector.runner import AnomalyHalt, ProjectionProgress, Projector, store_source
from projector.state_directory import StateDirectory
from projector.store import MapCeilingReached
from replayer.reconcile_state import rows_of_directory
from replayer.reconciliation import RewindRows
from replayer.recovery import recover
from replayer.recovery_history_file import RecoveryRecorder, note_damage, service_cause, stored_records
from replayer.recovery_tracker import RecoveryTracker
from replayer.statement import KINDS
from rewind.cluster_membership import ClusterMember
from rewind.cluster_routing import install_cluster_routes
from rewind.commands import stop_deadline
from rewind.foreseeable_faults import explain
from rewind.front_status import STATUS_FILE_NAME, StatusWriter
from rewind.front_supervision import HttpFront, private_socket, unix_event_loop_answers, url_of
from rewind.ground.errors import ConfigError, DamagedState, DataLossError, InvariantViolation, RewindError
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from rewind.http_api import HttpServer, create_app, listen_socket, serve_http
from rewind.lag import LagMonitor, LagReport
from rewind.lag_metrics import LagMetrics
from rewind.sd_notify import Supervisor, event_loop_answers
from rewind.service_health import ProgressWatch, disk_check, recovery_check, snapshot_age_check
from rewind.service_metrics import ServiceMetrics
from rewind.service_reconcile import Reconciler
from rewind.service_view import snapshot_row, snapshot_rows
from rewind.snapshot_listing import SnapshotListing
from rewind.snapshot_shipping import SnapshotShipper
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
FINAL_SNAPSHOT_SECONDS = 4.0
"""How long after the stop signal a final snapshot may take before the service exits without
waiting for it (it then finishes in its own process): the rest of the stop's 10 s is for closing."""
HTTP_STOP_SECONDS = 2.0
REBUILD_REASON = "rebuild requested through the API"
FIRST_RETRY_SECONDS = 0.1
"""The first retry of a failed recovery (or of a projector that stopped) waits this long; each next one
twice as long as the one before, up to ``recovery.retry_max_seconds``."""

_NEEDS_A_PERSON = (
    DataLossError,
    DamagedState,
    AnomalyHalt,
    InvariantViolation,
    ConfigError,
    MapCeilingReached,
)


def needs_a_person(exc: BaseException) -> bool:
    """True for a failure no retry gets past: retention deleted events the state needs, a stored row
    that fails its checksum, the ``halt`` policy stopped before an event, a broken invariant, a bad
    configuration, a store at its map ceiling, or anything rewind does not know as a passing failure
    (a bug).

    Passing failures are rewind's other errors (the brokers do not answer, a topic is missing, another
    process holds the state), the Kafka client's (unless it refuses its configuration) and the
    operating system's (a full disk that gets room again).
    """
    if isinstance(exc, _NEEDS_A_PERSON):
        return True
    if isinstance(exc, KafkaException):
        return isinstance(explain(exc), ConfigError)
    return not isinstance(exc, RewindError | OSError)


def retry_delay(failures: int, longest: float) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: 0.1, 0.2, 0.4, ... at most ``longest``."""
    doublings: int = min(failures - 1, 30)
    return min(FIRST_RETRY_SECONDS * float(2**doublings), longest)


class SnapshotStillRunning(RewindError):
    """A snapshot child outlived the time it was given; it finishes (and publishes) on its own."""


def snapshot_in_child(settings: Settings, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``rewind snapshot --json`` on ``settings``' state directory in a lower-priority child.

    A separate process never competes for the projector's GIL; LMDB lets both in at once. The
    child's niceness is raised right after it starts, before it has imported enough to copy anything.
    After ``timeout`` seconds :class:`SnapshotStillRunning` is raised and the child is left running:
    a snapshot is published whole or not at all, so it may finish after this process is gone.
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
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SnapshotStillRunning(
            f"the snapshot (pid {child.pid}) was not done within {timeout:g} s; it finishes by itself",
            "nothing to do: `rewind snapshots list` shows it once it is published",
        ) from None
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


class Service:
    """The running service; also the :class:`rewind.service_view.ServiceView` the API reads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.registry = CollectorRegistry()
        self.projector_metrics = ProjectorMetrics(self.registry)
        self.service_metrics = ServiceMetrics(self.registry)
        for record in stored_records(settings):
            self.service_metrics.observe_recovery_record(record)
        self.lag_metrics = LagMetrics(self.registry)
        self.tracker = RecoveryTracker()
        self._stop = threading.Event()
        self._wake = threading.Event()
        """Ends a retry's wait early: set on a stop and when the brokers answer again."""
        self.broker = BrokerWatch(settings, on_answer=self._wake.set)
        self.supervisor = Supervisor()
        """systemd's supervision (rewind.sd_notify): READY=1 once the state is served, the watchdog."""
        self.service_metrics.observe_broker(lambda: not self.broker.lost(), self.broker.contact_age)
        self._doing = "starting"
        self._rebuild = threading.Event()
        self._projector: Projector | None = None
        self._projector_stop = threading.Event()
        self._readable = threading.Event()
        self._snapshot_due = threading.Event()
        self._snapshot_lock = threading.Lock()
        """Held while a snapshot is taken: one at a time."""
        self._directory_lock = threading.Lock()
        """Held while another thread reads the projector's directory, and while it is closed."""
        self._stop_requested_at = 0.0
        self._lag_report: LagReport | None = None
        self._failed = False
        self._events_at_last_snapshot = 0
        self._last_snapshot_at = time.monotonic()
        self.http: HttpServer | None = None
        """The service's own application: public, or behind :attr:`front` on a private socket."""
        self.front: HttpFront | None = None
        self.url = ""
        """The public URL of the API, once it is served."""
        self._front_status: StatusWriter | None = None
        self._started_at = time.monotonic()
        self._progress_watch = ProgressWatch(float(settings["health.stall_seconds"]))
        self._watch_lock = threading.Lock()
        self._disk: dict[str, Any] = {"ok": True, "detail": "not measured yet"}
        """The disk check, measured by the metrics thread (statvfs never runs on the API's loop)."""
        self._newest_snapshot_at: float | None = None
        """Epoch time of the newest snapshot on disk, or of the last snapshot run that copied nothing."""
        self._rebuild_lock = threading.Lock()
        self.reconciler = Reconciler(settings, self.registry, self._live_rows)
        self._snapshot_listing = SnapshotListing(settings)
        self.shipper = SnapshotShipper.from_settings(settings, self.service_metrics)
        """Uploads each snapshot round to the remote store in the background (None: no remote store)."""
        self.cluster = ClusterMember.from_settings(settings)
        """This instance as a member of a cluster (:mod:`rewind.cluster_membership`); None: alone."""
        if self.shipper is not None:
            self.shipper.on_shipped = self._snapshot_listing.invalidate
        if self.cluster is not None and self.shipper is not None:
            self.shipper.fence = self.cluster.fence

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

    def health_checks(self) -> dict[str, dict[str, Any]]:
        """``broker``, ``projector``, ``disk``, ``snapshots`` and ``recovery`` (rewind.service_health)."""
        settings = self._settings
        status = self.tracker.status()
        projector = self._projector
        running = projector is not None and self._readable.is_set()
        position: object = None
        if projector is not None:
            # When each store last committed: a batch folded but stuck before its commit is no progress.
            position = sorted(dict(projector.progress.commit_times).items())
        report = self._lag_report
        with self._watch_lock:
            projector_check = self._progress_watch.check(
                recovered=status["state"] == "RECOVERED",
                running=running,
                position=position,
                lag_messages=None if report is None else report.total_lag_messages,
                now=time.monotonic(),
            )
        return {
            "broker": self.broker.check(),
            "projector": projector_check,
            "disk": self._disk,
            "snapshots": snapshot_age_check(
                self._newest_snapshot_at,
                int(settings["snapshots.every_seconds"]),
                int(settings["health.snapshot_age_factor"]),
                time.monotonic() - self._started_at,
                time.time(),
            ),
            "recovery": recovery_check(status),
        } | ({"reconciliation": self.reconciler.check()} if self.reconciler.required else {})

    def projector_lag(self) -> dict[str, Any]:
        report = self._lag_report
        if report is None:
            raise RewindError("lag has not been evaluated yet", "retry in a few seconds")
        return report.to_json()

    def lag_seconds_max(self) -> float | None:
        report = self._lag_report
        return None if report is None else report.max_lag_seconds

    def snapshots(self) -> list[dict[str, Any]]:
        return self._snapshot_listing.rows()

    def metrics_registry(self) -> CollectorRegistry:
        return self.registry

    def take_snapshot(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Snapshot every store in a child process (``rewind snapshot``), so the copy and its digest
        never compete with the projector for this process's GIL; LMDB lets both processes in at once.

        With ``timeout``, give up waiting after that many seconds (for another snapshot to end, then
        for this one: :class:`SnapshotStillRunning`)."""
        with self._directory_lock:
            names = self.state_directory().store_names()
        rows: list[dict[str, Any]] = []
        asked = time.monotonic()
        if not self._snapshot_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise SnapshotStillRunning(
                "another snapshot is being taken; it finishes by itself", "nothing to do"
            )
        try:
            started = time.monotonic()
            left = None if timeout is None else max(0.0, timeout - (started - asked))
            taken = snapshot_in_child(self._settings, left)
            seconds = time.monotonic() - started
            if taken.returncode != 0:
                for name in names:
                    self.service_metrics.snapshot_failed(name)
                raise RewindError(f"snapshot failed: {taken.stderr.strip()}", "see the service log")
            for row in json.loads(taken.stdout):
                snapshot = load_snapshot(Path(row["path"]))
                self.service_metrics.observe_snapshot(snapshot.manifest, seconds)
                rows.append(snapshot_row(row["store"], snapshot))
            if self.shipper is not None and rows:
                self.shipper.offer([str(row["path"]) for row in rows])
            prune(self._settings.snapshot_dir, RetentionPolicy.from_settings(self._settings))
            self._newest_snapshot_at = max((float(row["created_at"]) for row in rows), default=time.time())
            self._events_at_last_snapshot = self._applied()
            self._last_snapshot_at = time.monotonic()
        finally:
            self._snapshot_lock.release()
        return rows

    def request_rebuild(self) -> dict[str, Any]:
        """The new recovery is in place before this returns: from then on /recovery/status describes
        it (FAILURE_DETECTED, reason :data:`REBUILD_REASON`) and /ready is 503 until it is done."""
        with self._rebuild_lock:
            if self._rebuild.is_set() or not self._readable.is_set():
                raise RewindError("a recovery or rebuild is already running", "watch /recovery/status")
            tracker = RecoveryTracker()
            tracker.failure_detected(REBUILD_REASON)
            self.tracker = tracker
            self._rebuild.set()
        self._projector_stop.set()
        return {
            "scheduled": "rebuild",
            "from": "newest valid snapshot + log",
            "status": "/recovery/status",
            "state": str(tracker.status()["state"]),
        }

    def reconcile(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Reconcile the drop folder's statement files named in ``query`` (``positions``, ``balances``,
        ``orders``) as of ``as_of`` (default: the statement's time, else the live state)."""
        names = {kind: query[kind] for kind in KINDS if kind in query}
        return self.reconciler.run_named(names, query.get("as_of")).as_dict()

    def last_reconciliation(self) -> dict[str, Any] | None:
        return self.reconciler.last_report()

    def _live_rows(self) -> tuple[RewindRows, dict[str, int]]:
        with self._directory_lock:
            return rows_of_directory(self.state_directory())

    def _reconcile_loop(self) -> None:
        every = int(self._settings["reconcile.every_seconds"])
        while not self._stop.wait(every):
            if not self._readable.is_set():
                continue
            try:
                report = self.reconciler.tick()
            except Exception as exc:
                log.error("reconciliation of the drop folder failed: %s", exc)
                continue
            if report is not None:
                counts = {kind: n for kind, n in report.outcome.counts().items() if n}
                log.info("reconciled %s: %s", report.statement.name, counts or "no breaks")

    # Lifecycle

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 if the state was not recovered."""
        if self.shipper is not None:
            self.shipper.check_access()  # wrong credentials or bucket: the clear error, before serving
        host, port = str(self._settings["http.host"]), int(self._settings["http.port"])
        app = create_app(self)
        if self.cluster is not None:
            install_cluster_routes(app, self.cluster)
        alive = self._serve_http(app, host, port)
        url = self.url
        if self.cluster is not None:
            self.cluster.start(url, self.registry)
        log.info("serving on %s", url)
        print(f"rewind serving on {url} (health {url}/health, metrics {url}/metrics)", flush=True)
        self._install_signal_handlers()
        self.supervisor.start(alive, lambda: self._doing)
        self.broker.start()
        threading.Thread(target=self._snapshot_loop, name="snapshotter", daemon=True).start()
        if self.shipper is not None:
            self.shipper.start()
        threading.Thread(target=self._lag_loop, name="lag", daemon=True).start()
        threading.Thread(target=self._metrics_loop, name="metrics", daemon=True).start()
        if int(self._settings["reconcile.every_seconds"]):
            threading.Thread(target=self._reconcile_loop, name="reconcile", daemon=True).start()
        try:
            while not self._stop.is_set():
                if not self._recover():
                    if not self._stop.is_set():
                        self._doing = "reporting a failed recovery"
                        self._stop.wait()
                    return 1
                self._rebuild.clear()
                self.reconciler.recovered()
                self._follow_retrying()
            return 0
        finally:
            self.supervisor.stopping()
            if self.shipper is not None:
                self._doing = "stopping the snapshot uploads"
                self.shipper.stop()
            if self.cluster is not None:
                self.cluster.stop()
            self._doing = "stopping the HTTP API"
            self.broker.stop()
            if self.front is not None:
                self.front.stop(HTTP_STOP_SECONDS)
            if self.http is not None:
                self.http.stop(HTTP_STOP_SECONDS)
            if self._front_status is not None:
                self._front_status.close()

    def _serve_http(self, app: web.Application, host: str, port: int) -> Callable[[float], bool]:
        """Serve ``app``: on ``host:port`` from a thread of this process, or (``http.front``) on a
        private Unix socket behind a front process that owns ``host:port``
        (:mod:`rewind.http_front`). Returns the watchdog's probe of this process's event loop."""
        settings = self._settings
        if not bool(settings["http.front"]):
            self.http = serve_http(app, host, port)
            self.url = self.http.url
            return functools.partial(event_loop_answers, self.http.host, self.http.port)
        public = listen_socket(settings, host, port)
        try:
            private, path = private_socket(settings)
            self.http = serve_http(app, host, port, listen=private)
            self._front_status = StatusWriter(settings.home / STATUS_FILE_NAME)
            self.front = HttpFront(
                settings, public, path, self._front_status.path, forward_state=self.cluster is not None
            )
            self.front.start()
        except BaseException:
            public.close()
            raise
        self.url = url_of(host, int(public.getsockname()[1]))
        return functools.partial(unix_event_loop_answers, path)

    def _set_readable(self, readable: bool) -> None:
        """Hand the state directory out (or stop), and tell the front before returning
        (:mod:`rewind.front_status`): it is told before any store is closed or replaced."""
        if readable:
            self._readable.set()
        else:
            self._readable.clear()
        if self._front_status is not None:
            self._front_status.publish(readable)

    def _install_signal_handlers(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the current batch", signum)
            self._stop_requested_at = self._stop_requested_at or time.monotonic()
            self._stop.set()
            self._projector_stop.set()
            self._wake.set()
            self.supervisor.stopping()
            stop_deadline.arm("rewind serve", lambda: self._doing)

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def _wait_to_retry(self, delay: float) -> None:
        """Wait ``delay`` seconds, or less if stopped or the brokers answer again meanwhile."""
        self._wake.wait(delay)

    def _marker(self) -> Path:
        return self._settings.state_dir / CLEAN_SHUTDOWN_MARKER

    def _recover(self) -> bool:
        """Recover the live state, retrying failures that can pass; True once recovered, False when
        stopped first or after a failure that needs a person."""
        marker = self._marker()
        reason = "clean restart" if marker.exists() else "unclean shutdown (no clean-shutdown marker)"
        if self._rebuild.is_set():
            reason = REBUILD_REASON
        cause = service_cause(self._settings, clean_marker=marker.exists(), rebuild=self._rebuild.is_set())
        recorder = RecoveryRecorder(self._settings, cause, self.service_metrics.observe_recovery_record)
        marker.unlink(missing_ok=True)
        longest = float(self._settings["recovery.retry_max_seconds"])
        failures = 0
        first_failure = 0.0
        reported = ""
        while not self._stop.is_set():
            self._wake.clear()
            self._doing = f"recovering (attempt {failures + 1})"
            recorder.attempt()
            try:
                self._require_brokers(reason)
                report = recover(
                    self._settings,
                    self.tracker,
                    partitions=None if self.cluster is None else [],  # members restore on assignment
                    reason=reason,
                    metrics=self.projector_metrics,
                )
            except Exception as exc:
                self.service_metrics.observe_recovery_failure(exc)
                if needs_a_person(exc):
                    log.error("recovery failed: %s", exc)
                    print(f"error: recovery failed: {exc}", flush=True)
                    self._failed = True
                    note_damage(self._settings.state_dir, exc)
                    recorder.finish(self.tracker, error=exc)
                    return False
                failures += 1
                first_failure = first_failure or time.monotonic()
                delay = retry_delay(failures, longest)
                self.tracker.schedule_retry(delay)
                if str(exc) != reported:  # one line per reason, not one per attempt
                    reported = str(exc)
                    log.error(
                        "recovery attempt %d failed, the live state is unchanged; retrying in %.1f s, then "
                        "doubling the wait up to recovery.retry_max_seconds=%g s (and at once when the "
                        "brokers answer again): %s",
                        failures,
                        delay,
                        longest,
                        exc,
                    )
                self._doing = "waiting to retry the recovery"
                self._wait_to_retry(delay)
                continue
            if failures:
                log.info(
                    "recovered on attempt %d, %.0f s after the first failure",
                    failures + 1,
                    time.monotonic() - first_failure,
                )
            timings = report.as_dict()["timings_seconds"]
            print(f"recovered in {report.total_seconds:.3f}s {timings}; digest {report.digest}", flush=True)
            recorder.finish(self.tracker, report)
            return True
        if recorder.attempts:
            recorder.finish(self.tracker, error="stopped before the recovery went live")
        return False

    def _require_brokers(self, reason: str) -> None:
        """Fail an attempt at once while the brokers do not answer, rather than after a request times
        out in the middle of it: the attempt is reported failed like any other."""
        if self.broker.wait_for_first_probe(float(self._settings["broker.wait_seconds"])):
            return
        error = self.broker.last_error()
        unreachable = RewindError(
            f"the Kafka brokers at {self.broker.bootstrap} do not answer"
            + (f" (last error: {error})" if error else ""),
            self.broker.fix,
        )
        self.tracker.failure_detected(reason)
        self.tracker.failed(str(unreachable))
        raise unreachable

    def _follow_retrying(self) -> None:
        """Follow the log until stopped or a rebuild is requested; a projector that stops for a reason
        that can pass is started again after a wait (0.1 s, doubling up to recovery.retry_max_seconds)."""
        longest = float(self._settings["recovery.retry_max_seconds"])
        failures = 0
        reported = ""
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._follow()
                return
            except Exception as exc:
                if self._stop.is_set():
                    log.warning("the projector stopped while the service was stopping: %s", exc)
                    return
                if needs_a_person(exc):
                    note_damage(self._settings.state_dir, exc)
                    raise
                failures += 1
                delay = retry_delay(failures, longest)
                if str(exc) != reported:
                    reported = str(exc)
                    log.error(
                        "the projector stopped, the state is as of its last batch; starting it again "
                        "in %.1f s (then doubling the wait up to recovery.retry_max_seconds=%g s): %s",
                        delay,
                        longest,
                        exc,
                    )
                self._doing = "waiting to start the projector again"
                self._wait_to_retry(delay)

    def _follow(self) -> None:
        settings = self._settings
        self._doing = "starting the projector"
        count = events_partition_count(AdminClient(settings.client_config()), settings.events_topic)
        self._projector_stop.clear()
        owned = range(count) if self.cluster is None else range(0)  # members: what the group assigns
        projector = Projector(settings, owned, metrics=self.projector_metrics)
        for partition in owned:
            projector.directory.partition(partition)
        projector.directory.config()
        self._projector = projector
        self._events_at_last_snapshot = 0
        self._last_snapshot_at = time.monotonic()
        self._set_readable(True)
        self.supervisor.ready("serving the recovered state")
        try:
            self._doing = "following the log"
            if self.cluster is not None:
                self.cluster.follow(projector, self._projector_stop, self._after_batch)
            else:
                projector.run(stop=self._projector_stop, on_batch=self._after_batch)
            if self._stop.is_set():
                self._doing = "taking the final snapshot"
                self._final_snapshot()
        finally:
            self._set_readable(False)
            with self._directory_lock:
                self._projector = None
                self._doing = "closing the projector"
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
        """Snapshot before exiting, unless that would hold the stop up: after
        :data:`FINAL_SNAPSHOT_SECONDS` from the signal the service goes on without waiting for it."""
        left = self._stop_requested_at + FINAL_SNAPSHOT_SECONDS - time.monotonic()
        try:
            taken = self.take_snapshot(timeout=max(0.0, left))
            print(f"final snapshot: {len(taken)} stores", flush=True)
        except SnapshotStillRunning as exc:
            log.warning("final snapshot: %s", exc.what)
            print(f"final snapshot: {exc.what}", flush=True)
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
            self._disk = disk_check(
                {"state": self._settings.state_dir, "snapshot": self._settings.snapshot_dir},
                int(self._settings["health.min_free_mb"]),
            )
            if tick % SNAPSHOT_SCAN_EVERY == 0:
                rows = snapshot_rows(self._settings.snapshot_dir)
                self.service_metrics.observe_snapshots_on_disk(rows)
                on_disk = [float(row["created_at"]) for row in rows if "created_at" in row]
                if on_disk and max(on_disk) > (self._newest_snapshot_at or 0.0):
                    self._newest_snapshot_at = max(on_disk)
            projector = self._projector
            if projector is not None:
                letters = projector.dead_letters
                self.service_metrics.observe_producer_counts(letters.sent, letters.failed, "deadletter")
            tick += 1
            self._stop.wait(METRICS_INTERVAL_SECONDS)

    def _lag_loop(self) -> None:
        """Evaluate lag every few seconds. A failure is logged when it starts (or changes), not at
        every evaluation, and its end is logged too. An evaluation that fails while the brokers answer
        is tried next with a new monitor: a client that knew a broker before it restarted can be
        refused for good (FENCED_LEADER_EPOCH) until it reads fresh metadata."""
        settings = self._settings
        failing = ""
        monitor = LagMonitor.from_settings(settings)
        try:
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
                    if str(exc) != failing:
                        failing = str(exc)
                        log.warning(
                            "lag evaluation failed (tried again every %g s): %s", LAG_INTERVAL_SECONDS, exc
                        )
                    if self.broker.answering():
                        monitor.close()
                        monitor = LagMonitor.from_settings(settings)
                    continue
                if failing:
                    failing = ""
                    log.info("lag evaluation works again")
        finally:
            monitor.close()


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
