"""What the HTTP API needs from the running service, and nothing more.

The service process implements :class:`ServiceView`; :func:`rewind.http_api.create_app` only ever
talks to it. Keeping the API behind this protocol lets the API be tested against real state without
Kafka, and keeps the service free to own threads, clients and the state directory's lifetime.

Threading: the API never calls these from the service's main thread. :meth:`ServiceView.settings`,
:meth:`ServiceView.health_checks` and :meth:`ServiceView.metrics_registry` are called on the API's
event loop and must return at once; every other method runs on an API worker thread, possibly
concurrently with the others, and must be safe to call while the projector runs. Methods that can be
refused (a rebuild already running, no state yet) raise :class:`rewind.ground.errors.RewindError`
with a message and a fix; the API turns that into a JSON error response.

:func:`snapshot_row` and :func:`snapshot_rows` build the snapshot documents the protocol returns, so
the service and the OpenAPI description agree on their shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from projector.state_directory import StateDirectory
from rewind.ground.settings import Settings
from snapshotter.snapshot import Snapshot, SnapshotInvalid, list_snapshots, load_snapshot
from snapshotter.snapshot_store import LOCAL


class ServiceView(Protocol):
    """The service as the HTTP API sees it."""

    def settings(self) -> Settings:
        """The effective configuration; the API reads ``http.token`` and ``lag.ready_max_seconds``
        from it on every request, so a service may swap it without restarting the API."""
        ...

    def state_directory(self) -> StateDirectory:
        """A read-only view of the live state. The service owns it (the API never closes it or
        writes through it) and returns a different one once a recovery or rebuild replaced the
        stores: the API's reader processes reopen the stores when it changes. With ``http.readers``
        0 the API reads it from one worker thread at a time."""
        ...

    def recovery_status(self) -> dict[str, Any]:
        """The recovery document (:meth:`replayer.recovery_tracker.RecoveryTracker.status`)."""
        ...

    def recovered(self) -> bool:
        """True once the state can be trusted: no recovery was needed, or the last one succeeded."""
        ...

    def health_checks(self) -> dict[str, dict[str, Any]]:
        """What ``/health`` reports, by check name (``broker``, ``projector``, ``disk``, ``snapshots``,
        ``recovery``): each a document with ``ok`` (bool), its details and, when not ok, ``error``
        and ``fix``. Called on the API's event loop: it must return at
        once (the service keeps the checks up to date on threads of its own)."""
        ...

    def projector_lag(self) -> dict[str, Any]:
        """The projector's latest lag report as JSON (:meth:`rewind.lag.LagReport.to_json`: group,
        status, per-partition lag in messages and seconds); may be a cached evaluation. Raises
        ``RewindError`` before the first evaluation (the API answers 503)."""
        ...

    def lag_seconds_max(self) -> float | None:
        """The largest per-partition lag in seconds of the latest evaluation; None before the first
        evaluation or when no partition could be measured (``/ready`` then reports not ready)."""
        ...

    def snapshots(self) -> list[dict[str, Any]]:
        """Every snapshot on disk, newest first per store, as :func:`snapshot_rows` gives them, then
        the remote store's (:class:`rewind.snapshot_listing.SnapshotListing`)."""
        ...

    def metrics_registry(self) -> CollectorRegistry:
        """The registry ``/metrics`` exposes: projector, lag and service metrics."""
        ...

    def take_snapshot(self) -> list[dict[str, Any]]:
        """Snapshot every store now and return what was taken, one :func:`snapshot_row` per store
        (stores that applied nothing yet are left out). Blocks until the snapshots are durable."""
        ...

    def request_rebuild(self) -> dict[str, Any]:
        """Schedule a rebuild of the state from the newest valid snapshot plus the log, and return at
        once with a document describing what was scheduled. By then :meth:`recovery_status`
        describes the rebuild and :meth:`recovered` is False until it is done. Raises
        ``RewindError`` when one is already running."""
        ...

    def reconcile(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Reconcile statement files of the drop folder (``reconcile.drop_dir``) named in ``query``
        (``positions``, ``balances``, ``orders``; ``as_of``) and return the report
        (:meth:`replayer.reconcile_report.ReconcileReport.as_dict`). Raises
        :class:`rewind.service_reconcile.StatementNotFound` for a name that is not a file there, and
        ``RewindError`` while another reconciliation runs or when it cannot finish."""
        ...

    def last_reconciliation(self) -> dict[str, Any] | None:
        """The last reconciliation that finished (:func:`rewind.service_reconcile.report_summary`),
        or None before the first."""
        ...


def snapshot_row(store: str, snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot of this host as the API shows it: ``store``, ``location`` (``local``), ``path`` and
    every manifest field."""
    row: dict[str, Any] = {"store": store, "location": LOCAL, "path": str(snapshot.path)}
    row.update(dataclasses.asdict(snapshot.manifest))
    row["schema_fingerprints"] = list(snapshot.manifest.schema_fingerprints)
    return row


def snapshot_rows(root: Path) -> list[dict[str, Any]]:
    """Every snapshot under ``root`` (store by store in name order, newest first within a store).

    Only manifests are read, so this is cheap; a snapshot whose manifest cannot be read is listed
    with ``store``, ``path``, ``offset`` and ``error`` rather than hidden.
    """
    rows: list[dict[str, Any]] = []
    stores = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for store in stores:
        for path in list_snapshots(root, store):
            try:
                rows.append(snapshot_row(store, load_snapshot(path)))
            except SnapshotInvalid as exc:
                rows.append(
                    {
                        "store": store,
                        "location": LOCAL,
                        "path": str(path),
                        "offset": int(path.name),
                        "error": str(exc),
                    }
                )
    return rows
