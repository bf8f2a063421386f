"""LMDB storage for projected state: one environment per input partition, offsets committed with state.

Layout of a state directory::

    state/
      LAYOUT              which topics and format this directory belongs to (JSON)
      events-p0003/       one LMDB environment per events-topic partition
      config/             the LMDB environment of the config topic's single partition

Each environment holds one named database per table plus ``meta``. A batch's state changes and the
offset of the last event it applied are written in **one** write transaction, so after a crash at any
instant the environment holds either all of a batch or none of it, and the stored offset says exactly
where to resume. Offsets only move forward; a batch that would move one back is refused with
:class:`~rewind.ground.errors.InvariantViolation` and nothing of it is written.

A store's data file can never outgrow its memory map, which commits grow with the state up to
``state.max_map_mb``; a commit that needs more is refused with :class:`MapCeilingReached`, and nothing
of it is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import lmdb

from projector.crashpoints import crashpoint
from projector.digest import digest_rows, new_hasher
from projector.encoding import (
    META,
    NO_OFFSET,
    OFFSET_KEY,
    CorruptRow,
    decode_count,
    decode_offset,
    encode_count,
    encode_offset,
    meta_record,
)
from rewind.ground.errors import DamagedState, InvariantViolation, RewindError
from rewind.ground.settings import setting

FORMAT_VERSION = 2
"""2: every row sealed with a checksum, and the ``event_ids`` table."""
EVENTS_KEY = b"events_applied"
COMMITTED_AT_KEY = b"committed_at"
INITIAL_MAP_SIZE = 64 << 20
MAX_DBS = 16
MAP_CEILING = setting("state.max_map_mb")
"""The setting that caps a store's map, in MiB (:attr:`PartitionStore.max_map_size` in bytes)."""

T = TypeVar("T")

# A batch of changes: table -> key -> encoded value, or None to delete the key.
Changes = Mapping[str, Mapping[bytes, bytes | None]]


def partition_dir_name(partition: int) -> str:
    return f"events-p{partition:04d}"


def partition_of_dir_name(name: str) -> int | None:
    """The events partition a store directory name is for; None for any other name."""
    number = name.removeprefix("events-p")
    if number == name or not number.isdigit() or partition_dir_name(int(number)) != name:
        return None
    return int(number)


CONFIG_DIR_NAME = "config"
DATA_FILE = "data.mdb"
"""The data file of an LMDB environment: a store's, and a snapshot's copy of it."""


@dataclass(frozen=True)
class Layout:
    """What a state directory belongs to; a mismatch is refused rather than mixed."""

    events_topic: str
    config_topic: str
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, object]:
        return {
            "events_topic": self.events_topic,
            "config_topic": self.config_topic,
            "format_version": self.format_version,
        }


def ensure_layout(state_dir: Path, layout: Layout) -> None:
    """Create the state directory for ``layout``, or check that an existing one matches it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "LAYOUT"
    if not path.exists():
        _write_atomically(path, json.dumps(layout.as_dict(), sort_keys=True).encode())
        return
    found = read_layout(state_dir)
    if found != layout:
        raise RewindError(
            f"state directory {state_dir} holds state of {found.as_dict()}, not of {layout.as_dict()}",
            "use another --state directory for these topics, or move this one aside",
        )


def read_layout(state_dir: Path) -> Layout:
    path = state_dir / "LAYOUT"
    try:
        raw = json.loads(path.read_text())
        return Layout(str(raw["events_topic"]), str(raw["config_topic"]), int(raw["format_version"]))
    except FileNotFoundError as exc:
        raise RewindError(
            f"{state_dir} is not a rewind state directory (no LAYOUT file)",
            "point --state at a directory written by `rewind project`, `rewind recover` or `rewind replay`",
        ) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise RewindError(
            f"{path} is damaged: {exc}",
            f"move the state directory aside (mv {state_dir} {state_dir}.damaged), then rebuild it with "
            "`rewind recover`",
        ) from exc


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """fsync a directory: the names created, renamed or removed in it so far survive a crash."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def advise_page_cache(path: Path, advice: Literal["WILLNEED", "DONTNEED"]) -> None:
    """Tell the kernel a file's pages are about to be read (``WILLNEED``: read them in now) or no
    longer needed (``DONTNEED``: drop the clean ones now). Advisory only: nothing on disk changes,
    and a missing file, or a system without ``posix_fadvise``, is skipped."""
    flag = getattr(os, f"POSIX_FADV_{advice}", None)
    if flag is None:
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, flag)
        finally:
            os.close(descriptor)


