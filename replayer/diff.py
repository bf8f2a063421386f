"""Comparing two state directories (live, recovered, replayed) table by table, row by row.

Both directories are read through their canonical records (:meth:`projector.store.PartitionStore.records`:
tables in digest order, keys sorted), so the comparison is a single merge of two sorted streams per
store and needs memory only for the rows it reports. A store whose digest is the same on both sides
is equal by construction and is skipped after hashing. Each store is read inside one LMDB read
transaction, so even a live directory the projector is writing is compared at one committed instant
per store.

Amounts in reported rows are exact decimal strings (:func:`projector.views.to_dict`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from projector import encoding, views
from projector.event_window import decode_bucket
from projector.model import Anomaly, Balance, ConfigEntry, Entity, FillRecord, Order, Position, Risk
from projector.state_directory import StateDirectory, combined_digest, tables_for
from projector.store import PartitionStore, read_layout
from rewind.ground.errors import RewindError

ADDED: Final = "added"
REMOVED: Final = "removed"
CHANGED: Final = "changed"

Record = tuple[str, bytes, bytes]


class DiffTrouble(RewindError):
    """The directories could not be compared (not state directories, different topics, damaged data).

    Exits 2, like ``diff(1)`` in trouble, so a script can tell it from "they differ" (1).
    """

    exit_code = 2


@dataclass(frozen=True)
class RowChange:
    """One row added in B, removed from A, or changed between them (``fields``: name -> (old, new))."""

    table: str
    key: str
    kind: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    fields: dict[str, tuple[Any, Any]]

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"key": self.key, "kind": self.kind}
        if self.kind == CHANGED:
            document["fields"] = {name: {"old": a, "new": b} for name, (a, b) in self.fields.items()}
        else:
            document["row"] = self.new if self.kind == ADDED else self.old
        return document


@dataclass
class TableDiff:
    """The differences in one table of one store; ``changes`` holds at most the requested number."""

    table: str
    rows_a: int = 0
    rows_b: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    changes: list[RowChange] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def truncated(self) -> bool:
        return len(self.changes) < self.added + self.removed + self.changed

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_a": self.rows_a,
            "rows_b": self.rows_b,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "truncated": self.truncated,
            "changes": [change.as_dict() for change in self.changes],
        }


@dataclass
class StoreDiff:
    """One store (``config``, ``events-p0003``) on both sides; a side without it has digest None."""

    name: str
    digest_a: str | None
    digest_b: str | None
    offset_a: int | None = None
    offset_b: int | None = None
    tables: list[TableDiff] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.digest_a == self.digest_b

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.name,
            "identical": self.identical,
            "digest_a": self.digest_a,
            "digest_b": self.digest_b,
            "offset_a": self.offset_a,
            "offset_b": self.offset_b,
            "tables": {t.table: t.as_dict() for t in self.tables if t.differs},
        }


@dataclass
class StateDiff:
    """The comparison of two whole state directories."""

    path_a: Path
    path_b: Path
    digest_a: str
    digest_b: str
    stores: list[StoreDiff]

    @property
    def identical(self) -> bool:
        return all(store.identical for store in self.stores)

    def as_dict(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "a": {"path": str(self.path_a), "digest": self.digest_a},
            "b": {"path": str(self.path_b), "digest": self.digest_b},
            "stores": [store.as_dict() for store in self.stores],
        }


def row_key(entity: Entity) -> str:
    """How a person names a row: ``O-1``, ``ACC-1/AAPL``, ``ACC-1/USD``, an offset, a config key."""
    if isinstance(entity, Order):
        return entity.order_id
    if isinstance(entity, FillRecord):
        return entity.exec_id
    if isinstance(entity, Position):
        return f"{entity.account_id}/{entity.symbol}"
    if isinstance(entity, Balance):
        return f"{entity.account_id}/{entity.currency}"
    if isinstance(entity, Risk):
        return entity.account_id
    if isinstance(entity, Anomaly):
        return str(entity.offset)
    assert isinstance(entity, ConfigEntry)
    return entity.key


def _decoded(table: str, key: bytes, value: bytes) -> tuple[str, dict[str, Any]]:
    if table == encoding.EVENT_IDS:
        return _window_bucket(key, value)
    try:
        entity = encoding.decode_record(table, key, value)
    except encoding.EncodingError as exc:
        raise DiffTrouble(
            f"a {table} row cannot be decoded: {exc}",
            "the state directory is damaged; rebuild it with `rewind recover` or `rewind replay`",
        ) from exc
    return row_key(entity), views.to_dict(entity)


def _window_bucket(key: bytes, value: bytes) -> tuple[str, dict[str, Any]]:
    """An ``event_ids`` row as a diff shows it: the bucket, its offset range and how many ids it holds."""
    try:
        number, offsets, ids = decode_bucket(key, value)
    except encoding.EncodingError as exc:
        raise DiffTrouble(
            f"an {encoding.EVENT_IDS} row cannot be decoded: {exc}",
            "the state directory is damaged; rebuild it with `rewind recover` or `rewind replay`",
        ) from exc
    return f"bucket {number}", {"first_offset": offsets[0], "last_offset": offsets[-1], "event_ids": len(ids)}


def _rows(records: Iterator[Record], tables: tuple[str, ...]) -> Iterator[tuple[int, bytes, str, bytes]]:
    """(table position, key, table, value) for every table row; ``meta`` is left out."""
    order = {name: index for index, name in enumerate(tables)}
    for table, key, value in records:
        if table != encoding.META:
            yield order[table], key, table, value


def _change(diff: TableDiff, change: RowChange, limit: int | None) -> None:
    if limit is None or len(diff.changes) < limit:
        diff.changes.append(change)


def compare_records(
    records_a: Iterator[Record], records_b: Iterator[Record], tables: tuple[str, ...], limit: int | None
) -> list[TableDiff]:
    """Merge two canonical record streams of the same kind of store into per-table differences.

    ``limit`` bounds the changes kept per table (None: all); the counts are always exact.
    """
    diffs = {table: TableDiff(table) for table in tables}
    rows_a, rows_b = _rows(records_a, tables), _rows(records_b, tables)
    a, b = next(rows_a, None), next(rows_b, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[:2] < b[:2]):
            assert a is not None
            diff = diffs[a[2]]
            diff.rows_a += 1
            diff.removed += 1
            key, old = _decoded(a[2], a[1], a[3])
            _change(diff, RowChange(a[2], key, REMOVED, old, None, {}), limit)
            a = next(rows_a, None)
        elif a is None or b[:2] < a[:2]:
            diff = diffs[b[2]]
            diff.rows_b += 1
            diff.added += 1
            key, new = _decoded(b[2], b[1], b[3])
            _change(diff, RowChange(b[2], key, ADDED, None, new, {}), limit)
            b = next(rows_b, None)
        else:
            diff = diffs[a[2]]
            diff.rows_a += 1
            diff.rows_b += 1
            if a[3] != b[3]:
                diff.changed += 1
                key, old = _decoded(a[2], a[1], a[3])
                _key, new = _decoded(b[2], b[1], b[3])
                fields = {
                    name: (old.get(name), new.get(name)) for name in new if old.get(name) != new.get(name)
                }
                _change(diff, RowChange(a[2], key, CHANGED, old, new, fields), limit)
            a, b = next(rows_a, None), next(rows_b, None)
    return [diffs[table] for table in tables]


def _open(path: Path, label: str) -> StateDirectory:
    if not path.is_dir():
        raise DiffTrouble(f"{label} {path} is not a directory", "give two state directories")
    try:
        directory = StateDirectory.open_readonly(path)
    except RewindError as exc:
        raise DiffTrouble(exc.what, exc.fix) from exc
    if not directory.store_names():
        raise DiffTrouble(
            f"{label} {path} holds no state",
            "build it with `rewind project`, `rewind recover` or `rewind replay`",
        )
    return directory


def _compare_store(
    name: str, a: PartitionStore | None, b: PartitionStore | None, limit: int | None
) -> StoreDiff:
    tables = tables_for(name)
    with _snapshot_of(a) as view_a, _snapshot_of(b) as view_b:
        digest_a = None if view_a is None else view_a.digest()
        digest_b = None if view_b is None else view_b.digest()
        result = StoreDiff(name, digest_a, digest_b)
        if view_a is not None:
            result.offset_a = view_a.offset
        if view_b is not None:
            result.offset_b = view_b.offset
        if digest_a != digest_b:
            result.tables = compare_records(
                iter(()) if view_a is None else view_a.records(),
                iter(()) if view_b is None else view_b.records(),
                tables,
                limit,
            )
    return result


class _StoreView:
    """One store at one committed instant: every read goes through the same read transaction."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.txn = store.read_txn()
        raw = self.txn.get(encoding.OFFSET_KEY, db=store.db(encoding.META))
        self.offset = encoding.NO_OFFSET if raw is None else store.checked(encoding.decode_offset, bytes(raw))

    def digest(self) -> str:
        """The store's digest at this instant (a damaged row raises, naming the store)."""
        return self.store.digest(self.txn)

    def records(self) -> Iterator[Record]:
        return self.store.records(self.txn)

    def __enter__(self) -> _StoreView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.txn.abort()


