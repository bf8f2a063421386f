"""The lag status rules: observations of one partition in, one status out. Pure; no Kafka, no clock.

A partition is judged over a sliding window ``[now - window_seconds, now]`` from two kinds of
evidence:

* :class:`Sample` — what a lag evaluation saw at one moment: log start, log end and the committed
  offset (the next offset the consumer will read). The newest sample is the partition's present.
* :class:`Commit` — one offset commit the consumer made, with the time the broker recorded it. The
  newest commit *before* the window (the baseline) says where the consumer stood when the window
  opened.

There are no fixed lag thresholds: every status describes a behaviour, not a number. The statuses
are mutually exclusive except ``DATA_LOSS``; when several could apply the most severe one wins.
Severity, lowest first (:class:`Status` values):

``OK`` (0)
    None of the below.
``WARNING`` (1)
    The consumer is moving (its committed offset advanced across the window, never backwards) but
    lag never shrank between samples and ended higher than it started: it is falling behind. Needs
    at least two samples in the window, so a one-shot evaluation never reports it.
``REWOUND`` (2)
    A commit in the window (or a sample) moved the committed offset backwards: events are being
    processed again. Often deliberate (a replay), but someone should confirm that. Reported whatever
    the lag.
``STALLED`` (3)
    Lag > 0, the consumer committed within the window, every observation of its offset in the window
    (and the baseline) is the same value, its newest commit re-committed an offset already observed
    (an earlier commit or sample), and work was waiting when it did (a sample before that commit
    showed lag, or the first unconsumed message is older than it): it is alive and committing but
    not getting past one offset (a poison message, a stuck batch).
``STOPPED`` (4)
    Lag > 0, no commit within the window, and the lag is not brand new: the first unconsumed message
    is older than the window, so the consumer had a whole window to commit and did not. Nothing is
    consuming the partition.

The "work was waiting" conditions keep an idle consumer from being called STALLED or STOPPED in the
moment between a message arriving and its next commit. When the first unconsumed message's
timestamp is unknown, STOPPED is just "lag > 0 and no commit in the window", and STALLED accepts two
observations of the same offset as evidence that work was waiting.
``DATA_LOSS`` (5)
    The committed offset is below the log start offset: retention (or ``delete_records``) removed
    events the consumer never read. Nothing the consumer does can recover them.

A group's status is its worst partition's (:func:`group_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise


class Status(IntEnum):
    """A partition's (or group's) lag status; the value is its severity, higher is worse."""

    OK = 0
    WARNING = 1
    REWOUND = 2
    STALLED = 3
    STOPPED = 4
    DATA_LOSS = 5


@dataclass(frozen=True)
class Sample:
    """One observation of a partition: offsets as seen at ``at`` (seconds since the epoch)."""

    at: float
    log_start: int
    log_end: int
    committed: int
    waiting_since: float | None = None
    """Timestamp (epoch seconds) of the first unconsumed message; ``None`` when lag is 0 or unknown."""

    @property
    def lag(self) -> int:
        """Messages between the committed offset and the log end; never negative."""
        return max(0, self.log_end - self.committed)


@dataclass(frozen=True)
class Commit:
    """One offset commit: the offset committed and when the broker recorded it (epoch seconds)."""

    at: float
    offset: int


def _window(
    samples: Sequence[Sample], commits: Sequence[Commit], now: float, window_seconds: float
) -> tuple[list[Sample], list[Commit], Commit | None]:
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    start = now - window_seconds
    in_window = sorted((s for s in samples if start <= s.at <= now), key=lambda s: s.at)
    if not in_window:
        raise ValueError("no sample inside the window: the newest sample must be at most `now`")
    ordered = sorted(commits, key=lambda c: c.at)
    recent = [c for c in ordered if c.at >= start]
    before = [c for c in ordered if c.at < start]
    return in_window, recent, before[-1] if before else None


def _decreases(offsets: Sequence[int]) -> bool:
    return any(later < earlier for earlier, later in pairwise(offsets))


def partition_status(
    samples: Sequence[Sample], commits: Sequence[Commit], *, now: float, window_seconds: float
) -> Status:
    """The status of one partition at ``now``, judged over the last ``window_seconds``.

    ``samples`` and ``commits`` may hold older entries; only the window (plus the newest commit
    before it, as baseline) is considered. Commits stamped after ``now`` (made while the evaluation
    ran, or a broker clock slightly ahead) count as inside the window. At least one sample must lie
    in the window; the newest is taken as the present. Raises ``ValueError`` on a non-positive
    window or no sample in it.
    """
    window, recent, baseline = _window(samples, commits, now, window_seconds)
    current = window[-1]
    waiting_since = current.waiting_since if current.lag > 0 else None
    if current.committed < current.log_start:
        return Status.DATA_LOSS
    lag_is_old = waiting_since is None or waiting_since < now - window_seconds
    if current.lag > 0 and not recent and lag_is_old:
        return Status.STOPPED

    commit_trail = ([baseline] if baseline else []) + recent
    sampled = [s.committed for s in window]
    if current.lag > 0 and recent:
        observed = {c.offset for c in commit_trail} | set(sampled)
        if len(observed) == 1 and _work_was_waiting(window, commit_trail, waiting_since):
            return Status.STALLED
    if _decreases([c.offset for c in commit_trail]) or _decreases(sampled):
        return Status.REWOUND
    if current.lag > 0 and len(window) >= 2:
        lags = [s.lag for s in window]
        moving = sampled[-1] > sampled[0]
        if moving and not _decreases(lags) and lags[-1] > lags[0]:
            return Status.WARNING
    return Status.OK


def _work_was_waiting(window: Sequence[Sample], trail: Sequence[Commit], waiting_since: float | None) -> bool:
    """Whether the newest commit (of an offset that never moved) re-committed an offset already
    seen, while a message waited at it: a single commit proves nothing, it may be the one that
    moved the offset there."""
    newest = trail[-1].at
    earlier_samples = [s for s in window if s.at < newest]
    if len(trail) < 2 and not earlier_samples:
        return False
    if waiting_since is not None and waiting_since < newest:
        return True
    if any(s.lag > 0 for s in earlier_samples):
        return True
    return waiting_since is None


def group_status(statuses: Iterable[Status]) -> Status:
    """The worst of the partitions' statuses; ``OK`` for a group with no partitions."""
    return max(statuses, default=Status.OK)


def consume_rate(
    samples: Sequence[Sample], commits: Sequence[Commit], *, now: float, window_seconds: float
) -> float | None:
    """Committed offsets per second over the window; ``None`` when it cannot be measured.

    Measured from where the consumer stood when the window opened (the baseline commit) or, failing
    that, from its oldest observation in the window, to the newest sample. ``None`` with fewer than
    two points in time, or across a rewind (a negative rate means nothing useful).
    """
    window, recent, baseline = _window(samples, commits, now, window_seconds)
    current = window[-1]
    if baseline is not None:
        start_at, start_offset = max(baseline.at, now - window_seconds), baseline.offset
    else:
        points = [(c.at, c.offset) for c in recent] + [(s.at, s.committed) for s in window]
        start_at, start_offset = min(points)
    elapsed = current.at - start_at
    moved = current.committed - start_offset
    if elapsed <= 0 or moved < 0:
        return None
    return moved / elapsed
