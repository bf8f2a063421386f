"""Commit timestamps for a consumer group, read from Kafka's ``__consumer_offsets`` topic.

Why: telling a STALLED consumer (committing, not moving) from a STOPPED one (not committing) needs
to know *when* the group committed, and no admin API returns that: ``OffsetFetch`` gives only the
offset. The group coordinator, however, persists every ``OffsetCommit`` as a record in
``__consumer_offsets``, and those records carry the commit timestamp the broker assigned.

Method:

* The group's records all live in one partition of ``__consumer_offsets``:
  ``abs(java_string_hash(group)) % partition_count`` (the coordinator's own placement rule).
* :class:`CommitLogReader` assigns that one partition, starts at the first record not older than
  ``now - history_seconds`` (``offsets_for_times`` on the record timestamps, which the coordinator
  sets), reads to the end, and on later calls continues where it stopped, so a long-running monitor
  reads each commit once.
* :func:`parse_offset_commit` decodes the records. Keys of version 0 and 1 are offset commits
  (``group``, ``topic``, ``partition``, all classic fixed-width strings); other key versions (group
  metadata, KIP-848 consumer-group records) are skipped. Values of versions 0 to 4 are decoded;
  Kafka 4.3.1 writes key version 1 with value version 4 (flexible: compact metadata string, then
  tagged fields carrying the topic id), which the real-broker tests check. A null value (tombstone)
  is an offset deletion and is skipped.

Limits:

* Needs permission to read ``__consumer_offsets`` (Describe/Read on the topic in a secured
  cluster). When it cannot be read, :class:`CommitLogReader` raises :class:`CommitLogUnavailable`
  and the caller must fall back (see ``rewind.lag``).
* ``__consumer_offsets`` is compacted. Closed segments may lose older commits of the same
  partition, so a *first* read far into the past can see fewer commits than were made. A monitor
  that keeps running reads commits shortly after they are written and is not affected.
* Commit times come from the broker's clock and are compared with this host's clock; the two are
  assumed to agree to well within the window.
* Value versions above 4 (a future Kafka) are counted in :attr:`CommitLogReader.skipped` rather
  than guessed at.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from rewind.ground.kafka_reader import open_reader
from rewind.ground.offset_sampler import drain
from rewind.ground.watermarks import watermark_offsets

OFFSETS_TOPIC = "__consumer_offsets"
_KNOWN_VALUE_VERSIONS = range(5)


class CommitLogUnavailable(Exception):
    """``__consumer_offsets`` cannot be read (missing, not authorized, unreachable)."""


@dataclass(frozen=True)
class OffsetCommitRecord:
    """One decoded offset commit: who committed what, and when (epoch seconds, broker clock)."""

    group: str
    topic: str
    partition: int
    offset: int
    committed_at: float


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode``: 31-based over UTF-16 code units, as a signed 32-bit int."""
    value = 0
    encoded = text.encode("utf-16-be")
    for (unit,) in struct.iter_unpack(">H", encoded):
        value = (31 * value + unit) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def coordinator_partition(group: str, partition_count: int) -> int:
    """The ``__consumer_offsets`` partition holding ``group``'s commits (Kafka's ``Utils.abs``)."""
    hashed = java_string_hash(group)
    positive = 0 if hashed == -(1 << 31) else abs(hashed)
    return positive % partition_count


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str:
        length = self.take(">h")
        return self._text(length)

    def compact_string(self) -> str:
        length = self.varint() - 1
        return self._text(length)

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def _text(self, length: int) -> str:
        if length < 0:
            return ""
        text = self.data[self.pos : self.pos + length].decode("utf-8")
        self.pos += length
        return text


def group_key_prefix(group: str) -> bytes:
    """The bytes every offset-commit key of ``group`` starts with after its 2-byte version."""
    encoded = group.encode("utf-8")
    return struct.pack(">h", len(encoded)) + encoded


def parse_offset_commit(key: bytes | None, value: bytes | None) -> OffsetCommitRecord | None:
    """Decode one ``__consumer_offsets`` record; ``None`` if it is not an offset commit.

    Raises ``ValueError`` for an offset-commit value of an unknown version or a truncated record.
    """
    if key is None or value is None or len(key) < 2:
        return None
    try:
        keys = _Reader(key)
        if keys.take(">h") not in (0, 1):
            return None
        group, topic, partition = keys.string(), keys.string(), keys.take(">i")
        values = _Reader(value)
        version = values.take(">h")
        if version not in _KNOWN_VALUE_VERSIONS:
            raise ValueError(f"offset commit value version {version} is not known")
        offset = values.take(">q")
        if version >= 3:
            values.take(">i")  # leader epoch
        if version >= 4:
            values.compact_string()
        else:
            values.string()
        committed_ms = values.take(">q")
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"truncated or malformed offset commit record: {exc}") from exc
    return OffsetCommitRecord(group, topic, partition, offset, committed_ms / 1000.0)


