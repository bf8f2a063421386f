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

- **Pure and deterministic**: the window after a sequence of claims and releases depends only on
  the ids and offsets given, never on how they were batched.
- **Persisted with the state**: :meth:`EventWindow.changed_rows` gives the rows of table
  ``event_ids`` to write in the same transaction as the batch; :func:`load_window` rebuilds an
  equal window from them. Rows are sealed like every other row (:func:`projector.encoding.seal`).
- **Bounded**: at most ``WINDOW_BUCKETS + 1`` buckets are held, in memory and on disk.
- **Two implementations, one behaviour**: :func:`new_window` and :func:`load_window` give the C
  window (``projector/_event_window.c``: an event's claim costs one hash, one probe and, for a new
  id, a copy of its bytes) where it is built, and :class:`PyEventWindow` otherwise (``REWIND_NATIVE=0``);
  both give the same answers and the same stored bytes (``tests/test_event_window.py`` holds them
  to it).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from itertools import pairwise
from typing import Any, Final, Protocol

from projector.encoding import (
    EVENT_IDS,
    NO_OFFSET,
    EncodingError,
    seal,
    unseal,
    window_bucket_of_key,
    window_key,
)
from rewind.ground.errors import InvariantViolation
from rewind.ground.native_build import pure_python_asked

BUCKET_SHIFT: Final = 8
BUCKET_OFFSETS: Final = 1 << BUCKET_SHIFT
"""Offsets per bucket: the unit in which the window moves, and one row of ``event_ids``. Every batch
rewrites the buckets it touched, so a bucket is big enough that its fixed cost is spread over many
ids, and small enough that rewriting a partly filled one costs little."""
WINDOW_BUCKETS: Final = 2_048
"""Buckets kept before the current one."""
WINDOW_OFFSETS: Final = WINDOW_BUCKETS * BUCKET_OFFSETS
"""The fewest offsets for which an applied event_id is remembered (524,288)."""

BUCKET_FORMAT: Final = 1
"""The first byte of a bucket row; see :meth:`_Bucket.encode`."""
_BIG_ENDIAN_HOST: Final = sys.byteorder == "big"
_LOW_BITS: Final = 0xFFFF
"""The bucket bits the index keeps: more than the WINDOW_BUCKETS + 1 buckets ever held need."""


def _little_endian(numbers: array[int]) -> bytes:
    if _BIG_ENDIAN_HOST:
        numbers = array(numbers.typecode, numbers)
        numbers.byteswap()
    return numbers.tobytes()


class _Bucket:
    """The ids applied at offsets ``index * BUCKET_OFFSETS ..``, in offset order (each offset kept
    as its place in the bucket, 0 to BUCKET_OFFSETS - 1)."""

    __slots__ = ("ids", "index", "places")

    def __init__(self, index: int) -> None:
        self.index = index
        self.ids: list[str] = []
        self.places: list[int] = []  # 0 to 31: small ints, which Python never allocates

    def offset(self, position: int) -> int:
        return (self.index << BUCKET_SHIFT) + self.places[position]

    def encode(self) -> bytes:
        """The canonical bytes of the bucket, little-endian: the format byte, the number of ids (4
        bytes), each id's place in the bucket (2 bytes each), each id's UTF-8 length (4 bytes each),
        then the ids' UTF-8 bytes one after another. Binary rather than JSON: written once per batch
        for every bucket it touched, it must cost next to nothing."""
        ids = self.ids
        joined = "".join(ids)
        if joined.isascii():
            lengths = array("I", map(len, ids))
            data = joined.encode("ascii")
        else:
            encoded = [i.encode("utf-8", "surrogatepass") for i in ids]
            lengths = array("I", map(len, encoded))
            data = b"".join(encoded)
        count = len(ids).to_bytes(4, "little")
        places = _little_endian(array("H", self.places))
        return bytes((BUCKET_FORMAT,)) + count + places + _little_endian(lengths) + data


class EventWindow(Protocol):
    """The event_ids applied in the recent offsets of one partition; see the module docstring.

    Every event's path is :meth:`claim`; when the event does not apply after all, :meth:`release`
    at the same offset, before the next claim.
    """

    def applied_at(self, event_id: str, offset: int) -> int:
        """The offset at which ``event_id`` was applied, if that is within the window seen from
        ``offset``; :data:`~projector.encoding.NO_OFFSET` otherwise."""
        ...

    def claim(self, event_id: str, offset: int) -> int:
        """:meth:`applied_at`; when that is :data:`~projector.encoding.NO_OFFSET`, keep ``event_id``
        as applied at ``offset`` unless :meth:`release` undoes it. Offsets only move forward:
        :class:`~rewind.ground.errors.InvariantViolation` otherwise."""
        ...

    def release(self, event_id: str, offset: int) -> None:
        """Undo the claim just made for ``event_id`` at ``offset`` (any other:
        :class:`~rewind.ground.errors.InvariantViolation`)."""

    def changed_rows(self) -> dict[bytes, bytes | None]:
        """The ``event_ids`` rows changed since the last call, sealed (None: delete the row)."""
        ...

    def rows(self) -> Iterable[tuple[bytes, bytes]]:
        """Every ``event_ids`` row, sealed, in key order (the canonical sequence)."""
        ...

    def __len__(self) -> int:
        """How many event_ids are held (claims included)."""
        ...


