"""The fold's state kept in LMDB: :class:`projector.state.PartitionState` and
:class:`projector.state.ConfigState` over one store, as a read-through, write-back cache.

Reads are decoded once and kept in an :class:`EntityCache` that outlives the batch: this process is
the partition's only writer (the state directory's writer lock), so after a successful commit the
cached entities are exactly what LMDB holds. Every ``put_*`` marks an entity dirty; :meth:`changes`
encodes only the dirty entities, once each, however many events touched them. If a batch fails
(an exception in the fold or the commit), the caller must :meth:`EntityCache.clear` the cache, since
the fold may have changed cached entities that were never committed.

The partition's :class:`~projector.event_window.EventWindow` is loaded from ``event_ids`` on first
need and kept with the cache; its changed rows are part of :meth:`_BatchCache.changes`. A stored row
whose checksum fails is never decoded into the cache: the read raises
:class:`~rewind.ground.errors.DamagedState` naming the partition, table and key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import lmdb

from projector import encoding
from projector.event_window import EventWindow, load_window
from projector.model import Anomaly, Balance, ConfigEntry, Entity, FillRecord, Order, Position, Risk
from projector.store import PartitionStore, damaged_row
from rewind.ground.errors import InvariantViolation

_MISSING = object()
E = TypeVar("E", bound=Entity)
DEFAULT_CACHE_ENTRIES = 1_000_000


class EntityCache:
    """Decoded entities of one store, by table and natural key (None records a known absence), and
    the store's event window once loaded."""

    __slots__ = ("limit", "tables", "window")

    def __init__(self, limit: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.limit = limit
        self.tables: dict[str, dict[object, object]] = {}
        self.window: EventWindow | None = None

    def table(self, name: str) -> dict[object, object]:
        found = self.tables.get(name)
        if found is None:
            found = self.tables[name] = {}
        return found

    def clear(self) -> None:
        self.tables.clear()
        self.window = None

    def trim(self) -> None:
        """Forget every entity once the cache outgrows its limit (bounded memory; state is unaffected).
        The event window is bounded on its own and kept."""
        if sum(len(t) for t in self.tables.values()) > self.limit:
            self.tables.clear()


class _BatchCache:
    """One batch over a store: reads through the :class:`EntityCache` (LMDB on a miss, in one read
    transaction), writes into the dirty set that :meth:`changes` encodes."""

    def __init__(self, store: PartitionStore, cache: EntityCache | None = None) -> None:
        self._store = store
        self._cache = cache if cache is not None else EntityCache()
        self._txn: lmdb.Transaction | None = None
        self._dirty: dict[tuple[str, object], Entity] = {}

    def _load(self, table: str, natural_key: object, key: bytes) -> bytes | None:
        """Read a row missing from the cache (one read transaction per batch, opened on first need)."""
        if self._txn is None:
            self._txn = self._store.env.begin()
        raw = self._txn.get(key, db=self._store.db(table))
        return None if raw is None else bytes(raw)

    def _decode(self, decode: Callable[[bytes, bytes], E], key: bytes, raw: bytes) -> E:
        """``decode(key, raw)``; a damaged row raised as the store's :class:`DamagedState`."""
        try:
            return decode(key, raw)
        except encoding.CorruptRow as exc:
            raise damaged_row(self._store.path, exc) from None

    def event_window(self) -> EventWindow:
        """The store's event window, loaded from ``event_ids`` the first time it is needed."""
        window = self._cache.window
        if window is None:
            with self._store.read_txn() as txn:
                rows = txn.cursor(db=self._store.db(encoding.EVENT_IDS)).iternext()
                try:
                    window = load_window((bytes(k), bytes(v)) for k, v in rows)
                except encoding.CorruptRow as exc:
                    raise damaged_row(self._store.path, exc) from None
            self._cache.window = window
        return window

    def _put(self, table: str, natural_key: object, entity: Entity, cache: dict[object, object]) -> None:
        cache[natural_key] = entity
        self._dirty[table, natural_key] = entity

    def changes(self) -> dict[str, dict[bytes, bytes | None]]:
        """The encoded dirty entities by table; ends the batch's read transaction."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        changes: dict[str, dict[bytes, bytes | None]] = {}
        encode_record = encoding.encode_record
        for (table, _), entity in self._dirty.items():
            encoded_table, key, value = encode_record(entity)
            if encoded_table != table:
                raise InvariantViolation(
                    f"a {encoded_table} row was put into {table}; the batch was not committed",
                    "this is a bug in the fold: report it with this message",
                )
            rows = changes.get(table)
            if rows is None:
                rows = changes[table] = {}
            rows[key] = value
        self._dirty = {}
        window = self._cache.window
        if window is not None:
            window_rows = window.changed_rows()
            if window_rows:
                changes[encoding.EVENT_IDS] = window_rows
        return changes

    def discard(self) -> None:
        """Abandon the batch: end the read transaction and forget every cached entity."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self._cache.clear()
        self._dirty = {}

    def put_anomaly(self, anomaly: Anomaly) -> None:
        self._dirty[encoding.ANOMALIES, anomaly.offset] = anomaly


class LmdbPartitionState(_BatchCache):
    """:class:`projector.state.PartitionState` over one events-partition store."""

    def __init__(self, store: PartitionStore, cache: EntityCache | None = None) -> None:
        super().__init__(store, cache)
        self._orders = self._cache.table(encoding.ORDERS)
        self._fills = self._cache.table(encoding.FILLS)
        self._positions = self._cache.table(encoding.POSITIONS)
        self._balances = self._cache.table(encoding.BALANCES)
        self._risks = self._cache.table(encoding.RISK)

    def order(self, order_id: str) -> Order | None:
        found = self._orders.get(order_id, _MISSING)
        if found is _MISSING:
            key = encoding.order_key(order_id)
            raw = self._load(encoding.ORDERS, order_id, key)
            found = self._orders[order_id] = (
                None if raw is None else self._decode(encoding.decode_order, key, raw)
            )
        return found  # type: ignore[return-value]

    def put_order(self, order: Order) -> None:
        self._put(encoding.ORDERS, order.order_id, order, self._orders)

    def fill(self, exec_id: str) -> FillRecord | None:
        found = self._fills.get(exec_id, _MISSING)
        if found is _MISSING:
            key = encoding.fill_key(exec_id)
            raw = self._load(encoding.FILLS, exec_id, key)
            found = self._fills[exec_id] = (
                None if raw is None else self._decode(encoding.decode_fill, key, raw)
            )
        return found  # type: ignore[return-value]

    def put_fill(self, fill: FillRecord) -> None:
        self._put(encoding.FILLS, fill.exec_id, fill, self._fills)

    def position(self, account_id: str, symbol: str) -> Position | None:
        natural = (account_id, symbol)
        found = self._positions.get(natural, _MISSING)
        if found is _MISSING:
            key = encoding.position_key(account_id, symbol)
            raw = self._load(encoding.POSITIONS, natural, key)
            found = self._positions[natural] = (
                None if raw is None else self._decode(encoding.decode_position, key, raw)
            )
        return found  # type: ignore[return-value]

    def put_position(self, position: Position) -> None:
        self._put(encoding.POSITIONS, (position.account_id, position.symbol), position, self._positions)

    def balance(self, account_id: str, currency: str) -> Balance | None:
        natural = (account_id, currency)
        found = self._balances.get(natural, _MISSING)
        if found is _MISSING:
            key = encoding.balance_key(account_id, currency)
            raw = self._load(encoding.BALANCES, natural, key)
            found = self._balances[natural] = (
                None if raw is None else self._decode(encoding.decode_balance, key, raw)
            )
        return found  # type: ignore[return-value]

    def put_balance(self, balance: Balance) -> None:
        self._put(encoding.BALANCES, (balance.account_id, balance.currency), balance, self._balances)

    def risk(self, account_id: str) -> Risk | None:
        found = self._risks.get(account_id, _MISSING)
        if found is _MISSING:
            key = encoding.risk_key(account_id)
            raw = self._load(encoding.RISK, account_id, key)
            found = self._risks[account_id] = (
                None if raw is None else self._decode(encoding.decode_risk, key, raw)
            )
        return found  # type: ignore[return-value]

    def put_risk(self, risk: Risk) -> None:
        self._put(encoding.RISK, risk.account_id, risk, self._risks)


class LmdbConfigState(_BatchCache):
    """:class:`projector.state.ConfigState` over the config-partition store."""

    def __init__(self, store: PartitionStore, cache: EntityCache | None = None) -> None:
        super().__init__(store, cache)
        self._entries = self._cache.table(encoding.CONFIG)

    def config(self, key: str) -> ConfigEntry | None:
        found = self._entries.get(key, _MISSING)
        if found is _MISSING:
            lmdb_key = encoding.config_key(key)
            raw = self._load(encoding.CONFIG, key, lmdb_key)
            found = self._entries[key] = (
                None if raw is None else self._decode(encoding.decode_config, lmdb_key, raw)
            )
        return found  # type: ignore[return-value]

    def put_config(self, entry: ConfigEntry) -> None:
        self._put(encoding.CONFIG, entry.key, entry, self._entries)
