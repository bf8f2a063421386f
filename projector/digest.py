"""The state digest: one xxh3-128 over a partition's canonical record sequence.

The caller yields ``(table, key, value)`` records in canonical order (tables as in
:data:`projector.encoding.EVENTS_TABLES` / :data:`~projector.encoding.CONFIG_TABLES`, keys sorted
bytewise within a table, then :func:`projector.encoding.meta_record`). Each record is framed as three
4-byte big-endian lengths followed by the table name, key and value, so no two different record
sequences hash the same bytes. The digest therefore depends only on logical content, never on how the
state was stored or built.

Every value is a sealed row (:func:`projector.encoding.seal`), and its checksum is checked as it is
hashed: a damaged row raises :class:`~projector.encoding.CorruptRow` instead of yielding a digest, so
nothing that validates or copies state by its digest accepts a damaged row.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from itertools import groupby
from operator import itemgetter
from typing import Any, Final

import xxhash

from projector.encoding import CONFIG_TABLES, EVENTS_TABLES, META, ROW_CHECKSUM_BYTES, CorruptRow
from rewind.ground.native_build import pure_python_asked

DIGEST_DOMAIN: Final = b"rewind-state-digest-v1\x00"
_FRAME = struct.Struct(">III")

__all__ = [
    "CONFIG_TABLES",
    "EVENTS_TABLES",
    "META",
    "RecordOrderError",
    "digest_rows",
    "digest_update",
    "new_hasher",
    "state_digest",
]


class RecordOrderError(ValueError):
    """Records that are not in canonical order: a table twice, or keys not strictly ascending."""


_FLUSH_BYTES: Final = 1 << 20


_Feed = Callable[[Callable[[bytes], None], bytes, Iterable[tuple[bytes, bytes]]], Any]
"""``feed(update, table_name, rows)``: None, the (key, previous key) pair found out of order, or the
1-tuple of the key of a row whose checksum fails."""


def _native_feed() -> _Feed | None:
    """``projector._digest_frames.feed`` when built (and ``REWIND_PURE_PYTHON`` is unset), else None."""
    if pure_python_asked():
        return None
    try:
        from projector import _digest_frames  # type: ignore[attr-defined]
    except ImportError:
        return None
    feed: _Feed = _digest_frames.feed
    return feed


_FEED: Final = _native_feed()


def new_hasher() -> xxhash.xxh3_128:
    """A hasher primed with the digest's domain: feed it with :func:`digest_update`/:func:`digest_rows`."""
    return xxhash.xxh3_128(DIGEST_DOMAIN)


def digest_rows(hasher: xxhash.xxh3_128, table: str, rows: Iterable[tuple[bytes, bytes]]) -> None:
    """Feed one whole table's ``(key, value)`` rows into ``hasher`` (keys strictly ascending).

    The same bytes as :func:`digest_update` with those rows as ``(table, key, value)`` records; read
    straight off an LMDB cursor, it is the fast path (no record tuples, one hasher call per MiB; the
    loop is in C when the native build made ``projector/_digest_frames.c``).
    Raises :class:`RecordOrderError` when a key does not follow the one before it, and
    :class:`~projector.encoding.CorruptRow` when a row's checksum does not match its key and bytes.
    """
    if _FEED is not None:
        stopped = _FEED(hasher.update, table.encode(), rows)
        if stopped is not None:
            if len(stopped) == 1:
                raise CorruptRow(table, stopped[0])
            key, last_key = stopped
            raise RecordOrderError(f"{table}: key {key!r} does not follow {last_key!r}")
        return
    pack = _FRAME.pack
    name = table.encode()
    size = len(name)
    buffer = bytearray()
    last_key = b""
    first = True
    for key, value in rows:
        if not first and key <= last_key:
            raise RecordOrderError(f"{table}: key {key!r} does not follow {last_key!r}")
        first = False
        last_key = key
        if len(value) < ROW_CHECKSUM_BYTES or zlib.crc32(
            value[:-ROW_CHECKSUM_BYTES], zlib.crc32(key)
        ) != int.from_bytes(value[-ROW_CHECKSUM_BYTES:], "big"):
            raise CorruptRow(table, key)
        buffer += pack(size, len(key), len(value))
        buffer += name
        buffer += key
        buffer += value
        if len(buffer) >= _FLUSH_BYTES:
            hasher.update(buffer)
            buffer.clear()
    hasher.update(buffer)


def digest_update(hasher: xxhash.xxh3_128, records: Iterable[tuple[str, bytes, bytes]]) -> None:
    """Feed ``records`` into ``hasher`` with the digest's framing (to hash several partitions in one).

    Raises :class:`RecordOrderError` when a table's keys are not strictly ascending or a table comes
    back after another one started, so an unsorted source cannot yield a plausible-looking digest.
    """
    finished: set[str] = set()
    for table, group in groupby(records, key=itemgetter(0)):
        if table in finished:
            raise RecordOrderError(f"table {table!r} appears twice in the record sequence")
        finished.add(table)
        digest_rows(hasher, table, ((key, value) for _, key, value in group))


def state_digest(records: Iterable[tuple[str, bytes, bytes]]) -> str:
    """The lowercase hex xxh3-128 of ``records``, which must already be in canonical order."""
    hasher = new_hasher()
    digest_update(hasher, records)
    return str(hasher.hexdigest())
