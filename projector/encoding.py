"""The canonical byte encoding of every table's keys and values: LMDB storage and the digest share it.

Guarantees:

- **Deterministic**: one entity has exactly one encoding, so equal logical state gives equal bytes.
- **Ordered keys**: keys compare bytewise in the natural order of the row (composite keys join their
  UTF-8 parts with ``\\x00``; anomaly offsets and event_ids buckets are 8-byte big-endian).
- **Versioned**: every value is a compact JSON array whose first element is :data:`ENCODING_VERSION`,
  followed by the fields in the fixed order documented in docs/state.md: exactly the bytes of
  ``json.dumps(fields, separators=(",", ":"))`` (ASCII, ``\\uXXXX`` escapes), written out directly
  because that is several times faster. JSON integers are exact at any size (scale-16 values
  overflow 64 bits); an integer field holding anything but an ``int`` (a float, a bool) is refused.
- **Sealed**: a stored row's value is its canonical bytes followed by a 4-byte big-endian CRC-32 of
  the key and those bytes (:func:`seal`). Every ``decode_*`` checks it before it decodes, so a
  changed byte in a stored row is caught before the row is served, copied or folded:
  :class:`CorruptRow` names the table and key. ``encode_*`` return the canonical bytes alone;
  :func:`encode_record` and :func:`meta_record` return sealed rows, as stored.
- **Reversible**: ``decode_*`` rebuilds the entity from (key, stored value); damaged or foreign bytes
  raise :class:`EncodingError`.

:data:`EVENTS_TABLES` and :data:`CONFIG_TABLES` are the canonical table order (the digest's, and the
LMDB store's); :func:`meta_record` is the last record of every partition.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Any, Final

from projector.model import Anomaly, Balance, ConfigEntry, Entity, FillRecord, Order, Position, Risk
from rewind.ground.native_build import pure_python_asked

ENCODING_VERSION: Final = 1

ORDERS: Final = "orders"
FILLS: Final = "fills"
POSITIONS: Final = "positions"
BALANCES: Final = "balances"
RISK: Final = "risk"
ANOMALIES: Final = "anomalies"
CONFIG: Final = "config"
EVENT_IDS: Final = "event_ids"
"""The event_ids applied recently, by bucket of offsets (:mod:`projector.event_window`)."""
META: Final = "meta"

EVENTS_TABLES: Final = (ORDERS, FILLS, POSITIONS, BALANCES, RISK, ANOMALIES, EVENT_IDS)
"""The tables of an events-topic partition, in canonical (digest) order."""
CONFIG_TABLES: Final = (CONFIG, ANOMALIES, EVENT_IDS)
"""The tables of the config partition, in canonical (digest) order."""

OFFSET_KEY: Final = b"offset"
NO_OFFSET: Final = -1
MAX_KEY_PART_BYTES: Final = 255
"""The longest identifier a key part may be, so a composite key stays under LMDB's 511-byte limit."""

_SEP: Final = b"\x00"
_V: Final = f"[{ENCODING_VERSION},"
_s: Final = encode_basestring_ascii
_decode_json = json.JSONDecoder().decode


ROW_CHECKSUM_BYTES: Final = 4


class EncodingError(ValueError):
    """Bytes that are not a value of this encoding version (damaged, foreign or from the future)."""


class CorruptRow(EncodingError):
    """A stored row whose checksum does not match its key and bytes: the row changed after it was
    written (a damaged disk or file, or a writer other than rewind). Its content must not be used."""

    def __init__(self, table: str, key: bytes) -> None:
        super().__init__(
            f"the {table} row with key {key!r} is damaged: its checksum does not match its bytes"
        )
        self.table = table
        self.key = key


def _python_seal(key: bytes, payload: bytes) -> bytes:
    return payload + zlib.crc32(payload, zlib.crc32(key)).to_bytes(ROW_CHECKSUM_BYTES, "big")


def _python_unseal(key: bytes, value: bytes) -> bytes | None:
    payload = value[:-ROW_CHECKSUM_BYTES]
    if (
        len(value) < ROW_CHECKSUM_BYTES
        or zlib.crc32(payload, zlib.crc32(key)).to_bytes(ROW_CHECKSUM_BYTES, "big")
        != value[-ROW_CHECKSUM_BYTES:]
    ):
        return None
    return payload


def _native_sealing() -> tuple[Callable[[bytes, bytes], bytes], Callable[[bytes, bytes], bytes | None]]:
    """``projector._digest_frames``'s seal and unseal when built (one C call a row), else Python's."""
    if not pure_python_asked():
        try:
            from projector import _digest_frames  # type: ignore[attr-defined]
        except ImportError:
            pass
        else:
            return _digest_frames.seal, _digest_frames.unseal
    return _python_seal, _python_unseal


_SEAL, _UNSEAL = _native_sealing()


