"""Snapshots as ``GET /snapshots`` lists them: the local directory's, then (with
``snapshots.remote.bucket`` set) the remote store's, every row saying its ``location``.

Guarantees:

* Local rows are read from the manifests on disk at every call (:func:`rewind.service_view.snapshot_rows`).
* The remote store is listed on a thread of its own, never on the caller's: a call gets the last
  listing at once and, when that is over :data:`REMOTE_LIST_SECONDS` old, starts the next one (at
  most one runs). A store that is down therefore never holds up an API worker (``/ready`` shares
  them), and is asked at most once per :data:`REMOTE_LIST_SECONDS` plus its timeouts. Until the
  first listing has finished, no remote rows are given.
* After :meth:`SnapshotListing.invalidate` (the service shipped a round), the next call starts a
  new listing whatever the last one's age, so a shipped snapshot is listed within one listing's
  time; a listing that was running meanwhile counts as already old.
* A remote store that cannot be listed (down, refusing the credentials, no bucket) is one row with
  ``location`` ``remote``, the store's address and the ``error``: never hidden, and never a failure
  of the whole list.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from typing import Any, Final

from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from rewind.service_view import snapshot_rows
from snapshotter.snapshot_store import REMOTE, StoredSnapshot, remote_store

__all__ = ["REMOTE_LIST_SECONDS", "SnapshotListing", "stored_snapshot_row"]

REMOTE_LIST_SECONDS: Final = 15.0

log = logging.getLogger(__name__)


def stored_snapshot_row(snapshot: StoredSnapshot) -> dict[str, Any]:
    """A snapshot of a store's listing as the API shows it, like
    :func:`rewind.service_view.snapshot_row` (``path`` is its address, ``s3://`` for a remote one)."""
    row: dict[str, Any] = {"store": snapshot.store, "location": snapshot.location, "path": snapshot.address}
    if snapshot.manifest is None:
        return row | {"offset": snapshot.offset, "error": snapshot.error or "manifest not read"}
    row.update(dataclasses.asdict(snapshot.manifest))
    row["schema_fingerprints"] = list(snapshot.manifest.schema_fingerprints)
    return row


class SnapshotListing:
    """The snapshot rows of one service; safe to call from several threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._remote: tuple[float, list[dict[str, Any]]] | None = None
        self._listing: threading.Thread | None = None
        self._changes = 0
        """How many times the remote store was known to change (:meth:`invalidate`)."""

    def rows(self) -> list[dict[str, Any]]:
        """Local rows (store by store, newest first), then the last remote listing's."""
        return snapshot_rows(self._settings.snapshot_dir) + self.remote_rows()

    def remote_rows(self) -> list[dict[str, Any]]:
        """The last remote listing (none before the first finished); starts the next when it is old."""
        if not str(self._settings["snapshots.remote.bucket"]):
            return []
        with self._lock:
            kept = self._remote
            stale = kept is None or time.monotonic() - kept[0] >= REMOTE_LIST_SECONDS
            if stale and self._listing is None:
                self._listing = threading.Thread(target=self._list, name="remote-snapshots", daemon=True)
                self._listing.start()
        return [] if kept is None else kept[1]

    def invalidate(self) -> None:
        """The remote store changed: the next call lists it again, whatever the last listing's age."""
        with self._lock:
            self._changes += 1
            if self._remote is not None:
                self._remote = (-math.inf, self._remote[1])

    def _list(self) -> None:
        with self._lock:
            changes = self._changes
        try:
            store = remote_store(self._settings)
            found = [] if store is None else [s for name in store.stores() for s in store.list(name)]
            rows = [stored_snapshot_row(s) for s in found]
        except RewindError as exc:
            bucket = str(self._settings["snapshots.remote.bucket"])
            rows = [{"location": REMOTE, "path": f"s3://{bucket}", "error": exc.what}]
        except Exception as exc:  # a listing must end, whatever the client raised
            log.exception("listing the remote snapshot store failed")
            bucket = str(self._settings["snapshots.remote.bucket"])
            rows = [{"location": REMOTE, "path": f"s3://{bucket}", "error": f"listing failed: {exc}"}]
        with self._lock:
            changed_meanwhile = changes != self._changes
            self._remote = (-math.inf if changed_meanwhile else time.monotonic(), rows)
            self._listing = None