def _native_window_class() -> Callable[[], Any] | None:
    if pure_python_asked():
        return None
    try:
        from projector import _event_window  # type: ignore[attr-defined]
    except ImportError:
        return None
    window_class: Callable[[], Any] = _event_window.Window
    return window_class


_NATIVE_WINDOW: Final = _native_window_class()


def new_window() -> EventWindow:
    """An empty window: the C one where it is built."""
    if _NATIVE_WINDOW is None:
        return PyEventWindow()
    window: EventWindow = _NATIVE_WINDOW()
    return window


def load_window(rows: Iterable[tuple[bytes, bytes]]) -> EventWindow:
    """The window stored as ``rows`` (key, sealed value) of table ``event_ids``, in key order.

    Raises :class:`~projector.encoding.CorruptRow` for a row whose checksum fails and
    :class:`~projector.encoding.EncodingError` for one that is not a bucket of this encoding.
    """
    if _NATIVE_WINDOW is None:
        return PyEventWindow.load(rows)
    window = _NATIVE_WINDOW()
    for key, value in rows:
        payload = unseal(EVENT_IDS, key, value)
        try:
            window.load_bucket(window_bucket_of_key(key), payload)
        except ValueError as exc:
            raise _not_a_bucket(key, str(exc)) from None
    loaded: EventWindow = window
    return loaded


def _not_a_bucket(key: bytes, why: str) -> EncodingError:
    return EncodingError(
        f"{EVENT_IDS}: key {key!r} does not hold a bucket of ascending offsets and ids: {why}"
    )


class _DictIndex:
    """Which bucket (its low 16 bits) each held id is in: candidates the window confirms against the
    bucket's ids."""

    def __init__(self) -> None:
        self._buckets: dict[str, list[int]] = {}

    def find(self, event_id: str) -> tuple[int, ...]:
        return tuple(self._buckets.get(event_id, ()))

    def add(self, event_id: str, bucket: int) -> None:
        self._buckets.setdefault(event_id, []).append(bucket & _LOW_BITS)

    def remove(self, event_id: str, bucket: int) -> bool:
        found = self._buckets.get(event_id)
        if not found or bucket & _LOW_BITS not in found:
            return False
        found.remove(bucket & _LOW_BITS)
        if not found:
            del self._buckets[event_id]
        return True

    def __len__(self) -> int:
        return sum(len(found) for found in self._buckets.values())


