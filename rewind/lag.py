"""Consumer lag of a Kafka consumer group, or of any offsets mapping, with a Burrow-style status.

:class:`LagMonitor` is the entry point. Each evaluation measures, per partition: log start and end
offsets, the committed offset, lag in messages (``end - committed``, never negative; with the range
retention deleted unread when ``committed < start``), lag in seconds (now minus the timestamp of the
first unconsumed record, fetched from the log: measured, never extrapolated) and the consume rate
over the window. It adds the measurement to a per-partition sliding window and judges the window
with the pure rules of :mod:`rewind.lag_status`.

Commit timestamps (which separate STALLED from STOPPED) come from ``__consumer_offsets`` for a group
(:mod:`rewind.lag_commitlog`), or from the caller for an offsets mapping. When the commit log cannot
be read, commits are inferred from samples where the committed offset changed; a consumer that
re-commits the same offset then looks STOPPED rather than STALLED, and the report says so in
:attr:`LagReport.commit_timestamps`.

A monitor keeps its window between calls: evaluate the same group repeatedly (``--watch``, the
service's scrape loop) to get WARNING, which needs two samples and a commit after the later one, and
so that a sample which saw the consumer caught up can date a message whose record timestamp is older
than its arrival. Not thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rewind.ground.offset_sampler import (
    ClientConfig,
    FirstUnconsumed,
    LogOffsets,
    OffsetSampler,
    PartitionKey,
)
from rewind.ground.settings import Settings
from rewind.lag_commitlog import CommitLogReader, CommitLogUnavailable, OffsetCommitRecord
from rewind.lag_status import (
    Commit,
    Sample,
    Status,
    consume_rate,
    explain,
    group_status,
    partition_status,
)

__all__ = [
    "LagMonitor",
    "LagReport",
    "PartitionKey",
    "PartitionLag",
    "Status",
]

COMMIT_LOG = "commit-log"
CALLER = "caller"


@dataclass(frozen=True)
class PartitionLag:
    """One partition's lag figures and status at one evaluation.

    ``lag_seconds`` is ``0.0`` when ``lag_messages`` is 0, ``None`` when it could not be measured
    (no record readable at the position, or a record without timestamp). With ``DATA_LOSS`` the
    first unconsumed record no longer exists, so it is measured from the oldest retained record: a
    lower bound. ``lost_range`` is the half-open range ``[committed, log_start)`` retention removed.
    :attr:`reason` and :attr:`fix` put the status in words for a person.
    """

    topic: str
    partition: int
    log_start_offset: int
    log_end_offset: int
    committed_offset: int
    lag_messages: int
    lag_seconds: float | None
    first_unconsumed_offset: int | None
    first_unconsumed_timestamp: float | None
    consume_rate: float | None
    last_commit_at: float | None
    status: Status
    lost_range: tuple[int, int] | None = None

    @property
    def lost_messages(self) -> int:
        return 0 if self.lost_range is None else self.lost_range[1] - self.lost_range[0]

    @property
    def reason(self) -> str | None:
        """What the status says the consumer is doing, with this partition's figures where they
        matter; ``None`` when it is ``OK``."""
        if self.status is Status.OK:
            return None
        meaning = explain(self.status).meaning
        if self.status is Status.DATA_LOSS and self.lost_range is not None:
            first, end = self.lost_range
            return f"{meaning}: offsets {first}..{end - 1} ({self.lost_messages} messages)"
        if self.status is Status.OFFSET_BEYOND_LOG_END:
            return f"committed offset {self.committed_offset}, log end {self.log_end_offset}: {meaning}"
        return meaning

    @property
    def fix(self) -> str | None:
        """What to do about the status; ``None`` when it is ``OK``."""
        return explain(self.status).fix

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "log_start_offset": self.log_start_offset,
            "log_end_offset": self.log_end_offset,
            "committed_offset": self.committed_offset,
            "lag_messages": self.lag_messages,
            "lag_seconds": self.lag_seconds,
            "first_unconsumed_offset": self.first_unconsumed_offset,
            "first_unconsumed_timestamp": self.first_unconsumed_timestamp,
            "consume_rate": self.consume_rate,
            "last_commit_at": self.last_commit_at,
            "status": self.status.name,
            "severity": int(self.status),
            "lost_range": list(self.lost_range) if self.lost_range else None,
            "lost_messages": self.lost_messages,
            "reason": self.reason,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class LagReport:
    """One evaluation of a group (or offsets mapping): every partition, and the group's status.

    ``group`` is the consumer group, or the name given to :meth:`LagMonitor.evaluate_offsets`.
    ``commit_timestamps`` says where commit times came from: ``"commit-log"``, ``"caller"``, or
    ``"inferred from samples: <why>"``. ``unavailable`` maps ``topic[partition]`` to why it was
    left out (e.g. the topic was deleted). Times are epoch seconds.
    """

    group: str
    topic: str | None
    evaluated_at: float
    window_seconds: float
    partitions: tuple[PartitionLag, ...]
    commit_timestamps: str
    evaluation_seconds: float
    unavailable: Mapping[str, str] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return group_status(p.status for p in self.partitions)

    @property
    def total_lag_messages(self) -> int:
        return sum(p.lag_messages for p in self.partitions)

    @property
    def max_lag_seconds(self) -> float | None:
        measured = [p.lag_seconds for p in self.partitions if p.lag_seconds is not None]
        return max(measured, default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "topic": self.topic,
            "status": self.status.name,
            "severity": int(self.status),
            "evaluated_at": self.evaluated_at,
            "window_seconds": self.window_seconds,
            "evaluation_seconds": self.evaluation_seconds,
            "commit_timestamps": self.commit_timestamps,
            "total_lag_messages": self.total_lag_messages,
            "max_lag_seconds": self.max_lag_seconds,
            "partitions": [p.to_json() for p in self.partitions],
            "unavailable": dict(self.unavailable),
        }


@dataclass
class _History:
    samples: list[Sample] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)

    def add_commit(self, commit: Commit, restated: bool) -> None:
        """``restated``: the source hands over the same commit again on every call (a caller's stored
        commit time, until it commits anew), so an equal one is not a second commit. The commit log
        hands each record over once: there two equal commits are two (the same offset re-committed
        within one millisecond), and counting them is what tells STALLED from OK."""
        if restated and commit in self.commits:
            return
        self.commits.append(commit)
        self.commits.sort(key=lambda c: c.at)

    def trim(self, start: float) -> None:
        """Drop what no rule can look at any more: samples before ``start``, commits before the
        newest one before ``start`` (kept as baseline)."""
        self.samples = [s for s in self.samples if s.at >= start] or self.samples[-1:]
        older = [i for i, c in enumerate(self.commits) if c.at < start]
        if older:
            del self.commits[: older[-1]]


class LagMonitor:
    """Measures lag and keeps the sliding windows that lag statuses are judged on.

    One monitor can follow several groups and mappings; each keeps its own window. Owns Kafka
    clients: use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        client_config: ClientConfig,
        *,
        window_seconds: float,
        timeout: float = 15.0,
        read_commit_log: bool = True,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.window_seconds = float(window_seconds)
        self._config = dict(client_config)
        self._timeout = timeout
        self._read_commit_log = read_commit_log
        self._sampler = OffsetSampler(client_config, timeout=timeout)
        self._readers: dict[str, CommitLogReader] = {}
        self._histories: dict[tuple[str, str, int], _History] = {}

    @classmethod
    def from_settings(cls, settings: Settings, window_seconds: float | None = None) -> LagMonitor:
        """A monitor for the configured cluster; the window defaults to ``lag.window_seconds``."""
        window = window_seconds if window_seconds is not None else float(settings["lag.window_seconds"])
        return cls(settings.client_config(), window_seconds=window)

    def __enter__(self) -> LagMonitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._sampler.close()

    def evaluate_group(self, group: str, topic: str | None = None) -> LagReport:
        """Lag of a consumer group's committed offsets (all its topics, or only ``topic``).

        Partitions the group never committed are not listed; a group with no committed offsets
        gives a report without partitions. Raises :class:`rewind.ground.errors.RewindError` when Kafka
        cannot be reached.
        """
        started = time.perf_counter()
        at = time.time()
        committed = self._sampler.committed_offsets(group, topic)
        commits, source = self._group_commits(group)
        return self._evaluate(group, topic, at, started, committed, commits, source)

    def evaluate_offsets(
        self,
        offsets: Mapping[PartitionKey, int],
        *,
        name: str,
        commit_times: Mapping[PartitionKey, float] | None = None,
    ) -> LagReport:
        """Lag of a consumer that keeps its own offsets (the projector stores them in LMDB).

        ``offsets`` maps ``(topic, partition)`` to the next offset to consume; ``name`` labels the
        report and the window (use one name per consumer). ``commit_times`` gives, per partition,
        when that offset was stored (epoch seconds); without it, each call counts as a commit at
        call time, i.e. the caller vouches that the consumer is alive. Partitions not in
        ``offsets`` are not evaluated.
        """
        started = time.perf_counter()
        at = time.time()
        commits: dict[PartitionKey, list[Commit]] = {}
        for key, offset in offsets.items():
            when = commit_times.get(key, at) if commit_times is not None else at
            commits[key] = [Commit(at=when, offset=int(offset))]
        topics = {t for t, _ in offsets}
        topic = next(iter(topics)) if len(topics) == 1 else None
        return self._evaluate(name, topic, at, started, dict(offsets), commits, CALLER)

    def _group_commits(self, group: str) -> tuple[dict[PartitionKey, list[Commit]] | None, str]:
        if not self._read_commit_log:
            return None, "inferred from samples: commit log reading is off"
        reader = self._readers.get(group)
        if reader is None:
            reader = CommitLogReader(self._config, group, 2 * self.window_seconds, timeout=self._timeout)
            self._readers[group] = reader
        try:
            records = reader.read_new()
        except CommitLogUnavailable as exc:
            return None, f"inferred from samples: {exc}"
        return _by_partition(records), COMMIT_LOG if reader.complete else f"{COMMIT_LOG} (partial)"

    def _evaluate(
        self,
        group: str,
        topic: str | None,
        at: float,
        started: float,
        committed: Mapping[PartitionKey, int],
        commits: Mapping[PartitionKey, list[Commit]] | None,
        source: str,
    ) -> LagReport:
        logs, failed = self._sampler.log_offsets(sorted(committed))
        positions = {
            key: max(committed[key], log.start) for key, log in logs.items() if committed[key] < log.end
        }
        firsts = self._sampler.first_unconsumed(positions)
        for stale in [k for k in self._histories if k[0] == group and k[1:] not in logs]:
            del self._histories[stale]
        rows = [
            self._partition(group, key, at, committed[key], log, firsts.get(key), commits, source == CALLER)
            for key, log in sorted(logs.items())
        ]
        return LagReport(
            group=group,
            topic=topic,
            evaluated_at=at,
            window_seconds=self.window_seconds,
            partitions=tuple(rows),
            commit_timestamps=source,
            evaluation_seconds=time.perf_counter() - started,
            unavailable={f"{t}[{p}]": why for (t, p), why in sorted(failed.items())},
        )

    def _partition(
        self,
        group: str,
        key: PartitionKey,
        at: float,
        committed: int,
        log: LogOffsets,
        first: FirstUnconsumed | None,
        commits: Mapping[PartitionKey, list[Commit]] | None,
        restated: bool,
    ) -> PartitionLag:
        lag = max(0, log.end - committed)
        first_ts = first.timestamp if first is not None and lag > 0 else None
        if lag == 0:
            lag_seconds: float | None = 0.0
        else:
            lag_seconds = None if first_ts is None else max(0.0, at - first_ts)
        history = self._histories.setdefault((group, *key), _History())
        previous = history.samples[-1] if history.samples else None
        sample = Sample(at, log.start, log.end, committed, waiting_since=first_ts)
        history.samples.append(sample)
        if commits is not None:
            for commit in commits.get(key, []):
                history.add_commit(commit, restated)
        elif previous is not None and previous.committed != committed:
            history.add_commit(Commit(at=at, offset=committed), restated=False)
        history.trim(at - self.window_seconds)
        window = {"now": at, "window_seconds": self.window_seconds}
        return PartitionLag(
            topic=key[0],
            partition=key[1],
            log_start_offset=log.start,
            log_end_offset=log.end,
            committed_offset=committed,
            lag_messages=lag,
            lag_seconds=lag_seconds,
            first_unconsumed_offset=first.offset if first is not None and lag > 0 else None,
            first_unconsumed_timestamp=first_ts,
            consume_rate=consume_rate(history.samples, history.commits, **window),
            last_commit_at=history.commits[-1].at if history.commits else None,
            status=partition_status(history.samples, history.commits, **window),
            lost_range=(committed, log.start) if committed < log.start else None,
        )


def _by_partition(records: list[OffsetCommitRecord]) -> dict[PartitionKey, list[Commit]]:
    grouped: dict[PartitionKey, list[Commit]] = {}
    for record in records:
        grouped.setdefault((record.topic, record.partition), []).append(
            Commit(at=record.committed_at, offset=record.offset)
        )
    return grouped
