"""What the fold reads and writes through, and an in-memory implementation of it.

The contract between the fold and a store (:class:`PartitionState`, :class:`ConfigState`):

- A getter returns the row as an entity, or None. It may return the store's own cached instance;
  the fold mutates such an instance only after every anomaly check and invariant has passed.
- The fold calls ``put_*`` for every entity it created or changed, right after changing it. That call
  is the store's dirty signal: a write-back cache (the LMDB store) keeps one instance per key for the
  batch, marks it dirty on ``put_*``, and encodes only the dirty ones at commit with
  :func:`projector.encoding.encode_record`.
- After ``put_x(obj)``, a later ``x(key)`` in the same batch returns ``obj`` (or an equal entity).
- Nothing is ever deleted.
- If the fold raises (an :class:`~projector.fold.InvariantError` or a contract error), the batch must
  be discarded, never committed.

:class:`MemoryState` and :class:`MemoryConfigState` are dict-backed implementations for tests, the
benchmark and offline tools; their ``records()`` is the canonical sequence that
:func:`projector.digest.state_digest` expects, so they digest equal to an LMDB store with the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from projector import encoding
from projector.event_window import EventWindow, load_window, new_window
from projector.model import Anomaly, Balance, ConfigEntry, Entity, FillRecord, Order, Position, Risk


class PartitionState(Protocol):
    """The state of one events-topic partition, as the fold sees it."""

    def order(self, order_id: str) -> Order | None: ...

    def put_order(self, order: Order) -> None: ...

    def fill(self, exec_id: str) -> FillRecord | None: ...

    def put_fill(self, fill: FillRecord) -> None: ...

    def position(self, account_id: str, symbol: str) -> Position | None: ...

    def put_position(self, position: Position) -> None: ...

    def balance(self, account_id: str, currency: str) -> Balance | None: ...

    def put_balance(self, balance: Balance) -> None: ...

    def risk(self, account_id: str) -> Risk | None: ...

    def put_risk(self, risk: Risk) -> None: ...

    def put_anomaly(self, anomaly: Anomaly) -> None: ...

    def event_window(self) -> EventWindow:
        """The partition's recently applied event_ids (the same object for the whole batch)."""
        ...


class ConfigState(Protocol):
    """The state of the config partition, as the fold sees it."""

    def config(self, key: str) -> ConfigEntry | None: ...

    def put_config(self, entry: ConfigEntry) -> None: ...

    def put_anomaly(self, anomaly: Anomaly) -> None: ...

    def event_window(self) -> EventWindow: ...


def _sorted_records(table: str, rows: Iterable[Entity]) -> list[tuple[str, bytes, bytes]]:
    records = [encoding.encode_record(row) for row in rows]
    for record in records:
        if record[0] != table:
            raise TypeError(f"a {record[0]} row is stored in {table}")
    records.sort(key=lambda record: record[1])
    return records


