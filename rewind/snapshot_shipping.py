"""Shipping the service's snapshots to the remote store, in the background, never in the projector's way.

After each snapshot round the service offers the round's directories to a bounded
:class:`~snapshotter.upload_queue.UploadQueue` and goes on. Its worker runs ``rewind snapshots upload``
in a low-priority child process (like the snapshot itself), so hashing and sending hundreds of
megabytes never compete with the projector for this process's GIL or CPU time. The child uploads
data, checks it, writes the manifest last and prunes the remote level; its JSON says what it did.

A round the child could not ship because the store is down, slow or refusing is retried with backoff;
one whose local copy is gone (pruned meanwhile) or fails its checksum is given up, counted and logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from rewind.ground.settings import Settings
from rewind.service_metrics import ServiceMetrics
from snapshotter.snapshot import list_snapshots
from snapshotter.snapshot_store import remote_store
from snapshotter.upload_queue import Attempt, Outcome, UploadQueue

log = logging.getLogger("rewind.upload")

Fence = Callable[[tuple[str, ...]], tuple[tuple[str, ...], list[str]]]
"""A round's paths -> the ones that may be shipped, and why each other one may not."""

REWIND = str(Path(sys.executable).with_name("rewind"))
UPLOAD_NICENESS = 19
UPLOAD_TIMEOUT_SECONDS = 3600.0
"""A child still running after this long is killed and its rounds retried (a hung connection)."""
PROBE_SECONDS = 2.0
STOP_SECONDS = 2.0
"""How long a stopping service waits for a cut-short upload child to exit before killing it."""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    error = [line for line in lines if line.startswith("error:")]
    return (error[0] if error else lines[-1] if lines else "no output").removeprefix("error: ")


class SnapshotShipper:
    """The upload queue of one service and the child that empties it."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self.queue: UploadQueue[tuple[str, ...]] = UploadQueue(
            self._ship,
            bound=int(settings["snapshots.remote.queue_max"]),
            retry_max_seconds=float(settings["snapshots.remote.retry_max_seconds"]),
            on_change=self._changed,
        )
        metrics.upload_cadence.set(float(settings["snapshots.every_seconds"]))
        self._child: subprocess.Popen[str] | None = None
        self._child_lock = threading.Lock()
        self._stopping = False
        self.fence: Fence | None = None
        """In a cluster: which snapshots of a round this member may still ship (cluster_membership)."""
        self.on_shipped: Callable[[], None] | None = None
        """Called after each shipped round (the service has its remote listing read again)."""

    @classmethod
    def from_settings(cls, settings: Settings, metrics: ServiceMetrics) -> SnapshotShipper | None:
        """The shipper when ``snapshots.remote.bucket`` is set, else None."""
        if not str(settings["snapshots.remote.bucket"]):
            return None
        return cls(settings, metrics)

    def check_access(self) -> None:
        """Raise the remote store's clear error now for settings no retry fixes (credentials, a
        missing bucket); a store that does not answer is only logged, uploads wait for it."""
        from snapshotter.s3_store import S3SnapshotStore
        from snapshotter.snapshot_store import RemoteUnavailable

        remote = remote_store(self._settings)
        if isinstance(remote, S3SnapshotStore):
            try:
                remote.check_access()
            except RemoteUnavailable as exc:
                log.warning("remote snapshot store: %s (uploads wait for it)", exc.what)

    def start(self) -> None:
        """Start the worker and offer each store's newest local snapshot (one a stop or an outage
        left unshipped goes now; one already in the bucket is skipped by the child)."""
        self.queue.start()
        root = self._settings.snapshot_dir
        newest = [
            str(found[0])
            for name in (sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
            if (found := list_snapshots(root, name))
        ]
        if newest:
            self.offer(newest)

    def offer(self, paths: list[str]) -> None:
        """Queue one round of snapshot directories; returns at once."""
        self.queue.offer(tuple(paths))

    def stop(self) -> None:
        """Stop shipping now: an upload under way is cut short (it left no manifest, so no snapshot;
        the next start ships that round again), nothing outlives the service."""
        self._stopping = True
        self.queue.stop(timeout=0.0)
        with self._child_lock:
            child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _endpoint_answers(self) -> bool:
        """Whether the endpoint accepts a TCP connection: a retry after a failure starts a child only
        then. True when there is nothing to probe (AWS's endpoint, an unreadable setting)."""
        endpoint = str(self._settings["snapshots.remote.endpoint"])
        if endpoint == "local":
            try:
                endpoint = (self._settings.home / "s3" / "endpoint").read_text().strip()
            except OSError:
                return False
        parsed = urllib.parse.urlsplit(endpoint)
        if not parsed.hostname:
            return True
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=PROBE_SECONDS).close()
        except OSError:
            return False
        return True

    def _changed(self, queue: UploadQueue[tuple[str, ...]], what: str) -> None:
        self._metrics.upload_queue.set(len(queue))
        if what == "failed":
            self._metrics.upload_failures.inc()
        elif what == "dropped":
            self._metrics.upload_dropped.labels("queue_full").inc()
        elif what == "shipped" and self.on_shipped is not None:
            self.on_shipped()

    def _ship(self, rounds: list[tuple[str, ...]]) -> Attempt:
        """Upload every waiting round in one child, oldest first."""
        paths = [path for round_ in rounds for path in round_]
        if self.fence is not None:
            allowed, refused = self.fence(tuple(paths))
            for reason in refused:
                log.warning("snapshot not shipped: %s", reason)
            if not allowed:
                return Attempt(Outcome.GIVE_UP, "; ".join(refused))
            paths = list(allowed)
        if self.queue.last_error and not self._endpoint_answers():
            return Attempt(Outcome.RETRY, self.queue.last_error)  # no child while the store is away
        started = time.monotonic()
        with self._child_lock:
            if self._stopping:
                return Attempt(Outcome.RETRY, "the service is stopping")
            child = self._child = subprocess.Popen(
                [REWIND, "snapshots", "upload", "--json", *paths],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=self._settings.child_environ(),
            )
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, child.pid, UPLOAD_NICENESS)
        with contextlib.suppress(OSError, AttributeError):  # SCHED_IDLE is Linux-only
            os.sched_setscheduler(child.pid, os.SCHED_IDLE, os.sched_param(0))
        try:
            stdout, stderr = child.communicate(timeout=UPLOAD_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return Attempt(Outcome.RETRY, f"the upload did not end within {UPLOAD_TIMEOUT_SECONDS:.0f} s")
        try:
            document = json.loads(stdout)
        except ValueError:
            return Attempt(Outcome.RETRY, _last_line(stderr or stdout))
        uploaded = document.get("uploaded", [])
        self._metrics.observe_upload(
            len(rounds),
            sum(int(row["bytes"]) for row in uploaded),
            time.monotonic() - started,
            max((float(row["created_at"]) for row in uploaded), default=0.0),
        )
        invalid = document.get("invalid", [])
        if invalid:
            self._metrics.upload_dropped.labels("given_up").inc(len(invalid))
            log.error("snapshot upload skipped: %s", "; ".join(row["error"] for row in invalid))
        if not uploaded:
            return Attempt(Outcome.GIVE_UP, "no snapshot of the round could be uploaded")
        return Attempt(Outcome.SHIPPED)
