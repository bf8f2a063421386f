"""The event_ids one partition applied recently: what makes a re-sent event apply at most once.

A producer that retries after a timeout can write the same event twice. Every event carries an
``event_id``; the policy step (:mod:`projector.policy`) asks the partition's window whether that id
was applied within the last :data:`WINDOW_OFFSETS` offsets, and records a repeat as a benign
``DUPLICATE_EVENT`` anomaly instead of applying it again.

How long an id is remembered: the window is counted in offsets of the partition, never in time, so
it is deterministic (a replay remembers exactly what the first projection did) and bounded: ids are
kept in buckets of :data:`BUCKET_OFFSETS` consecutive offsets, and the :data:`WINDOW_BUCKETS`
buckets before the current one stay live. An id applied at offset ``p`` therefore still counts at
every offset ``o`` with ``p // BUCKET_OFFSETS >= o // BUCKET_OFFSETS - WINDOW_BUCKETS``: at least
:data:`WINDOW_OFFSETS` (524,288) offsets later, and never more than one bucket longer. docs/state.md
says why that is enough and what it costs.

Only applied events are remembered: an event that was refused or recorded as an anomaly changed
nothing, so sending it again is not a repeat.

Guarantees:

- **Pure and deterministic**: the window after a sequence of ``remember`` calls depends only on the
  ids and offsets given, never on how they were batched.
- **Persisted with the state**: :meth:`EventWindow.changed_rows` gives the rows of table
  ``event_ids`` to write in the same transaction as the batch; :meth:`EventWindow.load` rebuilds an
  equal window from them. Rows are sealed like every other row (:func:`projector.encoding.seal`).
- **Bounded**: at most ``WINDOW_BUCKETS + 1`` buckets are held, in memory and on disk.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator
from json.encoder import encode_basestring_ascii
from typing import Any, Final

from projector.encoding import (
    ENCODING_VERSION,
    EVENT_IDS,
    NO_OFFSET,
    EncodingError,
    seal,
    unseal,
    window_bucket_of_key,
    window_key,
)
from rewind.ground.errors import InvariantViolation

BUCKET_SHIFT: Final = 10
BUCKET_OFFSETS: Final = 1 << BUCKET_SHIFT
"""Offsets per bucket: the unit in which the window moves, and one row of ``event_ids``."""
WINDOW_BUCKETS: Final = 512
"""Buckets kept before the current one."""
WINDOW_OFFSETS: Final = WINDOW_BUCKETS * BUCKET_OFFSETS
"""The fewest offsets for which an applied event_id is remembered (524,288)."""

_decode_json = json.JSONDecoder().decode


class _Bucket:
    """The ids applied at offsets ``index * BUCKET_OFFSETS ..``, in offset order."""

    __slots__ = ("ids", "index", "offsets")

    def __init__(self, index: int) -> None:
        self.index = index
        self.ids: list[str] = []
        self.offsets = array("q")

    def encode(self) -> bytes:
        """The canonical bytes of the bucket: ``[1,[offsets...],[ids...]]``."""
        offsets = ",".join(map(str, self.offsets))
        ids = ",".join(map(encode_basestring_ascii, self.ids))
        return f"[{ENCODING_VERSION},[{offsets}],[{ids}]]".encode()


class EventWindow:
    """The event_ids applied in the recent offsets of one partition; see the module docstring."""

    __slots__ = ("_bucket_of", "_buckets", "_changed", "_hot", "_last_offset", "_newest")

    def __init__(self) -> None:
        self._bucket_of: dict[str, int] = {}
        self._buckets: dict[int, _Bucket] = {}
        self._changed: set[int] = set()
        self._hot: _Bucket | None = None
        self._newest = -1
        self._last_offset = NO_OFFSET

    def applied_at(self, event_id: str, offset: int) -> int:
        """The offset at which ``event_id`` was applied, if that is within the window seen from
        ``offset``; :data:`~projector.encoding.NO_OFFSET` otherwise."""
        index = self._bucket_of.get(event_id)
        if index is None or index < (offset >> BUCKET_SHIFT) - WINDOW_BUCKETS:
            return NO_OFFSET
        bucket = self._buckets[index]
        return bucket.offsets[bucket.ids.index(event_id)]

    def remember(self, event_id: str, offset: int) -> None:
        """Record that ``event_id`` was applied at ``offset`` (after every offset remembered so far)."""
        hot = self._hot
        if hot is None or offset >> BUCKET_SHIFT != hot.index:
            hot = self._enter(offset)
        hot.ids.append(event_id)
        hot.offsets.append(offset)
        self._bucket_of[event_id] = hot.index
        self._last_offset = offset

    def _enter(self, offset: int) -> _Bucket:
        """Make ``offset``'s bucket the one written to: evict the buckets that fell out of the window,
        and mark it changed."""
        if offset <= self._last_offset:
            raise InvariantViolation(
                f"event window: offset {offset} remembered after {self._last_offset}",
                "offsets only move forward: this is a bug; report it with this message",
            )
        index = offset >> BUCKET_SHIFT
        if index > self._newest:
            self._newest = index
            for old in [b for b in self._buckets if b < index - WINDOW_BUCKETS]:
                self._evict(old)
        hot = self._buckets.get(index)
        if hot is None:
            hot = self._buckets[index] = _Bucket(index)
        self._changed.add(index)
        self._hot = hot
        return hot

    def _evict(self, index: int) -> None:
        bucket = self._buckets.pop(index)
        bucket_of = self._bucket_of
        for event_id in bucket.ids:
            if bucket_of.get(event_id) == index:
                del bucket_of[event_id]
        self._changed.add(index)

    def changed_rows(self) -> dict[bytes, bytes | None]:
        """The ``event_ids`` rows changed since the last call, sealed (None: delete the row)."""
        rows: dict[bytes, bytes | None] = {}
        for index in sorted(self._changed):
            key = window_key(index)
            bucket = self._buckets.get(index)
            rows[key] = None if bucket is None else seal(key, bucket.encode())
        self._changed.clear()
        self._hot = None
        return rows

    def rows(self) -> Iterator[tuple[bytes, bytes]]:
        """Every ``event_ids`` row, sealed, in key order (the canonical sequence)."""
        for index in sorted(self._buckets):
            key = window_key(index)
            yield key, seal(key, self._buckets[index].encode())

    def __len__(self) -> int:
        """How many event_ids are held."""
        return len(self._bucket_of)

    @classmethod
    def load(cls, rows: Iterable[tuple[bytes, bytes]]) -> EventWindow:
        """The window stored as ``rows`` (key, sealed value) of table ``event_ids``, in key order.

        Raises :class:`~projector.encoding.CorruptRow` for a row whose checksum fails and
        :class:`~projector.encoding.EncodingError` for one that is not a bucket of this encoding.
        """
        window = cls()
        for key, value in rows:
            index, offsets, ids = decode_bucket(key, value)
            bucket = window._buckets[index] = _Bucket(index)
            bucket.offsets.extend(offsets)
            bucket.ids.extend(ids)
            for event_id in ids:
                window._bucket_of[event_id] = index
            window._newest = max(window._newest, index)
            window._last_offset = max(window._last_offset, offsets[-1])
        return window


def decode_bucket(key: bytes, value: bytes) -> tuple[int, list[int], list[str]]:
    """``(bucket number, offsets, ids)`` of a stored ``event_ids`` row, its checksum and shape checked."""
    fields = _bucket_fields(key, unseal(EVENT_IDS, key, value))
    return window_bucket_of_key(key), fields[1], fields[2]


def _bucket_fields(key: bytes, payload: bytes) -> list[Any]:
    """The decoded ``[1, offsets, ids]`` of a bucket row, checked to belong under ``key``."""
    try:
        fields = _decode_json(payload.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise EncodingError(f"{EVENT_IDS}: value is not canonical JSON: {payload[:80]!r}") from exc
    index = window_bucket_of_key(key)
    low, high = index << BUCKET_SHIFT, (index + 1) << BUCKET_SHIFT
    if (
        type(fields) is not list
        or len(fields) != 3
        or fields[0] != ENCODING_VERSION
        or type(fields[1]) is not list
        or type(fields[2]) is not list
        or not fields[1]
        or len(fields[1]) != len(fields[2])
        or any(type(o) is not int or not low <= o < high for o in fields[1])
        or any(a >= b for a, b in zip(fields[1], fields[1][1:], strict=False))
        or any(type(i) is not str for i in fields[2])
    ):
        raise EncodingError(f"{EVENT_IDS}: key {key!r} does not hold a bucket of ascending offsets and ids")
    return fields
