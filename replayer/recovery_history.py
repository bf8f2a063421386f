"""The recovery history: one record per recovery or rebuild, why it ran, how long, and how it ended.

Pure functions build, classify, format and parse the records; the file I/O is in
:mod:`replayer.recovery_history_file`. A record is a plain JSON object (one line of
``$REWIND_HOME/recovery-history.jsonl``) with these fields:

``id``, ``kind`` (``recovery``, or ``rebuild`` when an operator asked for it), ``reason`` (one of
:class:`Reason`), ``detail`` (what the reason was decided on), ``requested_by`` (``api``, ``cli`` or
null), ``state_dir``, ``started_at`` / ``ended_at`` (ISO-8601 UTC), ``duration_seconds``,
``last_commit_at`` (the newest commit of the state before the recovery started, null for an empty
state), ``downtime_seconds`` (from that commit to the recovered state being live; null when the
state was empty or the recovery failed), ``attempts``, ``phases`` (``name``, ``status``,
``started_at``, ``seconds``), ``rejected_snapshots`` (``store``, ``reason``), ``outcome``
(``live`` or ``failed``), ``error`` (null when live) and ``digest`` (null when failed).

Guaranteed: :func:`parse_history` never raises on any text; a line that is not a whole record (a
line torn by a crash mid-append, or damaged) is skipped and named in the warnings it returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from replayer.recovery_tracker import STEPS, RecoveryTracker

MAX_RECORDS: Final = 100
"""How many records the history keeps: the newest ones."""


class Reason(StrEnum):
    """Why a recovery ran, from the most to the least specific (:func:`classify` picks the first that
    applies)."""

    OPERATOR_REQUEST = "operator_request"
    """``POST /rebuild`` or ``rewind recover`` run by hand."""
    CORRUPTION = "corruption"
    """The state held a damaged row (:class:`~rewind.ground.errors.DamagedState`), or the recovery
    passed over a snapshot that failed verification."""
    UNCLEAN_SHUTDOWN = "unclean_shutdown"
    """The last run of the service did not stop cleanly (SIGKILL, a crash, a power loss)."""
    CLEAN_RESTART = "clean_restart"
    """The service stopped cleanly and started again; recovery only checks and reloads the state."""


@dataclass(frozen=True)
class Cause:
    """Why a recovery starts, as known before it runs."""

    reason: Reason
    detail: str
    requested_by: str | None = None


REQUIRED_FIELDS: Final = frozenset(
    {"id", "kind", "reason", "started_at", "ended_at", "outcome", "phases", "rejected_snapshots"}
)


def classify(*, requested_by: str | None, clean_marker: bool, damage: str | None) -> Cause:
    """The cause of a recovery about to start: an operator's request first, then a damaged state
    seen by the last run, then whether that run stopped cleanly."""
    damaged = f"the state held a damaged row: {damage}" if damage else ""
    if requested_by is not None:
        how = "through the API (POST /rebuild)" if requested_by == "api" else "with `rewind recover`"
        detail = f"rebuild requested {how}" + (f"; {damaged}" if damaged else "")
        return Cause(Reason.OPERATOR_REQUEST, detail, requested_by)
    if damaged:
        return Cause(Reason.CORRUPTION, damaged)
    if clean_marker:
        return Cause(Reason.CLEAN_RESTART, "clean restart (the last stop left its clean-shutdown marker)")
    return Cause(Reason.UNCLEAN_SHUTDOWN, "unclean shutdown (no clean-shutdown marker)")


def final_reason(cause: Cause, rejected: list[dict[str, str]]) -> tuple[Reason, str]:
    """The reason to record once the recovery ran: a recovery that had to pass over corrupt snapshots
    is recorded as corruption unless an operator asked for it (the detail keeps the trigger)."""
    if not rejected:
        return cause.reason, cause.detail
    passed = f"{len(rejected)} corrupt snapshot{'s' if len(rejected) > 1 else ''} passed over"
    if cause.reason == Reason.OPERATOR_REQUEST:
        return cause.reason, f"{cause.detail}; {passed}"
    return Reason.CORRUPTION, f"{passed}; {cause.detail}"


def iso(epoch: float) -> str:
    """``epoch`` seconds as ISO-8601 UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_of(text: str) -> float | None:
    """The epoch seconds of an ISO-8601 time written by :func:`iso`; None when it is not one."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def tracker_phases(tracker: RecoveryTracker, wall_offset: float) -> list[dict[str, Any]]:
    """Each phase the tracker's last attempt reached, with its start (``wall_offset`` turns the
    tracker's monotonic times into epoch seconds) and duration. ``detect`` runs from the attempt's
    start until the restore step starts (or the attempt ends); a phase never reached is left out."""
    steps = tracker.steps
    began = tracker.started_at
    phases: list[dict[str, Any]] = []
    for name in STEPS:
        step = steps[name]
        if name == "detect":
            if began is None:
                continue
            end = steps["restore"].started_at or tracker.finished_at
            start, seconds = began, None if end is None else end - began
        else:
            if step.started_at is None:
                continue
            start = step.started_at
            seconds = step.seconds
            if seconds is None and tracker.finished_at is not None:
                seconds = tracker.finished_at - start
        phases.append(
            {
                "name": name,
                "status": step.status if name != "detect" or step.status != "pending" else "failed",
                "started_at": iso(start + wall_offset),
                "seconds": None if seconds is None else round(seconds, 4),
            }
        )
    return phases


def rejected_snapshots(stores: dict[str, list[str]]) -> list[dict[str, str]]:
    """The snapshots recovery passed over, by store, each with why it failed verification."""
    return [{"store": store, "reason": why} for store, reasons in sorted(stores.items()) for why in reasons]


def build_record(
    *,
    record_id: str,
    cause: Cause,
    state_dir: str,
    started: float,
    ended: float,
    last_commit_at: float | None,
    attempts: int,
    phases: list[dict[str, Any]],
    rejected: list[dict[str, str]],
    error: str | None,
    digest: str | None,
) -> dict[str, Any]:
    """One history record (see the module docstring); ``started``, ``ended`` and ``last_commit_at``
    are epoch seconds. No error means the recovered state went live at ``ended``."""
    reason, detail = final_reason(cause, rejected)
    live = error is None
    downtime = None if not live or last_commit_at is None else round(max(0.0, ended - last_commit_at), 3)
    return {
        "id": record_id,
        "kind": "rebuild" if cause.reason == Reason.OPERATOR_REQUEST else "recovery",
        "reason": reason.value,
        "detail": detail,
        "requested_by": cause.requested_by,
        "state_dir": state_dir,
        "started_at": iso(started),
        "ended_at": iso(ended),
        "duration_seconds": round(ended - started, 3),
        "last_commit_at": None if last_commit_at is None else iso(last_commit_at),
        "downtime_seconds": downtime,
        "attempts": attempts,
        "phases": phases,
        "rejected_snapshots": rejected,
        "outcome": "live" if live else "failed",
        "error": error,
        "digest": digest if live else None,
    }


def parse_history(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a history file's text, oldest first, and one warning per line skipped because
    it is not a whole record (torn by a crash mid-append, or damaged)."""
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not record.keys() >= REQUIRED_FIELDS:
            warnings.append(f"line {number} of the recovery history is damaged and was skipped")
            continue
        records.append(record)
    return records, warnings


