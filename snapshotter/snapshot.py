"""Snapshots: compacted, checksummed, atomically published copies of one partition's LMDB state.

A snapshot of a partition is a directory ``snapshots/<partition>/<offset, 20 digits>/`` holding
``data.mdb`` (LMDB's compacting copy, taken inside one read transaction so the projector keeps writing)
and ``MANIFEST.json``. It is built under a temporary name, every file and directory is fsynced, and
the directory is renamed into place only after its manifest is complete: **a snapshot exists only
once its manifest does**. Nothing is trusted before :func:`verify` has checked it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import lmdb
import xxhash

from projector.crashpoints import crashpoint
from projector.encoding import META, OFFSET_KEY, decode_count, decode_offset
from projector.state_directory import tables_for
from projector.store import (
    DATA_FILE,
    EVENTS_KEY,
    FORMAT_VERSION,
    PartitionStore,
    advise_page_cache,
    fsync_directory,
)
from rewind.ground.errors import DamagedState, InvariantViolation
from schemas.catalog import default_catalog

MANIFEST = "MANIFEST.json"
SNAPSHOT_FORMAT = 1
_HASH_CHUNK = 4 << 20
SYNC_EVERY = 16 << 20
"""Bytes of a snapshot written between two syncs (see :func:`_write_compact_copy`)."""


@dataclass(frozen=True)
class Manifest:
    """What a snapshot claims to be; every claim is checked by :func:`verify` before use."""

    partition: str
    offset: int
    event_count: int
    created_at: float
    file_size: int
    file_xxh3_128: str
    state_digest: str
    schema_fingerprints: tuple[str, ...]
    snapshot_format: int = SNAPSHOT_FORMAT
    state_format: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        document = dict(self.__dict__)
        document["schema_fingerprints"] = list(self.schema_fingerprints)
        return json.dumps(document, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        document = json.loads(raw)
        document["schema_fingerprints"] = tuple(document["schema_fingerprints"])
        return cls(**document)


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot directory and its manifest (not yet verified)."""

    path: Path
    manifest: Manifest

    @property
    def offset(self) -> int:
        return self.manifest.offset


