"""The child process that runs one console job: a time travel or an entity's history.

The console's jobs replay the log with the projector's own fold, which is CPU work the service's
projector must not wait behind, and they open the live state read-only, which LMDB forbids a second
time in the process that already has it open. So each job runs here, in a process of its own started
by :mod:`rewind.console_jobs` with the service's settings in its environment
(:meth:`rewind.ground.settings.Settings.child_environ`).

Protocol: ``python -m rewind.console_worker KIND REQUEST_JSON``. Every line written to stdout is one
JSON document: ``{"progress": {"phase", "done", "total"}}`` while it works, then exactly one
``{"result": ...}`` or ``{"error", "fix"}`` as the last line. Exit status 0 with a result, 1 with an
error.

Guarantees:

* ``timetravel`` runs what ``rewind replay`` runs (:func:`replayer.timetravel.build_state_at` on the
  points :func:`~replayer.timetravel.parse_points` or :func:`~replayer.timetravel.points_at` give),
  into the ``out`` directory it is handed, never into the live state; then reads that state as
  ``rewind state ... --state DIR --json`` does, and diffs it against the live state with
  :func:`replayer.diff.diff_states` (``rewind diff OUT LIVE --json``).
* ``history`` is ``rewind history --json``: :func:`replayer.history.history`'s document as is.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Final

from confluent_kafka.admin import AdminClient

from projector import queries, views
from projector.risk_view import risk_rows
from projector.runner import ProjectionProgress
from projector.state_directory import StateDirectory
from replayer.diff import diff_states
from replayer.entity_location import Target
from replayer.history import history
from replayer.timetravel import build_state_at, parse_points, parse_time, points_at, stores_with_config
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings, load_settings
from rewind.ground.topics import events_partition_count

__all__ = ["DIFF_ROWS", "KINDS", "main"]

DIFF_ROWS: Final = 100
"""Changed rows listed per table in a time travel's diff (counts stay exact), as ``rewind diff``."""
PROGRESS_SECONDS: Final = 0.2
"""Least time between two progress lines."""


class _Reporter:
    """Writes progress lines at most every :data:`PROGRESS_SECONDS`, and the last line."""

    def __init__(self) -> None:
        self._last = 0.0

    def progress(self, phase: str, done: int, total: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_SECONDS:
            self._last = now
            _line({"progress": {"phase": phase, "done": done, "total": total}})


def _line(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, allow_nan=False, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _text(request: dict[str, Any], name: str) -> str | None:
    value = request.get(name)
    return None if value is None else str(value)


def state_document(directory: StateDirectory) -> dict[str, Any]:
    """Positions, balances and risk of every account: what ``rewind state positions|balances|risk
    --json`` print for the same directory."""
    return {
        "positions": [views.to_dict(p) for p in queries.positions(directory, None, None)],
        "balances": [views.to_dict(b) for b in queries.balances(directory, None)],
        "risk": risk_rows(directory, None),
    }


def time_travel(settings: Settings, request: dict[str, Any], report: _Reporter) -> dict[str, Any]:
    """The state at ``request``'s point (``at`` an ISO-8601 time, or ``to`` ``P:OFFSET,...``), built
    in ``request["out"]``, and its diff from the live state."""
    out = Path(str(request["out"]))
    at, to = _text(request, "at"), _text(request, "to")
    count = events_partition_count(AdminClient(settings.client_config()), settings.events_topic)
    report.progress("points", 0, 1, force=True)
    if to is not None:
        points = parse_points(to, count)
    elif at is not None:
        points = points_at(settings, parse_time(at), stores_with_config(range(count)))
    else:
        raise RewindError("a time travel needs a time or offsets", "give at=TIME or to=P:OFFSET,...")
    total = max(1, sum(points.values()))
    report.progress("replay", 0, total, force=True)

    def on_batch(progress: ProjectionProgress) -> None:
        report.progress("replay", progress.applied + progress.dead_letters, total)

    stores = build_state_at(settings, out, points, on_batch=on_batch)
    report.progress("diff", 0, 1, force=True)
    with StateDirectory.open_readonly(out) as directory:
        state = state_document(directory)
    diff = diff_states(out, settings.state_dir, limit=DIFF_ROWS)
    report.progress("diff", 1, 1, force=True)
    return {
        "at": at,
        "to": to,
        "points": points,
        "stores": [
            {
                "store": s.name,
                "events": s.events,
                "snapshot_offset": s.snapshot_offset,
                "rejected_snapshots": list(s.rejected_snapshots),
            }
            for s in stores
        ],
        "state": state,
        "diff": diff.as_dict(),
    }


def entity_history(settings: Settings, request: dict[str, Any], report: _Reporter) -> dict[str, Any]:
    """``rewind history --json`` for ``request``'s ``order`` or ``account`` (and ``symbol``)."""
    target = Target(
        order_id=_text(request, "order"),
        account_id=_text(request, "account"),
        symbol=_text(request, "symbol"),
    )
    since, until = _text(request, "from"), _text(request, "to")

    def progress(phase: str, done: int, total: int) -> None:
        report.progress(phase, done, total)

    found = history(
        settings,
        target,
        None if since is None else parse_time(since),
        None if until is None else parse_time(until),
        progress=progress,
    )
    return found.as_dict()


KINDS: Final = {"timetravel": time_travel, "history": entity_history}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in KINDS:
        _line({"error": f"usage: python -m rewind.console_worker {{{'|'.join(KINDS)}}} REQUEST_JSON"})
        return 2
    report = _Reporter()
    try:
        request = json.loads(argv[1])
        result = KINDS[argv[0]](load_settings(), request, report)
    except RewindError as exc:
        _line({"error": exc.what, "fix": exc.fix})
        return 1
    except (ValueError, KeyError, TypeError) as exc:
        _line({"error": f"the request was refused: {exc}", "fix": "see /openapi.yaml for the parameters"})
        return 1
    _line({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