class CommitLogReader:
    """Reads one group's offset commits from ``__consumer_offsets``, incrementally.

    Not thread-safe. :meth:`read_new` returns only commits not returned before; the first call
    returns those of the last ``history_seconds``. :attr:`skipped` counts offset-commit records of
    an unknown format; :attr:`complete` is false when the last read stopped before the end. Owns
    one consumer (no group membership, no commits); call :meth:`close` when done.
    """

    def __init__(
        self,
        client_config: Mapping[str, str | int | float | bool],
        group: str,
        history_seconds: float,
        timeout: float = 15.0,
    ) -> None:
        self.group = group
        self.history_seconds = history_seconds
        self.timeout = timeout
        self.skipped = 0
        self.complete = True
        self._prefix = group_key_prefix(group)
        self._consumer = open_reader(
            client_config,
            "rewind-lag-commitlog",
            {
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            },
        )
        self._partition: int | None = None
        self._next_offset: int | None = None

    def close(self) -> None:
        self._consumer.close()

    def _locate(self) -> int:
        try:
            metadata = self._consumer.list_topics(OFFSETS_TOPIC, timeout=self.timeout)
        except KafkaException as exc:
            raise CommitLogUnavailable(f"cannot describe {OFFSETS_TOPIC}: {exc}") from exc
        topic = metadata.topics.get(OFFSETS_TOPIC)
        if topic is None or topic.error is not None or not topic.partitions:
            reason = topic.error if topic is not None and topic.error else "no partitions"
            raise CommitLogUnavailable(f"{OFFSETS_TOPIC} is not readable: {reason}")
        return coordinator_partition(self.group, len(topic.partitions))

    def _start_offset(self, partition: int) -> int:
        since_ms = int((time.time() - self.history_seconds) * 1000)
        try:
            found = self._consumer.offsets_for_times(
                [TopicPartition(OFFSETS_TOPIC, partition, since_ms)], timeout=self.timeout
            )[0]
        except KafkaException as exc:
            raise CommitLogUnavailable(f"cannot search {OFFSETS_TOPIC}[{partition}]: {exc}") from exc
        if found.error is not None:
            raise CommitLogUnavailable(f"cannot search {OFFSETS_TOPIC}[{partition}]: {found.error}")
        if found.offset >= 0:
            return int(found.offset)
        _low, high = watermark_offsets(self._consumer, found, self.timeout)
        return int(high)

    def read_new(self) -> list[OffsetCommitRecord]:
        """Commits of the group written since the previous call, oldest first.

        Stops at the end of the partition or after ``timeout`` seconds, whichever comes first;
        :attr:`complete` says which (a later call continues from where this one stopped). Raises
        :class:`CommitLogUnavailable` when the topic cannot be read.
        """
        if self._partition is None:
            self._partition = self._locate()
        if self._next_offset is None:
            self._next_offset = self._start_offset(self._partition)
        self._consumer.assign([TopicPartition(OFFSETS_TOPIC, self._partition, self._next_offset)])
        found: list[OffsetCommitRecord] = []
        self.complete = False
        deadline = time.monotonic() + self.timeout
        try:
            while not self.complete and time.monotonic() < deadline:
                for message in drain(self._consumer, 0.1):
                    if self._take(message, found):
                        self.complete = True
                        break
        finally:
            self._consumer.unassign()
        return found

    def _take(self, message: Message, found: list[OffsetCommitRecord]) -> bool:
        """Handle one consumed message; ``True`` at the end of the partition."""
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._next_offset = max(self._next_offset or 0, int(message.offset() or 0))
                return True
            raise CommitLogUnavailable(f"reading {OFFSETS_TOPIC}: {error}")
        offset = int(message.offset() or 0)
        if self._next_offset is not None and offset < self._next_offset:
            return False  # still queued from the previous read
        self._next_offset = offset + 1
        key = message.key()
        if key is None or key[2 : 2 + len(self._prefix)] != self._prefix:
            return False
        try:
            record = parse_offset_commit(key, message.value())
        except ValueError:
            self.skipped += 1
            return False
        if record is not None and record.group == self.group:
            found.append(record)
        return False
