"""One reconciliation run, from statement files to a report: what ``rewind reconcile``, ``POST
/reconcile`` and the service's drop folder share.

:func:`reconcile_files` reads the statement, takes rewind's side at the chosen moment
(:mod:`replayer.reconcile_state`), compares (:func:`replayer.reconciliation.compare`, pure) and
attaches to each break the events that last touched its entity. The report renders as JSON
(:meth:`ReconcileReport.as_dict`) and as CSV rows for operations (:func:`csv_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from replayer.history import HistoryRow
from replayer.reconcile_state import LAST_EVENTS, EntityKey, LiveRows, RewindSide, last_events, rewind_side
from replayer.reconciliation import Reconciliation, Tolerances, compare, in_scope, statement_accounts
from replayer.statement import Statement, read_statement
from replayer.timetravel import parse_time
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings

LIVE: Final = "live"
NOW: Final = "now"
CSV_COLUMNS: Final = (
    "kind",
    "entity",
    "account",
    "key",
    "statement",
    "rewind",
    "difference",
    "tolerance",
    "statement_line",
    "last_event_type",
    "last_event_id",
    "last_event_logged_at",
    "last_event_partition",
    "last_event_offset",
)


@dataclass
class ReconcileReport:
    """A statement, rewind's side, the outcome and the last events per break's entity."""

    statement: Statement
    side: RewindSide
    moment: datetime | None
    tolerances: Tolerances
    outcome: Reconciliation
    events: Mapping[EntityKey, list[HistoryRow]] = field(default_factory=dict)

    @property
    def as_of_text(self) -> str | None:
        return None if self.moment is None else self.moment.isoformat()

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.outcome.clean,
            "statement": self.statement.as_dict(),
            "compared_with": {
                "source": self.side.source,
                "as_of": self.as_of_text,
                "points": self.side.points,
            },
            "tolerances": self.tolerances.as_dict(),
            "compared": self.outcome.compared,
            "matches": self.outcome.matches,
            "breaks_by_kind": self.outcome.counts(),
            "breaks": [
                dict(
                    item.as_dict(),
                    last_events=[row.as_dict() for row in self.events.get(item.entity_key, [])],
                )
                for item in self.outcome.breaks
            ],
        }


def choose_moment(as_of: str | None, statement: Statement) -> datetime | None:
    """The moment to compare at: ``--as-of`` (a time, ``now`` = the log's end, ``live`` = the live
    state), else the statement's own time, else None (the live state)."""
    if as_of is not None:
        text = as_of.strip().lower()
        if text == LIVE:
            return None
        if text == NOW:
            return datetime.now().astimezone()
        return parse_time(as_of)
    return statement.as_of


def reconcile_files(
    settings: Settings,
    files: Mapping[str, Path],
    as_of: str | None = None,
    history: int = LAST_EVENTS,
    statement_accounts_only: bool = False,
    live: LiveRows | None = None,
) -> ReconcileReport:
    """Reconcile the statement in ``files`` (kind -> path) with rewind as of the chosen moment;
    ``history`` events are attached to each break (0: none). With ``statement_accounts_only``,
    rewind's rows of accounts the statement does not name are left out. ``live`` reads the live
    state (default: ``state.dir`` opened read-only for the call)."""
    if "positions" not in files:
        raise RewindError("a reconciliation needs a positions statement", "pass --positions FILE")
    statement = read_statement(settings, files)
    moment = choose_moment(as_of, statement)
    side = rewind_side(settings, moment, live)
    tolerances = Tolerances.from_settings(settings)
    if statement_accounts_only:
        side = RewindSide(in_scope(side.rows, statement_accounts(statement)), side.points, side.source)
    outcome = compare(statement, side.rows, tolerances)
    events = last_events(settings, outcome.breaks, side.points, history) if history and outcome.breaks else {}
    return ReconcileReport(statement, side, moment, tolerances, outcome, events)


def csv_rows(report: ReconcileReport) -> list[dict[str, object]]:
    """One row per break, with the last event that touched its entity (empty when none)."""
    rows: list[dict[str, object]] = []
    for item in report.outcome.breaks:
        history = report.events.get(item.entity_key, [])
        last = history[-1] if history else None
        rows.append(
            {
                "kind": item.kind,
                "entity": item.entity,
                "account": item.account or "",
                "key": item.key,
                "statement": item.statement or "",
                "rewind": item.rewind or "",
                "difference": item.difference or "",
                "tolerance": item.tolerance or "",
                "statement_line": "" if item.line is None else item.line,
                "last_event_type": "" if last is None else last.event_type,
                "last_event_id": "" if last is None else last.event_id,
                "last_event_logged_at": "" if last is None else last.as_dict()["logged_at"],
                "last_event_partition": "" if last is None else last.partition,
                "last_event_offset": "" if last is None else last.offset,
            }
        )
    return rows
