"""Where snapshots are kept: one interface, two locations (this host's directory, an S3 bucket).

The local directory (:mod:`snapshotter.snapshot`) is always there and is the default; the remote
store (:mod:`snapshotter.s3_store`) exists when ``snapshots.remote.bucket`` is set. Both hold the
same snapshot format, the same manifest and the same xxh3 checksum, so a snapshot read back from
the bucket is checked by the very :func:`~snapshotter.snapshot.verify` a local one is.

:func:`newest_valid_anywhere` is what recovery, time travel and a new instance start from: the
newest snapshot of a partition, local or remote, that verifies. Every one passed over (corrupt,
partial, unreachable) is named in the result with its location and reason, never silently skipped.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from projector.store import DATA_FILE
from rewind.ground.errors import InvariantViolation, RewindError
from rewind.ground.settings import Settings
from snapshotter.retention import RetentionPolicy, snapshots_to_keep
from snapshotter.snapshot import (
    Manifest,
    Snapshot,
    SnapshotInvalid,
    list_snapshots,
    load_snapshot,
    restore,
    verify,
)

LOCAL = "local"
REMOTE = "remote"
UNREACHABLE = "remote store unreachable"
"""How a rejection that is not a corrupt snapshot begins (see :func:`rejection_line`)."""
_REMOTE_STORES: dict[tuple[tuple[str, str], ...], SnapshotStore] = {}
"""One client per remote configuration in a process (a boto3 client is costly to make, thread-safe)."""
_REMOTE_LOCK = threading.Lock()


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot as a store lists it: where it is, and its manifest when that could be read."""

    location: str
    store: str
    offset: int
    address: str
    """A path (local) or an ``s3://bucket/key`` prefix (remote)."""
    manifest: Manifest | None = None
    error: str | None = None


class RemoteUnavailable(RewindError):
    """The remote store did not answer (down, slow, unreachable): a failure that can pass."""


class SnapshotStore(Protocol):
    """What every location offers. ``fetch`` gives a verified snapshot directory on this host."""

    location: str

    def stores(self) -> list[str]:
        """Names of the partition stores holding at least one snapshot here."""
        ...

    def list(self, store: str, manifests: bool = True) -> list[StoredSnapshot]:
        """The published snapshots of ``store``, newest first (manifests read when asked)."""
        ...

    def fetch(self, snapshot: StoredSnapshot, scratch: Path, deep: bool) -> Snapshot:
        """A verified local directory holding ``snapshot`` (raises :class:`SnapshotInvalid`)."""
        ...

    def delete(self, snapshot: StoredSnapshot) -> None: ...


