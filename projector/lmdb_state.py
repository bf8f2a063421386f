"""The fold's view of LMDB for one batch: a read-through, write-back cache over a partition store.

Reads come from one LMDB read transaction (a consistent view of the state as of the last commit) and
are decoded once per key per batch; every ``put_*`` marks the entity dirty. :meth:`changes` encodes
only the dirty entities, once each, however many events touched them — that, not the per-event
work, is what reaches the LMDB write transaction. A batch whose fold raised is simply dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import lmdb

from projector import encoding
from projector.model import Anomaly, Balance, ConfigEntry, Entity, FillRecord, Order, Position, Risk
from projector.store import PartitionStore

E = TypeVar("E")
_MISSING = object()


class _CachedView:
    """A read transaction plus per-table caches of decoded entities and the dirty set."""

    def __init__(self, store: PartitionStore) -> None:
        self._store = store
        self._txn: lmdb.Transaction | None = store.env.begin()
        self._caches: dict[str, dict[object, object]] = {t: {} for t in store.tables}
        self._dirty: dict[tuple[str, object], Entity] = {}

    def _get(
        self,
        table: str,
        natural_key: object,
        lmdb_key: Callable[[], bytes],
        decode: Callable[[bytes, bytes], E],
    ) -> E | None:
        cache = self._caches[table]
        found = cache.get(natural_key, _MISSING)
        if found is _MISSING:
            assert self._txn is not None, "the batch was already turned into changes"
            key = lmdb_key()
            raw = self._txn.get(key, db=self._store.db(table))
            found = None if raw is None else decode(key, bytes(raw))
            cache[natural_key] = found
        return found  # type: ignore[return-value]

    def _put(self, table: str, natural_key: object, entity: Entity) -> None:
        self._caches[table][natural_key] = entity
        self._dirty[table, natural_key] = entity

    def changes(self) -> dict[str, dict[bytes, bytes | None]]:
        """The encoded dirty entities by table; ends this view (it cannot be used afterwards)."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        changes: dict[str, dict[bytes, bytes | None]] = {}
        for (table, _), entity in self._dirty.items():
            encoded_table, key, value = encoding.encode_record(entity)
            assert encoded_table == table, f"a {encoded_table} row was put into {table}"
            changes.setdefault(table, {})[key] = value
        return changes

    def put_anomaly(self, anomaly: Anomaly) -> None:
        self._put(encoding.ANOMALIES, anomaly.offset, anomaly)


class LmdbPartitionState(_CachedView):
    """:class:`projector.state.PartitionState` over one events-partition store, for one batch."""

    def order(self, order_id: str) -> Order | None:
        return self._get(
            encoding.ORDERS, order_id, lambda: encoding.order_key(order_id), encoding.decode_order
        )

    def put_order(self, order: Order) -> None:
        self._put(encoding.ORDERS, order.order_id, order)

    def fill(self, exec_id: str) -> FillRecord | None:
        return self._get(encoding.FILLS, exec_id, lambda: encoding.fill_key(exec_id), encoding.decode_fill)

    def put_fill(self, fill: FillRecord) -> None:
        self._put(encoding.FILLS, fill.exec_id, fill)

    def position(self, account_id: str, symbol: str) -> Position | None:
        return self._get(
            encoding.POSITIONS,
            (account_id, symbol),
            lambda: encoding.position_key(account_id, symbol),
            encoding.decode_position,
        )

    def put_position(self, position: Position) -> None:
        self._put(encoding.POSITIONS, (position.account_id, position.symbol), position)

    def balance(self, account_id: str, currency: str) -> Balance | None:
        return self._get(
            encoding.BALANCES,
            (account_id, currency),
            lambda: encoding.balance_key(account_id, currency),
            encoding.decode_balance,
        )

    def put_balance(self, balance: Balance) -> None:
        self._put(encoding.BALANCES, (balance.account_id, balance.currency), balance)

    def risk(self, account_id: str) -> Risk | None:
        return self._get(
            encoding.RISK, account_id, lambda: encoding.risk_key(account_id), encoding.decode_risk
        )

    def put_risk(self, risk: Risk) -> None:
        self._put(encoding.RISK, risk.account_id, risk)


class LmdbConfigState(_CachedView):
    """:class:`projector.state.ConfigState` over the config-partition store, for one batch."""

    def config(self, key: str) -> ConfigEntry | None:
        return self._get(encoding.CONFIG, key, lambda: encoding.config_key(key), encoding.decode_config)

    def put_config(self, entry: ConfigEntry) -> None:
        self._put(encoding.CONFIG, entry.key, entry)
