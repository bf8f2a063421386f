"""Which snapshots to keep: the newest few, plus a thinned history (one per hour, then one per day).

A pure function of the snapshots' (offset, creation time) and the policy, so pruning is predictable
and testable. The newest snapshot is always kept, whatever the policy says.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rewind.ground.settings import Settings
from snapshotter.snapshot import SnapshotInvalid, list_snapshots, load_snapshot, snapshot_name

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the last ``keep_last``; beyond them the newest of each of the last ``keep_hourly`` hours and
    of each of the last ``keep_daily`` days."""

    keep_last: int = 5
    keep_hourly: int = 24
    keep_daily: int = 7

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            keep_last=int(settings["snapshots.keep_last"]),
            keep_hourly=int(settings["snapshots.keep_hourly"]),
            keep_daily=int(settings["snapshots.keep_daily"]),
        )


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


def prune(root: Path, policy: RetentionPolicy, dry_run: bool = False, now: float | None = None) -> list[str]:
    """Delete every snapshot under ``root`` the policy no longer keeps; return their paths.

    Snapshots whose manifest cannot be read are left alone (`rewind snapshots verify` reports them).
    """
    deleted: list[str] = []
    stores = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for store in stores:
        dated = []
        for path in list_snapshots(root, store):
            try:
                manifest = load_snapshot(path).manifest
            except SnapshotInvalid:
                continue
            dated.append((manifest.offset, manifest.created_at))
        keep = snapshots_to_keep(dated, policy, time.time() if now is None else now)
        for offset, _created in dated:
            if offset not in keep:
                path = root / store / snapshot_name(offset)
                deleted.append(str(path))
                if not dry_run:
                    shutil.rmtree(path)
    return deleted