class MemoryState:
    """A :class:`PartitionState` in plain dicts; the caller sets ``offset`` (the last applied one)."""

    __slots__ = ("anomalies", "balances", "fills", "offset", "orders", "positions", "risks", "window")

    def __init__(self) -> None:
        self.window = new_window()
        self.orders: dict[str, Order] = {}
        self.fills: dict[str, FillRecord] = {}
        self.positions: dict[tuple[str, str], Position] = {}
        self.balances: dict[tuple[str, str], Balance] = {}
        self.risks: dict[str, Risk] = {}
        self.anomalies: dict[int, Anomaly] = {}
        self.offset: int = encoding.NO_OFFSET

    def order(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    def put_order(self, order: Order) -> None:
        self.orders[order.order_id] = order

    def fill(self, exec_id: str) -> FillRecord | None:
        return self.fills.get(exec_id)

    def put_fill(self, fill: FillRecord) -> None:
        self.fills[fill.exec_id] = fill

    def position(self, account_id: str, symbol: str) -> Position | None:
        return self.positions.get((account_id, symbol))

    def put_position(self, position: Position) -> None:
        self.positions[position.account_id, position.symbol] = position

    def balance(self, account_id: str, currency: str) -> Balance | None:
        return self.balances.get((account_id, currency))

    def put_balance(self, balance: Balance) -> None:
        self.balances[balance.account_id, balance.currency] = balance

    def risk(self, account_id: str) -> Risk | None:
        return self.risks.get(account_id)

    def put_risk(self, risk: Risk) -> None:
        self.risks[risk.account_id] = risk

    def put_anomaly(self, anomaly: Anomaly) -> None:
        self.anomalies[anomaly.offset] = anomaly

    def event_window(self) -> EventWindow:
        return self.window

    def records(self) -> Iterator[tuple[str, bytes, bytes]]:
        """Every row in canonical order (see :mod:`projector.digest`), ending with ``meta.offset``."""
        tables: dict[str, Iterable[Entity]] = {
            encoding.ORDERS: self.orders.values(),
            encoding.FILLS: self.fills.values(),
            encoding.POSITIONS: self.positions.values(),
            encoding.BALANCES: self.balances.values(),
            encoding.RISK: self.risks.values(),
            encoding.ANOMALIES: self.anomalies.values(),
        }
        for table in encoding.EVENTS_TABLES:
            if table == encoding.EVENT_IDS:
                yield from ((table, key, value) for key, value in self.window.rows())
            else:
                yield from _sorted_records(table, tables[table])
        yield encoding.meta_record(self.offset)

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, bytes, bytes]]) -> MemoryState:
        """The state a canonical record sequence describes (the inverse of :meth:`records`)."""
        state = cls()
        window_rows: list[tuple[bytes, bytes]] = []
        for table, key, value in records:
            if table == encoding.META:
                if key == encoding.OFFSET_KEY:
                    state.offset = encoding.decode_offset(value)
                continue
            if table == encoding.EVENT_IDS:
                window_rows.append((key, value))
                continue
            entity = encoding.decode_record(table, key, value)
            if isinstance(entity, Order):
                state.put_order(entity)
            elif isinstance(entity, FillRecord):
                state.put_fill(entity)
            elif isinstance(entity, Position):
                state.put_position(entity)
            elif isinstance(entity, Balance):
                state.put_balance(entity)
            elif isinstance(entity, Risk):
                state.put_risk(entity)
            elif isinstance(entity, Anomaly):
                state.put_anomaly(entity)
            else:
                raise encoding.EncodingError(f"table {table!r} does not belong to an events partition")
        state.window = load_window(window_rows)
        return state


class MemoryConfigState:
    """A :class:`ConfigState` in plain dicts; the caller sets ``offset`` (the last applied one)."""

    __slots__ = ("anomalies", "entries", "offset", "window")

    def __init__(self) -> None:
        self.window = new_window()
        self.entries: dict[str, ConfigEntry] = {}
        self.anomalies: dict[int, Anomaly] = {}
        self.offset: int = encoding.NO_OFFSET

    def config(self, key: str) -> ConfigEntry | None:
        return self.entries.get(key)

    def put_config(self, entry: ConfigEntry) -> None:
        self.entries[entry.key] = entry

    def put_anomaly(self, anomaly: Anomaly) -> None:
        self.anomalies[anomaly.offset] = anomaly

    def event_window(self) -> EventWindow:
        return self.window

    def records(self) -> Iterator[tuple[str, bytes, bytes]]:
        """Every row in canonical order, ending with ``meta.offset``."""
        tables: dict[str, Iterable[Entity]] = {
            encoding.CONFIG: self.entries.values(),
            encoding.ANOMALIES: self.anomalies.values(),
        }
        for table in encoding.CONFIG_TABLES:
            if table == encoding.EVENT_IDS:
                yield from ((table, key, value) for key, value in self.window.rows())
            else:
                yield from _sorted_records(table, tables[table])
        yield encoding.meta_record(self.offset)

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, bytes, bytes]]) -> MemoryConfigState:
        """The state a canonical record sequence describes (the inverse of :meth:`records`)."""
        state = cls()
        window_rows: list[tuple[bytes, bytes]] = []
        for table, key, value in records:
            if table == encoding.META:
                if key == encoding.OFFSET_KEY:
                    state.offset = encoding.decode_offset(value)
                continue
            if table == encoding.EVENT_IDS:
                window_rows.append((key, value))
                continue
            entity = encoding.decode_record(table, key, value)
            if isinstance(entity, ConfigEntry):
                state.put_config(entity)
            elif isinstance(entity, Anomaly):
                state.put_anomaly(entity)
            else:
                raise encoding.EncodingError(f"table {table!r} does not belong to the config partition")
        state.window = load_window(window_rows)
        return state
