"""The recovery history on disk, and the recorder that writes one record per recovery or rebuild.

``$REWIND_HOME/recovery-history.jsonl`` holds one JSON record per line, oldest first
(:mod:`replayer.recovery_history` describes a record). Guarantees:

* A record is appended with one ``write`` and fsynced before :meth:`RecoveryRecorder.finish`
  returns; once the file holds :data:`~replayer.recovery_history.MAX_RECORDS` records, the next one
  rewrites it with the newest ones only (a temporary file, fsynced, renamed over it, the directory
  fsynced), so it is always whole.
* A crash mid-append leaves at most a torn last line: reading skips it with a warning, and the next
  append starts on a line of its own.
* Recording never fails a recovery: a history that cannot be written is logged and skipped.

``<state>/DAMAGED`` remembers that the service saw a damaged row (:func:`note_damage`), so the
recovery after it is recorded as corruption even across a restart; a recovery that goes live
removes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from projector.store import CONFIG_DIR_NAME, PartitionStore, fsync_directory, partition_of_dir_name
from replayer.recovery import RecoveryReport
from replayer.recovery_history import (
    MAX_RECORDS,
    Cause,
    build_record,
    classify,
    newest_first,
    parse_history,
    rejected_snapshots,
    tracker_phases,
)
from replayer.recovery_tracker import RecoveryTracker
from rewind.ground.errors import DamagedState
from rewind.ground.settings import Settings

log = logging.getLogger("rewind.recovery_history")

HISTORY_FILE_NAME: Final = "recovery-history.jsonl"
DAMAGE_MARKER: Final = "DAMAGED"


def history_path(settings: Settings) -> Path:
    """Where the history of ``settings``' home is kept."""
    return settings.home / HISTORY_FILE_NAME


def read_history(path: Path, limit: int = MAX_RECORDS) -> tuple[list[dict[str, Any]], list[str]]:
    """The newest ``limit`` records, newest first, and a warning per damaged line skipped (each also
    logged). A missing file is an empty history."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    records, warnings = parse_history(text)
    for warning in warnings:
        log.warning("%s (%s)", warning, path)
    return newest_first(records, limit), warnings


def append_record(path: Path, record: dict[str, Any], keep: int = MAX_RECORDS) -> None:
    """Add ``record`` to the history at ``path`` durably, keeping the newest ``keep`` records."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        existing = path.read_bytes()
    except FileNotFoundError:
        existing = b""
    records, _ = parse_history(existing.decode("utf-8", errors="replace"))
    if len(records) >= keep:
        kept = [json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records[-(keep - 1) :]]
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write("".join(kept) + line)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
        return
    torn = bool(existing) and not existing.endswith(b"\n")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, (b"\n" if torn else b"") + line.encode("utf-8"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    if not existing:
        fsync_directory(path.parent)


def last_commit_time(state_dir: Path) -> float | None:
    """The newest wall-clock commit time among the stores of ``state_dir``: when the last event was
    applied before recovery. None when no store holds one. A store that cannot be read is passed
    over (recovery rebuilds it)."""
    newest: float | None = None
    if not state_dir.is_dir():
        return None
    for directory in state_dir.iterdir():
        if directory.name != CONFIG_DIR_NAME and partition_of_dir_name(directory.name) is None:
            continue
        try:
            with PartitionStore(directory, (), readonly=True) as store:
                committed = store.committed_at()
        except Exception as exc:  # a damaged or half-written store: it has no trustworthy time
            log.info("no last commit time from %s: %s", directory, exc)
            continue
        if committed is not None and (newest is None or committed > newest):
            newest = committed
    return newest


def note_damage(state_dir: Path, error: BaseException) -> None:
    """Remember that ``error`` (when a :class:`DamagedState`) was seen in the state at ``state_dir``,
    so the next recovery is recorded as corruption."""
    if not isinstance(error, DamagedState):
        return
    with contextlib.suppress(OSError):
        (state_dir / DAMAGE_MARKER).write_text(error.damage + "\n", encoding="utf-8")


def noted_damage(state_dir: Path) -> str | None:
    """The damage :func:`note_damage` remembered for ``state_dir``, if any."""
    try:
        return (state_dir / DAMAGE_MARKER).read_text(encoding="utf-8").strip() or "a damaged row"
    except OSError:
        return None


class RecoveryRecorder:
    """Records one recovery (all its attempts) in the history: create it before the first attempt,
    call :meth:`finish` once it went live or was given up."""

    def __init__(
        self,
        settings: Settings,
        cause: Cause,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``on_record`` is called with each record written (the service's metrics)."""
        self._settings = settings
        self.cause = cause
        self._on_record = on_record
        self.started = time.time()
        self.last_commit_at = last_commit_time(settings.state_dir)
        self.attempts = 0

    def attempt(self) -> None:
        """An attempt starts."""
        self.attempts += 1

    def finish(
        self,
        tracker: RecoveryTracker,
        report: RecoveryReport | None = None,
        error: BaseException | str | None = None,
    ) -> dict[str, Any] | None:
        """Append the record: live with ``report``, failed with ``error``. Returns it, or None when
        the history could not be written (logged)."""
        ended = time.time()
        wall_offset = ended - time.monotonic()
        stores = {} if report is None else {n: s.rejected_snapshots for n, s in report.stores.items()}
        record = build_record(
            record_id=uuid.uuid4().hex[:12],
            cause=self.cause,
            state_dir=str(self._settings.state_dir),
            started=self.started,
            ended=ended,
            last_commit_at=self.last_commit_at,
            attempts=max(1, self.attempts),
            phases=tracker_phases(tracker, wall_offset),
            rejected=rejected_snapshots(stores),
            error=None if error is None else str(error),
            digest=None if report is None else report.digest,
        )
        path = history_path(self._settings)
        try:
            append_record(path, record)
        except OSError as exc:
            log.error("the recovery history at %s could not be written: %s", path, exc)
            return None
        if error is None:
            with contextlib.suppress(OSError):
                (self._settings.state_dir / DAMAGE_MARKER).unlink(missing_ok=True)
        if self._on_record is not None:
            self._on_record(record)
        return record


def service_cause(settings: Settings, *, clean_marker: bool, rebuild: bool) -> Cause:
    """Why the service's recovery is about to run: a rebuild requested through the API, a damaged
    row its last run saw, or whether that run stopped cleanly."""
    return classify(
        requested_by="api" if rebuild else None,
        clean_marker=clean_marker,
        damage=noted_damage(settings.state_dir),
    )


def stored_records(settings: Settings) -> list[dict[str, Any]]:
    """Every record of the history, oldest first (to seed the service's metrics at start)."""
    return list(reversed(read_history(history_path(settings))[0]))
