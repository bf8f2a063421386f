"""Reconciliation inside the service: ``POST /reconcile``, the drop folder, its metrics, and the
``recovery.require_reconciliation`` gate of ``/ready``.

Statements are read only from the drop folder (``reconcile.drop_dir``, default
``$REWIND_HOME/reconcile``): the API takes file names, never paths, so a caller cannot make the
service read anything else, and the request carries no body. Guarantees:

- One reconciliation runs at a time; a second request meanwhile is refused (409), never queued.
- ``rewind_reconciliation_breaks{kind}`` holds the breaks of the last reconciliation that finished,
  every kind present from the start (0); a failed run leaves them and counts
  ``rewind_reconciliation_failures_total``.
- With ``recovery.require_reconciliation``, the ``reconciliation`` check fails from each recovery
  until a reconciliation that started after it finds no breaks.
- :meth:`Reconciler.last_report` is the last reconciliation that finished (asked through the API or
  by the drop folder's tick): its report without each break's events, at most
  :data:`LAST_BREAKS_KEPT` breaks (``breaks_by_kind`` stays exact), and when it started and finished.
- :func:`statements` lists the drop folder's statement files by name: what ``POST /reconcile`` takes.
- The drop folder's newest positions statement (``positions*.csv`` or ``.json``, with
  ``balances*`` and ``orders*`` files of the same suffix beside it) is reconciled every
  ``reconcile.every_seconds``, once per distinct content.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge

from replayer.reconcile_report import ReconcileReport, reconcile_files
from replayer.reconcile_state import LiveRows
from replayer.reconciliation import BREAK_KINDS
from replayer.statement import BALANCES, KINDS, ORDERS, POSITIONS
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings

SUFFIXES: Final = (".csv", ".json")
LAST_BREAKS_KEPT: Final = 500
"""Breaks the last report keeps for ``GET /reconcile``; the counts by kind are always exact."""


class StatementNotFound(RewindError):
    """A statement name that is not a file of the drop folder (the API answers 400)."""

    def __init__(self, parameter: str, what: str, fix: str) -> None:
        super().__init__(what, fix)
        self.parameter = parameter


class ReconciliationBusy(RewindError):
    """A reconciliation is already running."""


def drop_dir(settings: Settings) -> Path:
    """``reconcile.drop_dir``, or ``$REWIND_HOME/reconcile``."""
    return Path(str(settings["reconcile.drop_dir"]) or settings.home / "reconcile").expanduser()


def statement_file(folder: Path, kind: str, name: str) -> Path:
    """The file ``name`` of the drop folder; anything but a plain existing file name is refused."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise StatementNotFound(
            kind, f"{kind} must be a file name in the drop folder, got {name!r}", "give the name only"
        )
    path = folder / name
    if Path(name).suffix.lower() not in SUFFIXES or not path.is_file():
        raise StatementNotFound(
            kind,
            f"{kind}: no statement {name!r} in the drop folder {folder}",
            f"put the .csv or .json file in {folder} (reconcile.drop_dir) and give its name",
        )
    return path


def statements(folder: Path) -> list[dict[str, Any]]:
    """The statement files of the drop folder (``.csv`` or ``.json``, not hidden), newest first:
    ``name``, ``kind`` (``positions``, ``balances`` or ``orders`` when the name starts with it, else
    None), ``bytes`` and ``modified_at`` (epoch seconds). An absent folder has none."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix.lower() not in SUFFIXES or not path.is_file():
            continue
        stat = path.stat()
        kind = next((k for k in (POSITIONS, BALANCES, ORDERS) if path.name.startswith(k)), None)
        found.append({"name": path.name, "kind": kind, "bytes": stat.st_size, "modified_at": stat.st_mtime})
    return sorted(found, key=lambda row: (-row["modified_at"], row["name"]))


def report_summary(report: dict[str, Any], started_at: float, finished_at: float) -> dict[str, Any]:
    """``report`` (:meth:`ReconcileReport.as_dict`) as ``GET /reconcile`` shows it: the breaks
    without their events, at most :data:`LAST_BREAKS_KEPT`, with ``breaks_total`` exact."""
    breaks = report["breaks"]
    kept = [{k: v for k, v in item.items() if k != "last_events"} for item in breaks[:LAST_BREAKS_KEPT]]
    return report | {
        "breaks": kept,
        "breaks_total": len(breaks),
        "started_at": started_at,
        "finished_at": finished_at,
    }


def newest_statement(folder: Path) -> dict[str, Path] | None:
    """The newest ``positions*`` file of ``folder`` (by modification time, then name) and the
    ``balances*`` / ``orders*`` files with the same rest of the name, when present."""
    if not folder.is_dir():
        return None
    candidates = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.startswith(POSITIONS) and p.suffix.lower() in SUFFIXES
    ]
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name))
    rest = newest.name.removeprefix(POSITIONS)
    files = {POSITIONS: newest}
    for kind in (BALANCES, ORDERS):
        companion = folder / (kind + rest)
        if companion.is_file():
            files[kind] = companion
    return files


def _content_key(files: Mapping[str, Path]) -> str:
    digest = hashlib.sha256()
    for kind in KINDS:
        path = files.get(kind)
        if path is not None:
            digest.update(kind.encode() + b"\x00" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class ReconciliationMetrics:
    """The reconciliation series on ``registry`` (docs/metrics.md)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.breaks = Gauge(
            "rewind_reconciliation_breaks",
            "Breaks the last finished reconciliation found, by kind.",
            ["kind"],
            registry=registry,
        )
        for kind in BREAK_KINDS:
            self.breaks.labels(kind=kind).set(0)
        self.last_run = Gauge(
            "rewind_reconciliation_last_run_timestamp_seconds",
            "When the last reconciliation finished (0: none yet), epoch seconds.",
            registry=registry,
        )
        self.failures = Counter(
            "rewind_reconciliation_failures_total",
            "Reconciliations that could not finish (a bad statement, the brokers, the state).",
            registry=registry,
        )

    def observe(self, counts: Mapping[str, int], finished_at: float) -> None:
        for kind, count in counts.items():
            self.breaks.labels(kind=kind).set(count)
        self.last_run.set(finished_at)