def seal(key: bytes, payload: bytes) -> bytes:
    """``payload`` as stored under ``key``: followed by the CRC-32 of ``key`` and ``payload``."""
    return _SEAL(key, payload)


def unseal(table: str, key: bytes, value: bytes) -> bytes:
    """The canonical bytes of a stored row, after checking its checksum (:class:`CorruptRow` if it
    does not match)."""
    payload = _UNSEAL(key, value)
    if payload is None:
        raise CorruptRow(table, key)
    return payload


def _i(value: int) -> str:
    if type(value) is not int:
        raise TypeError(f"state holds exact ints only, not {value!r}")
    return str(value)


def _n(value: int | None) -> str:
    return "null" if value is None else _i(value)


def _scalar(value: bool | int | str) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _s(value)
    return _i(value)


def _decode(table: str, key: bytes, value: bytes, width: int) -> list[Any]:
    payload = unseal(table, key, value)
    try:
        fields = _decode_json(payload.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise EncodingError(f"{table}: value is not canonical JSON: {payload[:80]!r}") from exc
    if type(fields) is not list or len(fields) != width + 1 or fields[0] != ENCODING_VERSION:
        raise EncodingError(f"{table}: expected [{ENCODING_VERSION}, <{width} fields>], got {payload[:80]!r}")
    return fields


def _part(text: str) -> bytes:
    raw = text.encode()
    if not raw or len(raw) > MAX_KEY_PART_BYTES or _SEP in raw:
        raise ValueError(f"not a valid key part: {text!r} (1..{MAX_KEY_PART_BYTES} UTF-8 bytes, no NUL)")
    return raw


def _split(table: str, key: bytes) -> tuple[str, str]:
    first, sep, second = key.partition(_SEP)
    if not sep:
        raise EncodingError(f"{table}: composite key without separator: {key!r}")
    return first.decode(), second.decode()


# Keys


def order_key(order_id: str) -> bytes:
    return _part(order_id)


def fill_key(exec_id: str) -> bytes:
    return _part(exec_id)


def position_key(account_id: str, symbol: str) -> bytes:
    return _part(account_id) + _SEP + _part(symbol)


def balance_key(account_id: str, currency: str) -> bytes:
    return _part(account_id) + _SEP + _part(currency)


def risk_key(account_id: str) -> bytes:
    return _part(account_id)


def anomaly_key(offset: int) -> bytes:
    return offset.to_bytes(8, "big")


def config_key(key: str) -> bytes:
    return _part(key)


def window_key(bucket: int) -> bytes:
    """The key of an ``event_ids`` row: its bucket number, 8-byte big-endian."""
    return bucket.to_bytes(8, "big")


def window_bucket_of_key(key: bytes) -> int:
    if len(key) != 8:
        raise EncodingError(f"{EVENT_IDS}: key {key!r} is not an 8-byte bucket number")
    return int.from_bytes(key, "big")


# Values


def encode_order(o: Order) -> bytes:
    return (
        f"{_V}{_s(o.account_id)},{_s(o.symbol)},{_s(o.side)},{_s(o.order_type)},{_s(o.time_in_force)},"
        f"{_n(o.limit_price)},{_i(o.quantity)},{_i(o.filled)},{_i(o.filled_notional)},{_s(o.status)},"
        f"{_s(o.client_order_id)},{_i(o.event_count)},{_i(o.last_offset)},{_n(o.submitted_limit_price)},"
        f"{_i(o.submitted_quantity)}]"
    ).encode()


def decode_order(key: bytes, value: bytes) -> Order:
    f = _decode(ORDERS, key, value, 15)
    return Order(key.decode(), *f[1:])


def encode_fill(r: FillRecord) -> bytes:
    return f"{_V}{_s(r.order_id)}]".encode()


def decode_fill(key: bytes, value: bytes) -> FillRecord:
    f = _decode(FILLS, key, value, 1)
    return FillRecord(key.decode(), f[1])


def encode_position(p: Position) -> bytes:
    return (
        f"{_V}{_i(p.quantity)},{_i(p.cost_basis)},{_i(p.realized_pnl)},{_i(p.fees)},{_i(p.last_price)}]"
    ).encode()


def decode_position(key: bytes, value: bytes) -> Position:
    f = _decode(POSITIONS, key, value, 5)
    account_id, symbol = _split(POSITIONS, key)
    return Position(account_id, symbol, *f[1:])


def encode_balance(b: Balance) -> bytes:
    return f"{_V}{_i(b.amount)}]".encode()


def decode_balance(key: bytes, value: bytes) -> Balance:
    f = _decode(BALANCES, key, value, 1)
    account_id, currency = _split(BALANCES, key)
    return Balance(account_id, currency, f[1])


def encode_risk(r: Risk) -> bytes:
    return (
        f"{_V}{_i(r.gross_exposure)},{_i(r.net_exposure)},{_i(r.realized_pnl)},"
        f"{_i(r.open_order_notional)},{_i(r.fees)}]"
    ).encode()


def decode_risk(key: bytes, value: bytes) -> Risk:
    f = _decode(RISK, key, value, 5)
    return Risk(key.decode(), *f[1:])


def encode_anomaly(a: Anomaly) -> bytes:
    return (
        f"{_V}{_i(a.partition)},{_i(a.offset)},{_s(a.event_id)},{_s(a.event_type)},{_s(a.kind)},{_s(a.detail)}]"
    ).encode()


def decode_anomaly(key: bytes, value: bytes) -> Anomaly:
    f = _decode(ANOMALIES, key, value, 6)
    if f[2] != int.from_bytes(key, "big"):
        raise EncodingError(f"anomalies: key {key!r} does not match offset {f[2]}")
    return Anomaly(*f[1:])


def encode_config(c: ConfigEntry) -> bytes:
    return (
        f"{_V}{_s(c.value_type)},{_scalar(c.value)},{_i(c.version)},{_s(c.changed_by)},"
        f"{_i(c.occurred_at)},{_i(c.offset)}]"
    ).encode()


def decode_config(key: bytes, value: bytes) -> ConfigEntry:
    f = _decode(CONFIG, key, value, 6)
    return ConfigEntry(key.decode(), *f[1:])


# Whole records


def encode_record(entity: Entity) -> tuple[str, bytes, bytes]:
    """``(table, key, value)`` of any entity, the value sealed: what a write-back cache turns its dirty
    objects into."""
    return _RECORD_ENCODERS[type(entity)](entity)


def decode_record(table: str, key: bytes, value: bytes) -> Entity:
    """The entity a stored ``(table, key, value)`` holds (:class:`CorruptRow` if its checksum fails)."""
    try:
        decoder = _DECODERS[table]
    except KeyError:
        raise EncodingError(f"no table {table!r}") from None
    return decoder(key, value)


def encode_count(key: bytes, number: int) -> bytes:
    """A number in ``meta`` as stored under ``key``: sealed ASCII decimal."""
    return seal(key, b"%d" % number)


def decode_count(key: bytes, value: bytes) -> int:
    """A number stored in ``meta`` under ``key``, after checking its checksum."""
    payload = unseal(META, key, value)
    try:
        return int(payload)
    except ValueError:
        raise EncodingError(f"meta: {key!r} holds {payload[:40]!r}, not a number") from None


def encode_offset(offset: int) -> bytes:
    """``meta.offset`` as stored: sealed ASCII decimal, ``-1`` when no event was applied."""
    return encode_count(OFFSET_KEY, offset)


def decode_offset(value: bytes) -> int:
    return decode_count(OFFSET_KEY, value)


def meta_record(offset: int) -> tuple[str, bytes, bytes]:
    """The last record of every partition's canonical sequence: the offset of the last applied event."""
    return META, OFFSET_KEY, encode_offset(offset)


def _order_record(e: Any) -> tuple[str, bytes, bytes]:
    key = order_key(e.order_id)
    return ORDERS, key, seal(key, encode_order(e))


def _fill_record(e: Any) -> tuple[str, bytes, bytes]:
    key = fill_key(e.exec_id)
    return FILLS, key, seal(key, encode_fill(e))


def _position_record(e: Any) -> tuple[str, bytes, bytes]:
    key = position_key(e.account_id, e.symbol)
    return POSITIONS, key, seal(key, encode_position(e))


def _balance_record(e: Any) -> tuple[str, bytes, bytes]:
    key = balance_key(e.account_id, e.currency)
    return BALANCES, key, seal(key, encode_balance(e))


def _risk_record(e: Any) -> tuple[str, bytes, bytes]:
    key = risk_key(e.account_id)
    return RISK, key, seal(key, encode_risk(e))


def _anomaly_record(e: Any) -> tuple[str, bytes, bytes]:
    key = anomaly_key(e.offset)
    return ANOMALIES, key, seal(key, encode_anomaly(e))


def _config_record(e: Any) -> tuple[str, bytes, bytes]:
    key = config_key(e.key)
    return CONFIG, key, seal(key, encode_config(e))


_RECORD_ENCODERS: Final[dict[type, Callable[[Any], tuple[str, bytes, bytes]]]] = {
    Order: _order_record,
    FillRecord: _fill_record,
    Position: _position_record,
    Balance: _balance_record,
    Risk: _risk_record,
    Anomaly: _anomaly_record,
    ConfigEntry: _config_record,
}

_DECODERS: Final[dict[str, Callable[[bytes, bytes], Entity]]] = {
    ORDERS: decode_order,
    FILLS: decode_fill,
    POSITIONS: decode_position,
    BALANCES: decode_balance,
    RISK: decode_risk,
    ANOMALIES: decode_anomaly,
    CONFIG: decode_config,
}
