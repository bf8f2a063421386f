"""Which partition a keyed record lands on: librdkafka's partitioners, reimplemented exactly.

Every event is keyed by its account, so an account's events, and every order of it, live in exactly
one partition of the events topic. Finding it without reading the topic needs the producers' own
partitioner; ``tests/test_history.py`` checks these against records librdkafka actually placed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Final

from rewind.ground.errors import RewindError


def _murmur2(data: bytes) -> int:
    """The Java client's murmur2 (seed 0x9747b28c), as librdkafka's ``murmur2`` partitioner uses it."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length % 4
    if rest:
        tail = data[whole:]
        if rest == 3:
            h ^= tail[2] << 16
        if rest >= 2:
            h ^= tail[1] << 8
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def _fnv1a(data: bytes) -> int:
    """32-bit FNV-1a, then librdkafka's absolute value of it as a signed int (Sarama-compatible)."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return (-h) & 0xFFFFFFFF if h & 0x80000000 else h


_HASHES: Final[dict[str, Callable[[bytes], int]]] = {
    "consistent_random": zlib.crc32,
    "consistent": zlib.crc32,
    "murmur2_random": lambda key: _murmur2(key) & 0x7FFFFFFF,
    "murmur2": lambda key: _murmur2(key) & 0x7FFFFFFF,
    "fnv1a_random": _fnv1a,
    "fnv1a": _fnv1a,
}


def partition_for_key(key: str, partitions: int, partitioner: str = "consistent_random") -> int:
    """The partition librdkafka's ``partitioner`` puts a record keyed ``key`` on (non-empty keys).

    ``consistent_random`` (librdkafka's default, which the producers keep) hashes with CRC-32.
    Raises :class:`RewindError` for a partitioner that does not map keys to partitions.
    """
    hashed = _HASHES.get(partitioner)
    if hashed is None:
        raise RewindError(
            f"the producers' partitioner {partitioner!r} does not map an account to one partition",
            "use --order, or configure a key-hashing partitioner (consistent_random, murmur2, fnv1a)",
        )
    return hashed(key.encode()) % partitions
