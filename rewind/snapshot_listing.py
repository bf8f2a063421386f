"""Snapshots as ``GET /snapshots`` lists them: the local directory's, then (with
``snapshots.remote.bucket`` set) the remote store's, every row saying its ``location``.

Guarantees:

* Local rows are read from the manifests on disk at every call (:func:`rewind.service_view.snapshot_rows`).
* The remote store is listed at most once per :data:`REMOTE_LIST_SECONDS` (a listing is one LIST and
  one GET per snapshot, and the console asks every few seconds); callers meanwhile get that listing.
  A failed listing is not kept: the next call tries again.
* A remote store that cannot be listed (down, refusing the credentials, no bucket) is one row with
  ``location`` ``remote``, the store's address and the ``error``: never hidden, and never a failure
  of the whole list.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Final

from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from rewind.service_view import snapshot_rows
from snapshotter.snapshot_store import REMOTE, StoredSnapshot, remote_store

__all__ = ["REMOTE_LIST_SECONDS", "SnapshotListing", "stored_snapshot_row"]

REMOTE_LIST_SECONDS: Final = 15.0


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

    def rows(self) -> list[dict[str, Any]]:
        """Local rows (store by store, newest first), then remote ones the same way."""
        return snapshot_rows(self._settings.snapshot_dir) + self.remote_rows()

    def remote_rows(self) -> list[dict[str, Any]]:
        store = remote_store(self._settings)
        if store is None:
            return []
        with self._lock:
            kept = self._remote
            if kept is not None and time.monotonic() - kept[0] < REMOTE_LIST_SECONDS:
                return kept[1]
            try:
                rows = [stored_snapshot_row(s) for name in store.stores() for s in store.list(name)]
            except RewindError as exc:
                bucket = str(self._settings["snapshots.remote.bucket"])
                return [{"location": REMOTE, "path": f"s3://{bucket}", "error": exc.what}]
            self._remote = (time.monotonic(), rows)
            return rows

    def forget(self) -> None:
        """Drop the kept remote listing (a round was shipped or pruned)."""
        with self._lock:
            self._remote = None
