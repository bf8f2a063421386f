"""The helper process of a recovery, seen from ``rewind recover``: started, given its share, heard, dismissed.

When the tail to replay is large (``recovery.parallel_min_events``), part of the event partitions go
to a :mod:`replayer.recovery_helper` process, so replay and validation use two cores. The helper is
started first thing (its start-up overlaps the restore) and dismissed when it is not worth it. Once
restored here, its stores are moved into the helper's own staging directory and handed over.

Each side goes at its own pace; a step of the progress tracker ends when both finished it (its counts
are their sums), so the tracker still moves restore -> replay -> validate. If the helper fails in any
way, the failure is logged, never ignored, its staging directory is discarded and its partitions are
handed back to be recovered in this process: slower, same result.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from projector.crashpoints import crashpoint
from projector.metrics import ProjectorMetrics
from projector.runner import store_partition, store_source
from projector.store import CONFIG_DIR_NAME
from replayer.recovery_helper import HelperFailed, RecoveryHelper
from replayer.recovery_steps import StoreRecovery
from replayer.recovery_tracker import RecoveryTracker
from rewind.ground.errors import RewindError
from rewind.ground.offset_sampler import OffsetSampler
from rewind.ground.settings import Settings
from snapshotter.snapshot import SnapshotInvalid, list_snapshots, load_snapshot

log = logging.getLogger(__name__)

PHASES = ("restore", "replay", "validate")
HELPER_SHARE = 0.5
"""The helper's share of the tail: both sides start replaying once the restore is done."""


def start_helper(settings: Settings, root: Path) -> RecoveryHelper | None:
    """A helper started at once, so that its start-up overlaps finding out whether it is needed."""
    try:
        return RecoveryHelper.start(settings, root)
    except HelperFailed as exc:
        log.warning("recovery helper: %s; recovering every partition here", exc)
        return None


def helper_share(settings: Settings, names: list[str], admin: AdminClient) -> list[str]:
    """The event partitions' stores a helper should recover: :data:`HELPER_SHARE` of the tail, or none
    when the tail is under ``recovery.parallel_min_events`` (a second process costs more than it
    saves)."""
    threshold = int(settings["recovery.parallel_min_events"])
    events_stores = [name for name in names if name != CONFIG_DIR_NAME]
    if len(events_stores) < 2:
        return []
    tails = _tails(settings, events_stores, admin)
    if tails is None or sum(tails.values()) < threshold:
        return []
    share: list[str] = []
    helper_load = own_load = 0
    for name in sorted(events_stores, key=lambda n: (-tails[n], store_partition(n))):
        if helper_load / HELPER_SHARE < own_load / (1 - HELPER_SHARE):
            share.append(name)
            helper_load += tails[name]
        else:
            own_load += tails[name]
    return sorted(share, key=store_partition)


def _tails(settings: Settings, names: list[str], admin: AdminClient) -> dict[str, int] | None:
    """Events after each store's newest snapshot (by its manifest), or None if the log end offsets
    cannot be listed (then recovery runs in one process, and replay reports the problem)."""
    sources = {name: store_source(settings, name) for name in names}
    try:
        sampler = OffsetSampler(settings.client_config(), admin=admin)
        found, failed = sampler.log_offsets(sources.values())
    except RewindError:
        return None
    if failed:
        return None
    tails: dict[str, int] = {}
    for name, source in sources.items():
        start = 0
        for path in list_snapshots(settings.snapshot_dir, name)[:1]:
            with contextlib.suppress(SnapshotInvalid):  # an estimate; restore reports a bad snapshot
                start = load_snapshot(path).offset + 1
        tails[name] = max(0, found[source].end - start)
    return tails


