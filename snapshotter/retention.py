"""Which snapshots to keep: the newest few, plus a thinned history (one per hour, then one per day).

A pure function of the snapshots' (offset, creation time) and the policy, so pruning is predictable
and testable. The newest snapshot is always kept, whatever the policy says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the last ``keep_last``; beyond them the newest of each of the last ``keep_hourly`` hours and
    of each of the last ``keep_daily`` days."""

    keep_last: int = 5
    keep_hourly: int = 24
    keep_daily: int = 7


def snapshots_to_keep(
    snapshots: Sequence[tuple[int, float]], policy: RetentionPolicy, now: float
) -> set[int]:
    """The offsets to keep among ``snapshots`` (offset, created_at); the rest may be deleted."""
    newest_first = sorted(snapshots, key=lambda s: s[0], reverse=True)
    keep = {offset for offset, _ in newest_first[: max(1, policy.keep_last)]}
    hours: set[int] = set()
    days: set[int] = set()
    for offset, created_at in newest_first:
        age = max(0.0, now - created_at)
        hour, day = int(age // HOUR), int(age // DAY)
        if hour < policy.keep_hourly and hour not in hours:
            hours.add(hour)
            keep.add(offset)
        if day < policy.keep_daily and day not in days:
            days.add(day)
            keep.add(offset)
    return keep