class Reconciler:
    """The service's reconciliations: runs them one at a time, keeps the last outcome and the
    metrics, and judges the ``reconciliation`` check."""

    def __init__(self, settings: Settings, registry: CollectorRegistry, live: LiveRows) -> None:
        self._settings = settings
        self._live = live
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._recovered_at: float | None = None
        self._clean_at: float | None = None
        self._last: dict[str, Any] | None = None
        self._last_report: dict[str, Any] | None = None
        self._last_key: str | None = None
        self.metrics = ReconciliationMetrics(registry)

    @property
    def required(self) -> bool:
        return bool(self._settings["recovery.require_reconciliation"])

    def recovered(self) -> None:
        """A recovery went live: with ``recovery.require_reconciliation``, ready waits for a clean run."""
        with self._state_lock:
            self._recovered_at = time.monotonic()

    def check(self) -> dict[str, Any]:
        """The ``reconciliation`` check: ok once a clean reconciliation started after the last recovery."""
        with self._state_lock:
            recovered_at, clean_at, last = self._recovered_at, self._clean_at, self._last
        ok = recovered_at is None or (clean_at is not None and clean_at >= recovered_at)
        check: dict[str, Any] = {"ok": ok, "required": True, "last": last}
        if not ok:
            check["error"] = (
                "no clean reconciliation since the last recovery (recovery.require_reconciliation)"
            )
            check["fix"] = (
                "reconcile with the external statement: POST /reconcile?positions=FILE (the file in "
                "reconcile.drop_dir), fix the breaks it reports (`rewind reconcile --propose`, then "
                "--apply), and reconcile again"
            )
        return check

    def run(self, files: Mapping[str, Path], as_of: str | None = None) -> ReconcileReport:
        """Reconcile ``files`` now (refused while another reconciliation runs)."""
        if not self._lock.acquire(blocking=False):
            raise ReconciliationBusy("a reconciliation is already running", "retry when it has finished")
        try:
            started = time.monotonic()
            started_at = time.time()
            try:
                report = reconcile_files(self._settings, files, as_of, live=self._live)
            except Exception:
                self.metrics.failures.inc()
                raise
            counts = report.outcome.counts()
            self.metrics.observe(counts, time.time())
            finished_at = time.time()
            summary = {
                "statement": report.statement.name,
                "checksum": report.statement.checksum,
                "clean": report.outcome.clean,
                "breaks_by_kind": counts,
                "finished_at": finished_at,
            }
            last_report = report_summary(report.as_dict(), started_at, finished_at)
            with self._state_lock:
                self._last = summary
                self._last_report = last_report
                if report.outcome.clean:
                    self._clean_at = started
            return report
        finally:
            self._lock.release()

    def last_report(self) -> dict[str, Any] | None:
        """The last finished reconciliation (:func:`report_summary`), or None before the first."""
        with self._state_lock:
            return self._last_report

    def run_named(self, names: Mapping[str, str], as_of: str | None = None) -> ReconcileReport:
        """Reconcile the drop folder's files ``names`` (kind -> file name)."""
        if POSITIONS not in names:
            raise StatementNotFound(
                POSITIONS, "positions is required: the positions statement's file name", "add ?positions=FILE"
            )
        folder = drop_dir(self._settings)
        return self.run({kind: statement_file(folder, kind, name) for kind, name in names.items()}, as_of)

    def tick(self) -> ReconcileReport | None:
        """Reconcile the drop folder's newest statement if its content was not reconciled yet."""
        files = newest_statement(drop_dir(self._settings))
        if files is None:
            return None
        key = _content_key(files)
        if key == self._last_key:
            return None
        self._last_key = key  # a statement that fails is reported once, not at every tick
        return self.run(files)
