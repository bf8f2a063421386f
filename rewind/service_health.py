"""The checks ``/health`` reports beside the broker's: the projector, free disk space, the age of the
newest snapshot and the recovery.

Each check is a document ``{"ok": bool, ...details}`` with ``error`` and ``fix`` when it fails. The
functions here only judge what they are given (no I/O but :func:`disk_check`'s ``statvfs``), so the
service can gather the inputs on its own threads and answer ``/health`` on the API's event loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MIB = 1 << 20


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists: the file system it is (or will be) on."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_check(directories: Mapping[str, Path], min_free_mb: int) -> dict[str, Any]:
    """Free space of each named directory's file system (a directory not made yet: its nearest
    existing ancestor's); fails when one has less than ``min_free_mb`` MiB free for rewind's user, or
    cannot be measured. The error names every such directory."""
    found: dict[str, Any] = {}
    short: list[str] = []
    for name, directory in directories.items():
        try:
            stat = os.statvfs(_existing(directory))
        except OSError as exc:
            found[name] = {"path": str(directory), "error": exc.strerror or str(exc)}
            short.append(
                f"{name} directory {directory}: cannot measure its free space ({exc.strerror or exc})"
            )
            continue
        free_mb = stat.f_bavail * stat.f_frsize // MIB
        found[name] = {"path": str(directory), "free_mb": free_mb}
        if free_mb < min_free_mb:
            short.append(f"{name} directory {directory}: {free_mb} MiB free")
    check: dict[str, Any] = {"ok": not short, "min_free_mb": min_free_mb, "directories": found}
    if short:
        check["error"] = f"less free space than health.min_free_mb={min_free_mb} MiB: " + "; ".join(short)
        check["fix"] = (
            "free space on those file systems (`rewind snapshots prune` removes old snapshots) or give "
            "them more; a full disk stops the projector and the snapshots"
        )
    return check


def snapshot_age_check(
    newest_at: float | None, every_seconds: int, factor: int, up_seconds: float, now: float
) -> dict[str, Any]:
    """Whether a snapshot was taken within ``factor`` times the cadence (``snapshots.every_seconds``).

    ``newest_at`` is the epoch time of the newest snapshot (or of the last snapshot run that found
    nothing to copy), None when there is none. Without one, the check fails only once the service
    has been up longer than the bound; with the time cadence off (0) it always passes."""
    if every_seconds <= 0:
        return {"ok": True, "detail": "snapshots.every_seconds is 0: no time cadence to judge"}
    bound = float(every_seconds * factor)
    age = None if newest_at is None else max(0.0, now - newest_at)
    check: dict[str, Any] = {"ok": True, "newest_age_seconds": age, "max_age_seconds": bound}
    if age is not None and age <= bound:
        return check
    if age is None and up_seconds <= bound:
        check["detail"] = "no snapshot yet; the service is younger than the bound"
        return check
    check["ok"] = False
    what = "no snapshot was taken" if age is None else f"the newest snapshot is {age:.0f} s old"
    check["error"] = (
        f"{what}, over {factor} x snapshots.every_seconds={every_seconds} s "
        "(health.snapshot_age_factor); a recovery would replay more of the log"
    )
    check["fix"] = (
        "look for 'scheduled snapshot failed' in the service log (a full disk, the snapshot "
        "directory's permissions), fix it, then POST /snapshots or `rewind snapshot`"
    )
    return check


def recovery_check(status: Mapping[str, Any]) -> dict[str, Any]:
    """Fails while the recovery is RECOVERY_FAILED, with its error (and whether it is retried)."""
    state = str(status.get("state"))
    check: dict[str, Any] = {"ok": state != "RECOVERY_FAILED", "state": state}
    if not check["ok"]:
        check["error"] = f"the recovery failed: {status.get('error')}"
        check["retrying"] = bool(status.get("retrying"))
        check["fix"] = (
            "it is retried by itself when the failure can pass; otherwise see /recovery/status and "
            "the runbook's 'Recovery errors'"
        )
    return check


class ProgressWatch:
    """Whether the projector runs, and advances while there is lag.

    Each call of :meth:`check` compares the projector's position (when each store last committed)
    with the one seen before; a change means it moved. The check fails when the last lag evaluation
    saw lag and the projector has not moved for ``stall_seconds``, or when the state is recovered
    but no projector has run for ``stall_seconds`` (a projector started again after a passing
    failure within that time is not reported). Used from one thread at a time."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self._position: object = None
        self._moved_at = 0.0
        self._down_since: float | None = None

    def check(
        self,
        *,
        recovered: bool,
        running: bool,
        position: object,
        lag_messages: int | None,
        now: float,
    ) -> dict[str, Any]:
        """``position`` is anything that changes when the projector commits a batch;
        ``lag_messages`` is the last lag evaluation's total (None before the first); ``now`` is
        monotonic seconds."""
        if not running:
            self._position = None
            if not recovered:
                self._down_since = None
                return {"ok": True, "running": False, "detail": "the state is being recovered"}
            self._down_since = now if self._down_since is None else self._down_since
            down = now - self._down_since
            if down <= self.stall_seconds:
                return {"ok": True, "running": False, "detail": "starting"}
            return {
                "ok": False,
                "running": False,
                "error": f"the projector has not run for {down:.0f} s "
                f"(health.stall_seconds={self.stall_seconds:g})",
                "fix": "the service log says why it stopped ('the projector stopped ...'); it is started "
                "again by itself after a failure that can pass",
            }
        self._down_since = None
        if position != self._position:
            self._position = position
            self._moved_at = now
        still = now - self._moved_at
        check: dict[str, Any] = {
            "ok": True,
            "running": True,
            "lag_messages": lag_messages,
            "seconds_since_progress": round(still, 3),
        }
        if lag_messages and still > self.stall_seconds:
            check["ok"] = False
            check["error"] = (
                f"the projector has lag ({lag_messages} messages at the last evaluation) and applied "
                f"nothing for {still:.0f} s (health.stall_seconds={self.stall_seconds:g})"
            )
            check["fix"] = (
                "see /lag and the service log: a batch stuck on its write (a full disk, another "
                "process holding the store's LMDB write lock) or brokers that do not answer"
            )
        return check
