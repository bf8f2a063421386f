"""Whether the live state may be read, shared by the service with its HTTP front process.

The HTTP front (:mod:`rewind.http_front`) reads the state's LMDB stores in a process of its own, so
it must learn, exactly and without asking the service over a socket, when the service stops handing
out its state directory (a recovery or a rebuild is about to replace the stores) and when it hands
out a new one. The service keeps that in a small file it maps into memory, ``http-front.status`` in
``REWIND_HOME``, as three 8-byte little-endian words, a sequence lock:

* ``sequence``: odd while the service changes the other two words, even otherwise;
* ``readable``: 1 while the service hands out its state directory (its ``state_directory()``), 0
  from the moment it stops doing so, before the projector closes its stores;
* ``generation``: counts the times the state became readable; a reader holding stores opened under
  another generation must open them again.

Guarantee: :meth:`StatusWriter.publish` returns only once the words are written, and the service
calls it before it closes or replaces a store. A read that :meth:`StatusReader.begin` allowed and
that :meth:`StatusReader.unchanged` confirms afterwards (the same even sequence) ran entirely while
the state of that generation was readable: it never saw a replaced store, nor a store read while
the state was not readable. A read that fails the confirmation is not answered (503, retry).

Each word is written with one aligned 8-byte store into a shared mapping, and only the service
writes (under a lock), so the front's reads see each word whole.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from pathlib import Path
from typing import Final

from rewind.ground.errors import RewindError

__all__ = ["STATUS_FILE_NAME", "NotReadable", "StatusReader", "StatusWriter"]

STATUS_FILE_NAME: Final = "http-front.status"
_SIZE: Final = 4096
_WORD: Final = struct.Struct("<Q")
_SEQUENCE, _READABLE, _GENERATION = 0, 8, 16


class NotReadable(RewindError):
    """The state is not readable now (recovery, rebuild, or the service has not recovered yet)."""


class StatusWriter:
    """The service's side: creates the file afresh (not readable, generation 0) and publishes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fresh = path.with_name(f".{path.name}.{os.getpid()}")
        fresh.write_bytes(bytes(_SIZE))
        fresh.replace(path)  # a new file: a front still mapping an old one reads it no more
        self._file = path.open("r+b")
        self._map = mmap.mmap(self._file.fileno(), _SIZE)
        self._lock = threading.Lock()
        self._sequence = 0
        self._generation = 0

    def publish(self, readable: bool) -> None:
        """Record that the state is readable (a new generation) or not, before returning."""
        with self._lock:
            self._sequence += 1
            _WORD.pack_into(self._map, _SEQUENCE, self._sequence)
            if readable:
                self._generation += 1
                _WORD.pack_into(self._map, _GENERATION, self._generation)
            _WORD.pack_into(self._map, _READABLE, int(readable))
            self._sequence += 1
            _WORD.pack_into(self._map, _SEQUENCE, self._sequence)

    def close(self) -> None:
        """Record the state as not readable and unmap; the file stays (a front may still map it)."""
        self.publish(False)
        self._map.close()
        self._file.close()


class StatusReader:
    """The front's side: the file mapped read-only."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as file:
            self._map = mmap.mmap(file.fileno(), _SIZE, access=mmap.ACCESS_READ)

    def begin(self) -> tuple[int, int]:
        """``(sequence, generation)`` to read under, or :class:`NotReadable`."""
        sequence = _WORD.unpack_from(self._map, _SEQUENCE)[0]
        readable = _WORD.unpack_from(self._map, _READABLE)[0]
        generation = _WORD.unpack_from(self._map, _GENERATION)[0]
        if sequence % 2 or not readable or _WORD.unpack_from(self._map, _SEQUENCE)[0] != sequence:
            raise NotReadable("the state is not readable yet: recovery is in progress", "retry in a moment")
        return int(sequence), int(generation)

    def unchanged(self, sequence: int) -> bool:
        """True when nothing was published since :meth:`begin` returned ``sequence``."""
        return bool(_WORD.unpack_from(self._map, _SEQUENCE)[0] == sequence)

    def close(self) -> None:
        self._map.close()