def newest_first(records: list[dict[str, Any]], limit: int = MAX_RECORDS) -> list[dict[str, Any]]:
    """At most ``limit`` records, newest first."""
    return list(reversed(records))[: max(0, limit)]


def _seconds(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.3f}"


def format_table(records: list[dict[str, Any]]) -> str:
    """The records as a text table, one row each in the given order, then one indented line per phase
    and per rejected snapshot, and the error of a failed one."""
    if not records:
        return "no recovery recorded yet"
    header = ("STARTED", "KIND", "REASON", "OUTCOME", "DURATION_S", "DOWNTIME_S", "ATTEMPTS")
    rows = [
        (
            str(r.get("started_at", "")),
            str(r.get("kind", "")),
            str(r.get("reason", "")),
            str(r.get("outcome", "")),
            _seconds(r.get("duration_seconds")),
            _seconds(r.get("downtime_seconds")),
            str(r.get("attempts", "")),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    for record, row in zip(records, rows, strict=True):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        lines.append(f"    why: {record.get('detail', '')}")
        phases = record.get("phases") or []
        if phases:
            lines.append(
                "    phases: "
                + ", ".join(
                    f"{p.get('name')} {_seconds(p.get('seconds'))}s ({p.get('status')})" for p in phases
                )
            )
        for rejected in record.get("rejected_snapshots") or []:
            lines.append(f"    rejected snapshot ({rejected.get('store')}): {rejected.get('reason')}")
        if record.get("error"):
            lines.append(f"    error: {record['error']}")
    return "\n".join(lines)