def damaged_row(path: Path, error: CorruptRow) -> DamagedState:
    """The error for a damaged row of the store at ``path``: which partition, table and key, and the
    fix."""
    partition = partition_of_dir_name(path.name)
    if partition is not None:
        where = f"partition {partition} ({path})"
    elif path.name == CONFIG_DIR_NAME:
        where = f"the config partition ({path})"
    else:
        where = str(path)
    return DamagedState(
        f"{where}: {error}; nothing of it was used",
        f"stop whatever writes {path.parent}, then rebuild it from the newest valid snapshot and the log: "
        f"`rewind recover --state {path.parent}`",
        damage=str(error),
    )


class MapCeilingReached(RewindError):
    """A commit needs a bigger map than the store may grow to (``state.max_map_mb``); nothing of the
    batch was written."""


class PartitionStore:
    """One LMDB environment: the state of one input partition and the offset it reflects."""

    def __init__(
        self,
        path: Path,
        tables: tuple[str, ...],
        durable: bool = True,
        readonly: bool = False,
        shared: bool = True,
        max_map_size: int | None = None,
    ) -> None:
        """``shared=False`` opens without LMDB's reader lock table: only for files nobody writes
        (snapshots); live state is always opened shared so readers and the writer coordinate.
        ``max_map_size`` (bytes) caps how far commits may grow the map; None: no cap."""
        self.path = path
        self.tables = tables
        self.max_map_size = max_map_size
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
        elif not (path / DATA_FILE).exists():
            raise RewindError(f"no state at {path}", "build it with `rewind project` or `rewind recover`")
        self.env = lmdb.open(
            str(path),
            map_size=INITIAL_MAP_SIZE if max_map_size is None else min(INITIAL_MAP_SIZE, max_map_size),
            max_dbs=MAX_DBS,
            sync=durable,
            metasync=durable,
            readonly=readonly,
            lock=shared,
            readahead=False,
        )
        self._dbs = {name: self.env.open_db(name.encode(), create=not readonly) for name in (*tables, META)}

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> PartitionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def db(self, table: str) -> lmdb._Database:
        return self._dbs[table]

    def offset(self) -> int:
        """The offset of the last event applied to this state, or -1 when none was."""
        with self.env.begin(db=self._dbs[META]) as txn:
            raw = txn.get(OFFSET_KEY)
        return NO_OFFSET if raw is None else self.checked(decode_offset, raw)

    def events_applied(self) -> int:
        with self.env.begin(db=self._dbs[META]) as txn:
            raw = txn.get(EVENTS_KEY)
        return 0 if raw is None else self.checked(decode_count, EVENTS_KEY, raw)

    def committed_at(self) -> float | None:
        """Wall-clock time of the last commit, in microseconds since the epoch read as seconds
        (bookkeeping for lag status; not part of the state)."""
        with self.env.begin(db=self._dbs[META]) as txn:
            raw = txn.get(COMMITTED_AT_KEY)
        return None if raw is None else self.checked(decode_count, COMMITTED_AT_KEY, raw) / 1e6

    def checked(self, decode: Callable[..., T], *args: Any) -> T:
        """``decode(*args)``, a damaged row reported as :class:`DamagedState` naming this store."""
        try:
            return decode(*args)
        except CorruptRow as exc:
            raise damaged_row(self.path, exc) from None

    def get(self, table: str, key: bytes) -> bytes | None:
        with self.env.begin(db=self._dbs[table]) as txn:
            value = txn.get(key)
        return None if value is None else bytes(value)

    def read_txn(self) -> lmdb.Transaction:
        """A read transaction: a consistent view of every table at one instant."""
        return self.env.begin()

    def commit(self, changes: Changes, last_offset: int, events: int) -> None:
        """Write ``changes`` and advance the stored offset to ``last_offset``, atomically.

        ``events`` is how many events the batch applied (counted for snapshots and metrics).
        Grows the map and retries when LMDB reports it full; raises :class:`MapCeilingReached` when
        it is already as big as ``max_map_size`` allows.
        """
        while True:
            try:
                self._commit_once(changes, last_offset, events)
                return
            except lmdb.MapFullError:
                self._grow_map()

    def _grow_map(self) -> None:
        """Double the map, or grow it to the ceiling when doubling would pass it."""
        size = int(self.env.info()["map_size"])
        ceiling = self.max_map_size
        if ceiling is not None and size >= ceiling:
            limit = f"{ceiling / (1 << 20):g} MiB"
            raise MapCeilingReached(
                f"{self.path}: a commit needs more than the {limit} this store may grow to "
                f"({MAP_CEILING.key}); nothing of the batch was written",
                f"make sure the disk has room, then raise {MAP_CEILING.key} above {limit} (env "
                f"{MAP_CEILING.env}, or [state] max_map_mb in rewind.toml) and start again",
            )
        self.env.set_mapsize(size * 2 if ceiling is None else min(size * 2, ceiling))

    def _commit_once(self, changes: Changes, last_offset: int, events: int) -> None:
        meta = self._dbs[META]
        with self.env.begin(write=True) as txn:
            previous = txn.get(OFFSET_KEY, db=meta)
            previous_offset = NO_OFFSET if previous is None else self.checked(decode_offset, previous)
            if last_offset <= previous_offset:
                raise InvariantViolation(
                    f"{self.path}: offsets only move forward, but a batch ending at {last_offset} "
                    f"follows state at offset {previous_offset}; nothing of the batch was written",
                    "the stored state is as it was before this batch: report this message, then restart "
                    "(the projector resumes after the stored offset)",
                )
            for table, rows in changes.items():
                db = self._dbs[table]
                for key, value in rows.items():
                    if value is None:
                        txn.delete(key, db=db)
                    else:
                        txn.put(key, value, db=db)
            applied = txn.get(EVENTS_KEY, db=meta)
            before = 0 if applied is None else self.checked(decode_count, EVENTS_KEY, applied)
            txn.put(EVENTS_KEY, encode_count(EVENTS_KEY, before + events), db=meta)
            txn.put(OFFSET_KEY, encode_offset(last_offset), db=meta)
            txn.put(COMMITTED_AT_KEY, encode_count(COMMITTED_AT_KEY, time.time_ns() // 1000), db=meta)
            crashpoint("lmdb-commit")
        crashpoint("after-lmdb-commit")

    def digest(self, txn: lmdb.Transaction | None = None) -> str:
        """The logical state digest: exactly ``state_digest(self.records(txn))``, read off the cursors
        without building a record per row (the fast path recovery and snapshots validate with).
        Every row's checksum is checked on the way: a damaged one raises :class:`DamagedState`."""
        own = txn is None
        view = self.env.begin() if txn is None else txn
        try:
            hasher = new_hasher()
            for table in self.tables:
                rows = view.cursor(db=self._dbs[table]).iternext()
                digest_rows(hasher, table, cast(Iterator[tuple[bytes, bytes]], rows))  # not buffers=True
            meta, key, value = self._meta_record(view)
            digest_rows(hasher, meta, [(key, value)])
            return str(hasher.hexdigest())
        except CorruptRow as exc:
            raise damaged_row(self.path, exc) from None
        finally:
            if own:
                view.abort()

    def records(self, txn: lmdb.Transaction | None = None) -> Iterator[tuple[str, bytes, bytes]]:
        """Every (table, key, value) in canonical order: tables as declared, keys sorted bytewise.

        The last record is the stored offset (:meth:`_meta_record`); ``events_applied`` and
        ``committed_at`` are bookkeeping, not state, and are left out so a replayed state and a
        recovered one compare equal.
        """
        own = txn is None
        view = self.env.begin() if txn is None else txn
        try:
            for table in self.tables:
                for key, value in view.cursor(db=self._dbs[table]):
                    yield table, bytes(key), bytes(value)
            yield self._meta_record(view)
        finally:
            if own:
                view.abort()

    def _meta_record(self, view: lmdb.Transaction) -> tuple[str, bytes, bytes]:
        """The last record of the canonical sequence: ``meta.offset`` as stored, or
        :func:`~projector.encoding.meta_record` of :data:`~projector.encoding.NO_OFFSET` when none is."""
        raw = view.get(OFFSET_KEY, db=self._dbs[META])
        return meta_record(NO_OFFSET) if raw is None else (META, OFFSET_KEY, bytes(raw))
