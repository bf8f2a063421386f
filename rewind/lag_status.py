"""The lag status rules: observations of one partition in, one status out. Pure; no Kafka, no clock.

A partition is judged over a sliding window ``[now - window_seconds, now]`` from two kinds of
evidence:

* :class:`Sample` — what a lag evaluation saw at one moment: log start, log end and the committed
  offset (the next offset the consumer will read). The newest sample is the partition's present.
* :class:`Commit` — one offset commit the consumer made, with the time the broker recorded it. The
  newest commit *before* the window (the baseline) says where the consumer stood when the window
  opened.

Every status describes what the consumer is doing and is stated only on evidence, never on an
artefact of when the samples happened to be taken. Two facts about that evidence shape the rules:

* **A sample brackets the consumer's true lag.** The consumer has consumed at least up to its
  committed offset, and at most up to the offset of any commit it makes later (its position only
  moves forward between rewinds). So at a sample the true lag lies between ``log_end - (the next
  commit's offset)`` and ``log_end - committed``. Between commits, the committed offset lags the
  consumer by up to one commit interval's consumption: that sawtooth is sampling, not behaviour.
* **A sample that saw the log end at or below the committed offset proves the first unconsumed
  message arrived after it.** A record's timestamp is only the producer's claim (a backfill with
  historical ``CreateTime``, MirrorMaker keeping source timestamps, a clock that runs behind); where
  a sample contradicts it, the sample wins.

There are no fixed lag thresholds. When several statuses could apply the most severe one wins.
Severity, lowest first (:class:`Status` values):

``OK`` (0)
    None of the below.
``WARNING`` (1)
    Lag > 0, the committed offset moved forward across the window (never backwards), and the lag
    grew beyond what sampling can explain: at some sample it was certainly higher than it could have
    been at an earlier one (the later sample's lower bound above the earlier one's upper bound), and
    it never certainly shrank. Needs two samples and a commit after the later of them, so a one-shot
    evaluation never reports it.
``REWOUND`` (2)
    A commit in the window (or a sample) moved the committed offset backwards: events are being
    processed again. Often deliberate (a replay), but someone should confirm that. Reported whatever
    the lag.
``STALLED`` (3)
    Lag > 0, the consumer committed within the window, every observation of its offset in the window
    (and the baseline) is the same value, its newest commit re-committed an offset already observed
    (an earlier commit or sample), and work was waiting when it did: it is alive and committing but
    not getting past one offset (a poison message, a stuck batch). Work was waiting if a sample
    before that commit showed lag; failing that, if the first unconsumed message's timestamp is
    older than the commit and no sample contradicts the timestamp; failing that (no usable
    timestamp), only if no sample in the window saw the consumer caught up at this offset.
``STOPPED`` (4)
    Lag > 0, no commit within the window (neither in the commits nor as a change between samples),
    and the consumer had a whole window to pick the first unconsumed message up: no sample in the
    window saw the log end at or below the committed offset (which would prove the message younger
    than the window), and its timestamp, if known, is older than the window.
``DATA_LOSS`` (5)
    The committed offset is below the log start offset: retention (or ``delete_records``) removed
    events the consumer never read. Nothing the consumer does can recover them.
``OFFSET_BEYOND_LOG_END`` (6)
    The committed offset is past the log end, now or at a sample of the window while the consumer
    has not moved since: the topic was deleted and re-created, or an unclean leader election
    truncated the log. The consumer's next fetch is out of range and ``auto.offset.reset`` moves it
    silently; once the log grows past its offset it resumes there, skipping the messages below it
    unread. The most urgent status: the skipped messages can still be saved by resetting the
    group's offsets before the consumer fetches, and every other figure computed from an offset
    that belongs to no log means nothing.

A group's status is its worst partition's (:func:`group_status`). :func:`explain` gives each
status's meaning and fix in words.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise
from typing import Final


class Status(IntEnum):
    """A partition's (or group's) lag status; the value is its severity, higher is worse."""

    OK = 0
    WARNING = 1
    REWOUND = 2
    STALLED = 3
    STOPPED = 4
    DATA_LOSS = 5
    OFFSET_BEYOND_LOG_END = 6


@dataclass(frozen=True)
class Explanation:
    """What a status says the consumer is doing, and what a person should do about it."""

    meaning: str
    fix: str | None


_EXPLANATIONS: Final[Mapping[Status, Explanation]] = {
    Status.OK: Explanation("keeping up", None),
    Status.WARNING: Explanation(
        "falling behind: the consumer moves, but its lag grew over the window by more than sampling "
        "can explain",
        "a burst drains by itself; lag that keeps growing needs faster processing or more consumers",
    ),
    Status.REWOUND: Explanation(
        "replaying: the committed offset moved backwards in the window",
        "confirm the offset reset was intended (a replay); if not, find who reset the group's offsets",
    ),
    Status.STALLED: Explanation(
        "stuck: the consumer keeps committing the same offset while messages wait there",
        "find why it cannot get past the message at its committed offset (a poison message, a batch "
        "that keeps failing) in its log, fix the cause and restart it",
    ),
    Status.STOPPED: Explanation(
        "stopped: messages have waited a whole window and the consumer has not committed",
        "check that the consumer is running and owns this partition; restart it if it hangs",
    ),
    Status.DATA_LOSS: Explanation(
        "events lost: retention deleted messages the consumer never read",
        "they cannot be read from Kafka again: restore the events from their source, and give the "
        "topic a retention longer than the consumer's longest outage",
    ),
    Status.OFFSET_BEYOND_LOG_END: Explanation(
        "the committed offset is past the end of the log (or was, within the window, and has not "
        "moved since): the topic was deleted and re-created, or an unclean leader election "
        "truncated it. The consumer's next fetch is out of range and "
        "auto.offset.reset moves it silently; once the log grows past its offset it resumes there "
        "and skips the messages below it unread",
        "find out what happened to the topic; then, with the consumer stopped, set the group's "
        "offset to where it should resume in the log as it is now (kafka-consumer-groups.sh "
        "--reset-offsets --to-earliest or --to-datetime ... --execute) and start it again",
    ),
}


def explain(status: Status) -> Explanation:
    """The meaning of ``status`` in words, and its fix (``None`` for ``OK``)."""
    return _EXPLANATIONS[status]


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
    position = current.committed
    if any(s.committed == position > s.log_end for s in window):
        return Status.OFFSET_BEYOND_LOG_END
    if position < current.log_start:
        return Status.DATA_LOSS
    waiting = current.lag > 0
    caught_up_at = max((s.at for s in window if s.log_end <= position), default=None)
    claimed = current.waiting_since if waiting else None
    if claimed is not None and caught_up_at is not None and claimed <= caught_up_at:
        claimed = None  # a sample saw the log end at the offset after this "arrival": not its age
    sampled = [s.committed for s in window]
    committed_in_window = bool(recent) or any(a != b for a, b in pairwise(sampled))
    lag_is_old = caught_up_at is None and (claimed is None or claimed < now - window_seconds)
    if waiting and not committed_in_window and lag_is_old:
        return Status.STOPPED

    commit_trail = ([baseline] if baseline else []) + recent
    if waiting and recent:
        observed = {c.offset for c in commit_trail} | set(sampled)
        if len(observed) == 1 and _work_was_waiting(window, commit_trail, claimed, caught_up_at):
            return Status.STALLED
    if _decreases([c.offset for c in commit_trail]) or _decreases(sampled):
        return Status.REWOUND
    if waiting and len(window) >= 2 and sampled[-1] > sampled[0] and _lag_grew(window, recent):
        return Status.WARNING
    return Status.OK


def _work_was_waiting(
    window: Sequence[Sample], trail: Sequence[Commit], claimed: float | None, caught_up_at: float | None
) -> bool:
    """Whether the newest commit (of an offset that never moved) re-committed an offset already
    seen, while a message waited at it: a single commit proves nothing, it may be the one that
    moved the offset there. ``claimed`` is the waiting message's timestamp where no sample
    contradicts it."""
    newest = trail[-1].at
    earlier_samples = [s for s in window if s.at < newest]
    if len(trail) < 2 and not earlier_samples:
        return False
    if any(s.lag > 0 for s in earlier_samples):
        return True
    if claimed is not None:
        return claimed < newest
    return caught_up_at is None


def _lag_bounds(window: Sequence[Sample], commits: Sequence[Commit]) -> list[tuple[int, int]]:
    """(lowest, highest) true lag possible at each sample, given that the consumer's position there
    is at least its committed offset and at most the offset of any later commit: one the commits
    list, or one proven by a later sample whose committed offset differs."""
    times = [c.at for c in commits]
    later_min: list[int | None] = [None] * (len(commits) + 1)
    for k in range(len(commits) - 1, -1, -1):
        following = later_min[k + 1]
        offset = commits[k].offset
        later_min[k] = offset if following is None else min(offset, following)
    next_change: list[int | None] = [None] * len(window)
    for i in range(len(window) - 2, -1, -1):
        after = window[i + 1].committed
        next_change[i] = after if after != window[i].committed else next_change[i + 1]
    bounds: list[tuple[int, int]] = []
    for sample, changed in zip(window, next_change, strict=True):
        ceilings = [c for c in (later_min[bisect_right(times, sample.at)], changed) if c is not None]
        low = max(0, sample.log_end - min(ceilings)) if ceilings else 0
        bounds.append((low, sample.lag))
    return bounds


def _lag_grew(window: Sequence[Sample], commits: Sequence[Commit]) -> bool:
    """The true lag certainly grew between two samples of the window and never certainly shrank."""
    grew = shrank = False
    highest_low: int | None = None
    lowest_high: int | None = None
    for low, high in _lag_bounds(window, commits):
        if lowest_high is not None and low > lowest_high:
            grew = True
        if highest_low is not None and high < highest_low:
            shrank = True
        lowest_high = high if lowest_high is None else min(lowest_high, high)
        highest_low = low if highest_low is None else max(highest_low, low)
    return grew and not shrank


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