class HelperCoordinator:
    """The two sides of one recovery, here and the helper, and the tracker's view of both.

    Recovery tells it when this side restored, progressed and finished each phase; it hands the
    helper its stores, takes in the helper's reports meanwhile, and ends a step of the tracker once
    both sides finished it. The report's phase times are the boundaries between those ends.
    """

    def __init__(
        self,
        tracker: RecoveryTracker,
        metrics: ProjectorMetrics | None,
        roots: tuple[Path, Path],
        names: list[str],
        helper: RecoveryHelper | None,
        helper_names: list[str],
    ) -> None:
        self.tracker, self.metrics = tracker, metrics
        self.staging, self.helper_root = roots
        self.names = names
        """Every store this recovery recovers, by name."""
        self.stores: dict[str, StoreRecovery] = {}
        self.roots: dict[str, Path] = {}
        """Where each recovered store is: this side's staging directory, or the helper's."""
        self.started = time.monotonic()
        self.phase_ends: dict[str, float] = {}
        self._ended: dict[str, dict[str, float]] = {phase: {} for phase in PHASES}
        self._done: dict[str, dict[str, int]] = {phase: {} for phase in PHASES}
        self._totals: dict[str, int] = {}
        self._phase = 0
        self.helper = helper
        self.helper_names = helper_names
        """The stores the helper recovers."""
        if helper is not None and not helper_names:
            helper.stop()  # not worth it for this recovery
            self.helper = None
        if self.helper is None:
            self.helper_names = []
        tracker.start_step("restore", total=len(names))

    @property
    def own_names(self) -> list[str]:
        """The stores this side replays and validates."""
        return [name for name in self.names if name not in self.helper_names]

    def restored(self, stores: dict[str, StoreRecovery]) -> None:
        """Every store is restored in the staging directory: hand the helper its own, and end the
        restore here (for both sides, as it was done here). ``stores`` is the recovery's record,
        which the helper's reports fill in."""
        self.stores = stores
        self.roots = dict.fromkeys(stores, self.staging)
        if self.helper is not None:
            self._hand_over()
        self._progress("restore", "here", len(self.names))
        self._finished("restore", "here")
        if self.helper_names:
            self._finished("restore", "helper")

    def progressed_here(self, phase: str, done: int, total: int | None = None) -> None:
        """This side's progress in ``phase``; what the helper reported meanwhile is taken in too."""
        self._progress(phase, "here", done, total)
        self._hear_helper(block=False)

    def finished_here(self, phase: str) -> None:
        self._finished(phase, "here")

    def wait_for_helper(self) -> list[str]:
        """Wait until the helper finished its share. Returns the stores left to recover here: all of
        its share when it failed, else none."""
        while self.helper is not None and not self.helper.finished:
            self._hear_helper(block=True)
        if self.helper_names and not (self.helper is not None and self.helper.finished):
            return list(self.helper_names)
        return []

    def recovered_here(self, redone: dict[str, StoreRecovery]) -> None:
        """The failed helper's share was recovered in this process (``redone``, in the staging
        directory): the helper's steps end with it."""
        names = self.helper_names
        self.roots |= dict.fromkeys(redone, self.staging)
        for phase in PHASES[1:]:
            self._progress(phase, "helper", len(names) if phase != "replay" else 0)
            self._finished(phase, "helper")
        self.helper_names = []

    def side_ends(self) -> dict[str, dict[str, float]]:
        """When each side finished each phase, in seconds from the restore's start."""
        sides: dict[str, dict[str, float]] = {}
        for phase, ends in self._ended.items():
            for side, at in ends.items():
                sides.setdefault(side, {})[phase] = at - self.started
        return sides

    def stop_helper(self) -> None:
        if self.helper is not None:
            self.helper.stop()

    def _hand_over(self) -> None:
        """Move the helper's restored stores into its staging directory and let it start."""
        assert self.helper is not None
        self.helper_root.mkdir()
        for name in self.helper_names:
            if (self.staging / name).exists():  # a partition without a snapshot has no store yet
                os.rename(self.staging / name, self.helper_root / name)
            self.roots[name] = self.helper_root
        try:
            self.helper.assign({name: self.stores[name].snapshot_offset for name in self.helper_names})
            crashpoint("recover-helper-started")
        except HelperFailed as exc:
            self._drop_helper(exc)

    def _hear_helper(self, block: bool) -> None:
        """Take in what the helper reported (waiting for one report if ``block``)."""
        while self.helper is not None:
            try:
                report = self.helper.next_report(self.stores, self.metrics, block)
            except HelperFailed as exc:
                self._drop_helper(exc)
                return
            if report is None:
                self._progress("replay", "helper", self.helper.replay_done, self.helper.replay_total)
                return
            kind, at = report
            phase = RecoveryHelper.PHASES[RecoveryHelper.STEPS.index(kind)]
            if phase == "validate":
                self._progress(phase, "helper", len(self.helper_names))
            self._finished(phase, "helper", at)
            if block:
                return

    def _drop_helper(self, failure: HelperFailed) -> None:
        """Stop a failed helper and discard its work; its partitions are recovered here."""
        log.warning("recovery helper failed (%s); recovering its partitions here", failure)
        assert self.helper is not None
        self.helper.stop()
        self.helper = None
        shutil.rmtree(self.helper_root, ignore_errors=True)
        self.roots |= dict.fromkeys(self.helper_names, self.staging)

    def _progress(self, phase: str, side: str, done: int, total: int | None = None) -> None:
        self._done[phase][side] = done
        if total is not None:
            self._totals[side] = max(total, done)
        if self._phase < len(PHASES) and PHASES[self._phase] == phase:
            self._show(phase)

    def _show(self, phase: str) -> None:
        done = sum(self._done[phase].values())
        if phase == "replay":
            self.tracker.advance(phase, done, sum(self._totals.values()))
        else:
            self.tracker.advance(phase, done)

    def _finished(self, phase: str, side: str, at: float | None = None) -> None:
        """``side`` finished ``phase``; end the tracker's steps both sides finished, in order."""
        self._ended[phase][side] = time.monotonic() if at is None else at
        sides = {"here", "helper"} if self.helper_names else {"here"}
        while self._phase < len(PHASES) and set(self._ended[PHASES[self._phase]]) >= sides:
            current = PHASES[self._phase]
            self.phase_ends[current] = max(self._ended[current].values())
            assert self.phase_ends[current] >= max(self.phase_ends.values()), "phases end in order"
            self._phase += 1
            if self._phase < len(PHASES):
                self.tracker.finish_step(current)
                upcoming = PHASES[self._phase]
                self.tracker.start_step(upcoming, total=len(self.names) if upcoming != "replay" else 0)
                self._show(upcoming)