class LocalSnapshotStore:
    """The snapshot directory on this host (``snapshots.dir``): nothing is copied to read it."""

    location = LOCAL

    def __init__(self, root: Path) -> None:
        self.root = root

    def stores(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def list(self, store: str, manifests: bool = True) -> list[StoredSnapshot]:
        rows = []
        for path in list_snapshots(self.root, store):
            manifest, error = None, None
            if manifests:
                try:
                    manifest = load_snapshot(path).manifest
                except SnapshotInvalid as exc:
                    error = str(exc)
            rows.append(StoredSnapshot(LOCAL, store, int(path.name), str(path), manifest, error))
        return rows

    def fetch(self, snapshot: StoredSnapshot, scratch: Path, deep: bool) -> Snapshot:
        return verify(Path(snapshot.address), deep=deep)

    def delete(self, snapshot: StoredSnapshot) -> None:
        shutil.rmtree(snapshot.address)


def remote_store(settings: Settings) -> SnapshotStore | None:
    """The configured remote store, or None when ``snapshots.remote.bucket`` is empty."""
    if not str(settings["snapshots.remote.bucket"]):
        return None
    from snapshotter.s3_store import S3SnapshotStore  # boto3 loads only where a bucket is set

    key = tuple(sorted((k, str(v)) for k, v in settings.values.items() if k.startswith("snapshots.remote.")))
    key += (("home", str(settings.home)),)
    with _REMOTE_LOCK:
        store = _REMOTE_STORES.get(key)
        if store is None:
            store = _REMOTE_STORES[key] = S3SnapshotStore.from_settings(settings)
    return store


def all_stores(settings: Settings) -> list[SnapshotStore]:
    """The local store, then the remote one when configured."""
    local: SnapshotStore = LocalSnapshotStore(settings.snapshot_dir)
    remote = remote_store(settings)
    return [local] if remote is None else [local, remote]


@dataclass(frozen=True)
class Chosen:
    """The snapshot a replay starts from, and whether its directory is a fetched copy (to be moved,
    then removed) rather than the local store's own (to be copied, never touched)."""

    snapshot: Snapshot
    location: str
    fetched: bool


def newest_valid_anywhere(
    settings: Settings,
    name: str,
    scratch: Path,
    max_offset: int | None = None,
    deep: bool = False,
) -> tuple[Chosen | None, list[str]]:
    """The newest snapshot of ``name`` at or below ``max_offset``, local or remote, that verifies.

    At equal offsets the local copy is tried first (no transfer). A remote snapshot is fetched into
    ``scratch`` and verified there. Returns the rejected ones as ``"<location> <address>: <reason>"``;
    an unreachable remote store is reported the same way and only the local snapshots are used.
    """
    stores = all_stores(settings)
    rejected: list[str] = []
    candidates: list[tuple[StoredSnapshot, SnapshotStore]] = []
    for store in stores:
        try:
            listed = store.list(name, manifests=False)
        except RemoteUnavailable as exc:
            rejected.append(f"{UNREACHABLE}: {exc.what}; only the other snapshots were considered")
            continue
        candidates += [(s, store) for s in listed if max_offset is None or s.offset <= max_offset]
    candidates.sort(key=lambda c: (c[0].offset, c[0].location == LOCAL), reverse=True)
    for stored, store in candidates:
        try:
            snapshot = store.fetch(stored, scratch, deep)
            return Chosen(snapshot, stored.location, stored.location != LOCAL), rejected
        except SnapshotInvalid as exc:
            rejected.append(f"{stored.location} {exc}")
        except RemoteUnavailable as exc:
            rejected.append(f"{UNREACHABLE}: {stored.address}: {exc.what}")
    return None, rejected


def rejection_line(reason: str) -> str:
    """A rejected snapshot as the commands print it: corrupt, or a remote store that did not answer."""
    return reason if reason.startswith(UNREACHABLE) else f"skipped corrupt snapshot: {reason}"


def restore_chosen(chosen: Chosen, store_dir: Path, durable: bool = True) -> None:
    """Put the chosen snapshot's data file in the empty ``store_dir``: a fetched copy is moved (it is
    already on this disk), a local one copied."""
    if not chosen.fetched:
        restore(chosen.snapshot, store_dir, durable=durable)
        return
    store_dir.mkdir(parents=True, exist_ok=True)
    if (store_dir / DATA_FILE).exists():
        raise InvariantViolation(
            f"{store_dir} already holds state; a snapshot is restored only into an empty store directory",
            f"restore into another directory, or move {store_dir} aside first",
        )
    os.rename(chosen.snapshot.path / DATA_FILE, store_dir / DATA_FILE)
    shutil.rmtree(chosen.snapshot.path, ignore_errors=True)
    if durable:
        from snapshotter.snapshot import sync_store_files

        sync_store_files(store_dir)


def remote_policy(settings: Settings) -> RetentionPolicy:
    """The remote level's retention: the thinned archive (hourly for a day, daily for a week)."""
    return RetentionPolicy(
        keep_last=int(settings["snapshots.remote.keep_last"]),
        keep_hourly=int(settings["snapshots.remote.keep_hourly"]),
        keep_daily=int(settings["snapshots.remote.keep_daily"]),
    )


def prune_store(
    store: SnapshotStore,
    policy: RetentionPolicy,
    names: list[str] | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> list[StoredSnapshot]:
    """Delete the snapshots of ``store`` (of the partition stores ``names``, default all) that
    ``policy`` no longer keeps; return them. Snapshots whose manifest cannot be read are left for
    `rewind snapshots verify` to report."""
    deleted: list[StoredSnapshot] = []
    for name in store.stores() if names is None else names:
        listed = [s for s in store.list(name) if s.manifest is not None]
        dated = [(s.offset, s.manifest.created_at) for s in listed if s.manifest is not None]
        keep = snapshots_to_keep(dated, policy, time.time() if now is None else now)
        for snapshot in listed:
            if snapshot.offset not in keep:
                deleted.append(snapshot)
                if not dry_run:
                    store.delete(snapshot)
    return deleted