class _NoStore:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _snapshot_of(store: PartitionStore | None) -> _StoreView | _NoStore:
    return _NoStore() if store is None else _StoreView(store)


def diff_states(path_a: Path, path_b: Path, limit: int | None = 100) -> StateDiff:
    """Compare the state directories ``path_a`` and ``path_b`` (see the module docstring).

    Raises :class:`DiffTrouble` when either is not a state directory or they belong to different
    topics (comparing them would be meaningless).
    """
    with ExitStack() as opened:
        a = opened.enter_context(_open(path_a, "A"))
        same = path_a.resolve() == path_b.resolve()
        b = a if same else opened.enter_context(_open(path_b, "B"))
        layout_a, layout_b = read_layout(path_a), read_layout(path_b)
        if layout_a != layout_b:
            raise DiffTrouble(
                f"A holds state of {layout_a.as_dict()}, B of {layout_b.as_dict()}",
                "compare directories built from the same topics",
            )
        names_a, names_b = set(a.store_names()), set(b.store_names())
        stores = [
            _compare_store(
                name,
                a.store(name) if name in names_a else None,
                b.store(name) if name in names_b else None,
                limit,
            )
            for name in sorted(names_a | names_b)
        ]
    return StateDiff(
        path_a,
        path_b,
        combined_digest({s.name: s.digest_a for s in stores if s.digest_a is not None}),
        combined_digest({s.name: s.digest_b for s in stores if s.digest_b is not None}),
        stores,
    )