class PyEventWindow:
    """:class:`EventWindow` in Python: the reference the C window is held to, and the window of the
    interpreted build."""

    __slots__ = ("_buckets", "_changed", "_hot", "_index", "_last_offset", "_newest")

    def __init__(self) -> None:
        self._index = _DictIndex()
        self._buckets: dict[int, _Bucket] = {}
        self._changed: set[int] = set()
        self._hot: _Bucket | None = None
        self._newest = -1
        self._last_offset = NO_OFFSET

    def applied_at(self, event_id: str, offset: int) -> int:
        """The offset at which ``event_id`` was applied, if that is within the window seen from
        ``offset``; :data:`~projector.encoding.NO_OFFSET` otherwise."""
        return self._confirm(event_id, self._index.find(event_id), offset)

    def _confirm(self, event_id: str, candidates: tuple[int, ...], offset: int) -> int:
        """The offset of ``event_id`` in one of the candidate buckets (their low 16 bits) that is still
        inside the window seen from ``offset``; :data:`~projector.encoding.NO_OFFSET` if none holds it."""
        newest = self._newest
        oldest_live = (offset >> BUCKET_SHIFT) - WINDOW_BUCKETS
        for low in candidates:
            number = newest - ((newest - low) & _LOW_BITS)
            bucket = self._buckets.get(number)
            if bucket is not None and number >= oldest_live and event_id in bucket.ids:
                return bucket.offset(bucket.ids.index(event_id))
        return NO_OFFSET

    def claim(self, event_id: str, offset: int) -> int:
        """:meth:`applied_at`; when that is :data:`~projector.encoding.NO_OFFSET`, keep the id as
        applied at ``offset`` unless :meth:`release` undoes it (offsets only move forward)."""
        index = offset >> BUCKET_SHIFT
        candidates = self._index.find(event_id)
        if candidates:
            earlier = self._confirm(event_id, candidates, offset)
            if earlier != NO_OFFSET:
                self._advance(index)  # a repeat moves the window too
                return earlier
        hot = self._hot
        if hot is None or index != hot.index or offset <= self._last_offset:
            hot = self._enter(offset)
        hot.ids.append(event_id)
        hot.places.append(offset & (BUCKET_OFFSETS - 1))
        self._index.add(event_id, index)
        self._last_offset = offset
        return NO_OFFSET

    def release(self, event_id: str, offset: int) -> None:
        """Undo the claim just made for ``event_id`` at ``offset``: its event did not apply."""
        index = offset >> BUCKET_SHIFT
        bucket = self._buckets.get(index)
        if (
            bucket is None
            or offset != self._last_offset
            or bucket.places[-1] != offset & (BUCKET_OFFSETS - 1)
            or bucket.ids[-1] != event_id
        ):
            raise InvariantViolation(
                f"event window: release of {event_id!r} at offset {offset}, which is not the last claim",
                "only the claim just made can be released: this is a bug; report it with this message",
            )
        self._index.remove(event_id, index)
        bucket.ids.pop()
        bucket.places.pop()
        if not bucket.ids:  # made by this claim: never stored
            del self._buckets[index]
            self._changed.discard(index)
            if self._hot is bucket:
                self._hot = None

    def _enter(self, offset: int) -> _Bucket:
        """Make ``offset``'s bucket the one written to: evict the buckets that fell out of the window,
        and mark it changed."""
        if offset <= self._last_offset:
            raise InvariantViolation(
                f"event window: offset {offset} claimed after {self._last_offset}",
                "offsets only move forward: this is a bug; report it with this message",
            )
        index = offset >> BUCKET_SHIFT
        self._advance(index)
        hot = self._buckets.get(index)
        if hot is None:
            hot = self._buckets[index] = _Bucket(index)
        self._changed.add(index)
        self._hot = hot
        return hot

    def _advance(self, index: int) -> None:
        """Move the window's end to bucket ``index`` if it is newer, evicting what falls out."""
        if index <= self._newest:
            return
        self._newest = index
        limit = index - WINDOW_BUCKETS
        gone: list[int] = []
        for old in self._buckets:  # ascending: buckets are created and loaded in order
            if old >= limit:
                break
            gone.append(old)
        for old in gone:
            self._evict(old)

    def _evict(self, index: int) -> None:
        bucket = self._buckets.pop(index)
        remove = self._index.remove
        for event_id in bucket.ids:
            remove(event_id, index)
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
        """How many event_ids are held (claims included)."""
        return len(self._index)

    @classmethod
    def load(cls, rows: Iterable[tuple[bytes, bytes]]) -> PyEventWindow:
        """See :func:`load_window`."""
        window = cls()
        for key, value in rows:
            index, offsets, ids = decode_bucket(key, value)
            bucket = window._buckets[index] = _Bucket(index)
            bucket.places.extend([offset & (BUCKET_OFFSETS - 1) for offset in offsets])
            bucket.ids.extend(ids)
            for event_id in ids:
                window._index.add(event_id, index)
            window._newest = max(window._newest, index)
            window._last_offset = max(window._last_offset, offsets[-1])
        return window


def decode_bucket(key: bytes, value: bytes) -> tuple[int, list[int], list[str]]:
    """``(bucket number, offsets, ids)`` of a stored ``event_ids`` row, its checksum and shape checked
    (:class:`~projector.encoding.EncodingError` for anything that :meth:`_Bucket.encode` could not
    have written under ``key``)."""
    payload = unseal(EVENT_IDS, key, value)
    index = window_bucket_of_key(key)

    def refuse(why: str) -> EncodingError:
        return _not_a_bucket(key, why)

    if len(payload) < 5 or payload[0] != BUCKET_FORMAT:
        raise refuse("no format byte and count")
    count = int.from_bytes(payload[1:5], "little")
    header = 5 + 6 * count
    if count == 0 or len(payload) < header:
        raise refuse(f"{count} ids in {len(payload)} bytes")
    places = array("H")
    places.frombytes(payload[5 : 5 + 2 * count])
    lengths = array("I")
    lengths.frombytes(payload[5 + 2 * count : header])
    if _BIG_ENDIAN_HOST:
        places.byteswap()
        lengths.byteswap()
    if sum(lengths) != len(payload) - header:
        raise refuse("the id lengths do not add up to the bytes that follow")
    if any(p >= BUCKET_OFFSETS for p in places) or any(a >= b for a, b in pairwise(places)):
        raise refuse("offsets not ascending inside the bucket")
    ids: list[str] = []
    at = header
    try:
        for length in lengths:
            ids.append(payload[at : at + length].decode("utf-8", "surrogatepass"))
            at += length
    except UnicodeDecodeError:
        raise refuse("an id is not UTF-8") from None
    base = index << BUCKET_SHIFT
    return index, [base + p for p in places], ids
