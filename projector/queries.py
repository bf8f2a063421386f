"""Reading projected state: entities by table with simple filters, from any state directory.

Reads never block the projector (LMDB readers and the writer do not wait for each other) and each
call sees one committed instant of each partition. Every row read is checked against its checksum: a
damaged row is never served; the read raises :class:`~rewind.ground.errors.DamagedState` naming the
partition, table and key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from projector import encoding
from projector.model import Anomaly, Balance, ConfigEntry, Entity, Order, Position, Risk
from projector.state_directory import StateDirectory
from projector.store import PartitionStore

E = TypeVar("E", bound=Entity)


def _rows(store: PartitionStore, table: str, prefix: bytes = b"") -> Iterator[Entity]:
    with store.read_txn() as txn:
        cursor = txn.cursor(db=store.db(table))
        found = cursor.set_range(prefix) if prefix else cursor.first()
        while found:
            key, value = cursor.item()
            if prefix and not bytes(key).startswith(prefix):
                break
            yield store.checked(encoding.decode_record, table, bytes(key), bytes(value))
            found = cursor.next()


def _account_prefix(account: str | None) -> bytes:
    return encoding.risk_key(account) + b"\x00" if account else b""


def positions(state: StateDirectory, account: str | None = None, symbol: str | None = None) -> list[Position]:
    found: list[Position] = []
    for partition in state.partitions():
        for row in _rows(state.partition(partition), encoding.POSITIONS, _account_prefix(account)):
            assert isinstance(row, Position)
            if symbol is None or row.symbol == symbol:
                found.append(row)
    return sorted(found, key=lambda p: (p.account_id, p.symbol))


def balances(state: StateDirectory, account: str | None = None) -> list[Balance]:
    found: list[Balance] = []
    for partition in state.partitions():
        for row in _rows(state.partition(partition), encoding.BALANCES, _account_prefix(account)):
            assert isinstance(row, Balance)
            found.append(row)
    return sorted(found, key=lambda b: (b.account_id, b.currency))


def risks(state: StateDirectory, account: str | None = None) -> list[Risk]:
    found: list[Risk] = []
    for partition in state.partitions():
        store = state.partition(partition)
        if account is not None:
            raw = store.get(encoding.RISK, encoding.risk_key(account))
            if raw is not None:
                found.append(store.checked(encoding.decode_risk, encoding.risk_key(account), raw))
            continue
        found.extend(r for r in _rows(store, encoding.RISK) if isinstance(r, Risk))
    return sorted(found, key=lambda r: r.account_id)


def orders(state: StateDirectory, account: str | None = None, symbol: str | None = None) -> list[Order]:
    found: list[Order] = []
    for partition in state.partitions():
        for row in _rows(state.partition(partition), encoding.ORDERS):
            assert isinstance(row, Order)
            if (account is None or row.account_id == account) and (symbol is None or row.symbol == symbol):
                found.append(row)
    return sorted(found, key=lambda o: (o.account_id, o.order_id))


def order(state: StateDirectory, order_id: str) -> Order | None:
    key = encoding.order_key(order_id)
    for partition in state.partitions():
        store = state.partition(partition)
        raw = store.get(encoding.ORDERS, key)
        if raw is not None:
            return store.checked(encoding.decode_order, key, raw)
    return None


def config_entries(state: StateDirectory) -> list[ConfigEntry]:
    if "config" not in state.store_names():
        return []
    return [c for c in _rows(state.config(), encoding.CONFIG) if isinstance(c, ConfigEntry)]


def anomalies(state: StateDirectory) -> list[tuple[str, Anomaly]]:
    """Every recorded anomaly with the store it belongs to, in (store, offset) order."""
    found: list[tuple[str, Anomaly]] = []
    for name in state.store_names():
        for row in _rows(state.store(name), encoding.ANOMALIES):
            assert isinstance(row, Anomaly)
            found.append((name, row))
    return found