class SnapshotInvalid(Exception):
    """A snapshot failed verification; the message says which check and why."""


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def file_xxh3_128(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_compact_copy(store: PartitionStore, txn: lmdb.Transaction, path: Path) -> str:
    """Write LMDB's compacting copy of ``txn``'s view to ``path``, durably; return its xxh3-128.

    The copy streams through a pipe so it can be synced every :data:`SYNC_EVERY` bytes: a snapshot
    never leaves hundreds of megabytes dirty at once, which would stall the projector's own durable
    commits behind one huge flush. The checksum is taken from the same stream, not by re-reading.
    """
    read_end, write_end = os.pipe()
    hasher = xxhash.xxh3_128()
    failure: list[BaseException] = []

    def drain() -> None:
        try:
            with open(read_end, "rb", buffering=0) as source, open(path, "wb") as out:
                unsynced = 0
                while chunk := source.read(_HASH_CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    unsynced += len(chunk)
                    if unsynced >= SYNC_EVERY:
                        out.flush()
                        os.fdatasync(out.fileno())
                        unsynced = 0
                out.flush()
                os.fsync(out.fileno())
        except BaseException as exc:
            failure.append(exc)

    writer = threading.Thread(target=drain, name="snapshot-writer")
    writer.start()
    copy_failure: lmdb.Error | None = None
    try:
        store.env.copyfd(write_end, compact=True, txn=txn)  # the read txn stays on its own thread
    except lmdb.Error as exc:
        copy_failure = exc
    finally:
        os.close(write_end)
        writer.join()
    if failure:  # the writer's error (disk full, ...) says why; the copy then only lost its pipe
        raise failure[0] from copy_failure
    if copy_failure is not None:
        raise copy_failure
    return str(hasher.hexdigest())


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}"


def take_snapshot(store: PartitionStore, root: Path, partition: str) -> Snapshot | None:
    """Snapshot ``store`` into ``root/partition``; None when it has applied nothing yet.

    One snapshotter per partition at a time: staging directories left by a killed one are removed.

    The copy, the offset in the manifest and the logical digest all come from the same read
    transaction, so the manifest describes exactly the bytes that were copied. The digest comes
    first and checks every row's checksum, so a damaged store is refused
    (:class:`~rewind.ground.errors.DamagedState`) before anything is copied. When a snapshot at the
    same offset already exists, it is returned instead of taking a second one.
    """
    directory = root / partition
    directory.mkdir(parents=True, exist_ok=True)
    for abandoned in directory.glob(".tmp-*"):
        shutil.rmtree(abandoned, ignore_errors=True)
    staging = directory / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        with store.env.begin() as txn:
            raw_offset = txn.get(OFFSET_KEY, db=store.db(META))
            if raw_offset is None:
                return None
            offset = store.checked(decode_offset, raw_offset)
            existing = directory / snapshot_name(offset)
            if (existing / MANIFEST).is_file():
                return load_snapshot(existing)
            digest = store.digest(txn)
            raw_events = txn.get(EVENTS_KEY, db=store.db(META))
            events = 0 if raw_events is None else store.checked(decode_count, EVENTS_KEY, raw_events)
            data_xxh3 = _write_compact_copy(store, txn, staging / DATA_FILE)
        data = staging / DATA_FILE
        crashpoint("snapshot-copied")
        manifest = Manifest(
            partition=partition,
            offset=offset,
            event_count=events,
            created_at=time.time(),
            file_size=data.stat().st_size,
            file_xxh3_128=data_xxh3,
            state_digest=digest,
            schema_fingerprints=tuple(sorted(default_catalog().fingerprints())),
        )
        manifest_path = staging / MANIFEST
        with open(manifest_path, "wb") as handle:
            handle.write(manifest.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        fsync_directory(staging)
        crashpoint("snapshot-manifest-written")
        final = directory / snapshot_name(offset)
        os.rename(staging, final)
        fsync_directory(directory)
        return Snapshot(final, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_snapshot(path: Path) -> Snapshot:
    """Read a snapshot's manifest; raises :class:`SnapshotInvalid` when it is missing or unreadable."""
    try:
        manifest = Manifest.from_json((path / MANIFEST).read_bytes())
    except FileNotFoundError as exc:
        raise SnapshotInvalid(f"{path}: manifest missing") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise SnapshotInvalid(f"{path}: manifest unreadable ({exc})") from exc
    return Snapshot(path, manifest)


def list_snapshots(root: Path, partition: str) -> list[Path]:
    """Every published snapshot directory of a partition, newest (highest offset) first."""
    directory = root / partition
    if not directory.is_dir():
        return []
    names = [p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(names, key=lambda p: int(p.name), reverse=True)


def verify(path: Path, deep: bool = True) -> Snapshot:
    """Check a snapshot before anyone uses it: manifest, size, file checksum, and (deep) its content.

    The deep check opens the copy read-only and recomputes the offset and the logical state digest.
    Raises :class:`SnapshotInvalid` naming the failed check.
    """
    snapshot = load_snapshot(path)
    manifest = snapshot.manifest
    if manifest.snapshot_format != SNAPSHOT_FORMAT or manifest.state_format != FORMAT_VERSION:
        raise SnapshotInvalid(
            f"{path}: format {manifest.snapshot_format}/{manifest.state_format}, "
            f"this rewind reads {SNAPSHOT_FORMAT}/{FORMAT_VERSION}"
        )
    if int(path.name) != manifest.offset:
        raise SnapshotInvalid(
            f"{path}: directory name says offset {int(path.name)}, manifest {manifest.offset}"
        )
    data = path / DATA_FILE
    if not data.is_file():
        raise SnapshotInvalid(f"{path}: {DATA_FILE} missing")
    size = data.stat().st_size
    if size != manifest.file_size:
        raise SnapshotInvalid(
            f"{path}: {DATA_FILE} is {size} bytes, manifest says {manifest.file_size} (truncated?)"
        )
    checksum = file_xxh3_128(data)
    if checksum != manifest.file_xxh3_128:
        raise SnapshotInvalid(
            f"{path}: checksum mismatch: {DATA_FILE} hashes to {checksum}, "
            f"manifest says {manifest.file_xxh3_128}"
        )
    if deep:
        with PartitionStore(path, tables_for(manifest.partition), readonly=True, shared=False) as copy:
            try:
                offset = copy.offset()
                digest = copy.digest()
            except DamagedState as exc:
                raise SnapshotInvalid(f"{path}: {exc.damage}") from None
        if offset != manifest.offset or digest != manifest.state_digest:
            raise SnapshotInvalid(
                f"{path}: content (offset {offset}, digest {digest}) differs from its manifest"
            )
    return snapshot


def newest_valid(
    root: Path, partition: str, max_offset: int | None = None, deep: bool = False
) -> tuple[Snapshot | None, list[str]]:
    """The newest snapshot of ``partition`` at or below ``max_offset`` that verifies, and why each
    newer one was rejected (so recovery can report every corrupt snapshot it passed over)."""
    rejected: list[str] = []
    for path in list_snapshots(root, partition):
        if max_offset is not None and int(path.name) > max_offset:
            continue
        try:
            return verify(path, deep=deep), rejected
        except SnapshotInvalid as exc:
            rejected.append(str(exc))
    return None, rejected


def prefetch_newest(root: Path, partitions: list[str] | None = None) -> None:
    """Ask the kernel to start reading each partition's newest snapshot (all when ``partitions`` is
    None) into the page cache now, so that recovery's checksum and copy find it there. Advisory
    only: nothing is verified or used here, and a file that vanished meanwhile is skipped."""
    if not root.is_dir():
        return
    names = partitions if partitions is not None else sorted(p.name for p in root.iterdir())
    for name in names:
        newest = list_snapshots(root, name)
        if newest:
            advise_page_cache(newest[0] / DATA_FILE, "WILLNEED")


def restore(snapshot: Snapshot, store_dir: Path, durable: bool = True) -> None:
    """Copy a verified snapshot's data file into an empty store directory; durably unless the caller
    syncs the store itself later (recovery syncs each staging store once, after its replay)."""
    store_dir.mkdir(parents=True, exist_ok=True)
    target = store_dir / DATA_FILE
    if target.exists():
        raise InvariantViolation(
            f"{store_dir} already holds state; a snapshot is restored only into an empty store directory",
            f"restore into another directory, or move {store_dir} aside first",
        )
    copy_in_kernel(snapshot.path / DATA_FILE, target)
    if durable:
        sync_store_files(store_dir)


def copy_in_kernel(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target`` without passing the bytes through this process.

    Restore is on recovery's critical path: ``copy_file_range`` lets the kernel move the pages (or
    share extents, where the file system can) with no copy through user space. Where the call is
    unsupported (another file system, an old kernel) the portable copy is used.
    """
    copy_range = getattr(os, "copy_file_range", None)  # Linux only
    with open(source, "rb") as src, open(target, "xb") as dst:
        remaining = os.fstat(src.fileno()).st_size
        try:
            if copy_range is None:
                raise OSError(errno.ENOSYS, "copy_file_range is not available")
            while remaining > 0:
                copied = copy_range(src.fileno(), dst.fileno(), remaining)
                if copied == 0:
                    raise OSError(f"{source}: ended {remaining} bytes early while being copied")
                remaining -= copied
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            src.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(src, dst, _HASH_CHUNK)


def sync_store_files(store_dir: Path) -> None:
    """fsync a store's data file and directory: everything written to it so far is on disk."""
    _fsync_file(store_dir / DATA_FILE)
    fsync_directory(store_dir)
