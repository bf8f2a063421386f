"""Crash recovery: newest verified snapshot + replay of the log after it, validated, then swapped in.

Per partition: pick the newest snapshot whose manifest and checksum verify (reporting each corrupt
one passed over), restore it into a staging directory beside the live state, replay from its offset
+ 1 to the current log end with the projector itself (the same fold, never a copy), validate, and
only then swap each partition's store into the live directory. The live state is never modified
before validation succeeds, so a failed recovery (a data-loss gap, a broker outage) leaves it as it
was. Killed at any instant, a recovery can simply be run again: the staging directories are
discarded, and each live store is either the old or the new one, both consistent on their own.

Restoring starts first thing, beside the rest of the preparation (the helper's start, the partition
count, the tails), for every store that has a snapshot.

When the tail to replay is large (``recovery.parallel_min_events``), part of the event partitions go
to a :mod:`replayer.recovery_helper` process, so replay and validation use two cores: once restored,
their stores are moved into the helper's own staging directory. The helper is started first thing
(its start-up overlaps the restore) and dismissed when it is not worth it. Each side goes at its own
pace; a step of the progress tracker ends when both finished it. If the helper fails in any way, its
staging directory is discarded and its partitions are recovered here: slower, same result, and the
failure is logged, never ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from projector.crashpoints import crashpoint
from projector.metrics import ProjectorMetrics
from projector.runner import CONFIG_PARTITION
from projector.state_directory import StateDirectory, combined_digest
from projector.store import fsync_directory, partition_of_dir_name
from replayer.progress import RecoveryTracker
from replayer.recovery_helper import HelperFailed, RecoveryHelper
from replayer.recovery_steps import (
    StoreRecovery,
    replay_stores,
    restore_stores,
    store_name,
    validate_stores,
)
from rewind.ground.errors import RewindError
from rewind.ground.offset_sampler import OffsetSampler
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from snapshotter.snapshot import SnapshotInvalid, list_snapshots, load_snapshot, prefetch_newest

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".recovering"
HELPER_SUFFIX = ".recovering-helper"
PHASES = ("restore", "replay", "validate")
HELPER_SHARE = 0.5
"""The helper's share of the tail: both sides start replaying once the restore is done."""


@dataclass
class RecoveryReport:
    stores: dict[str, StoreRecovery]
    prepare_seconds: float
    """Before the restore: the writer lock, the helper's start, the partitions and their tails."""
    restore_seconds: float
    replay_seconds: float
    validate_seconds: float
    swap_seconds: float
    """After the validation: the recovered stores renamed into place and the directory synced (the
    replaced ones are deleted afterwards, in the background)."""
    total_seconds: float
    digest: str
    helper_partitions: list[int]
    side_seconds: dict[str, dict[str, float]]
    """When each side (``here``, ``helper``) finished each phase, in seconds from the restore's start:
    which side a slow phase waited for."""

    def as_dict(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "timings_seconds": {
                "prepare": round(self.prepare_seconds, 4),
                "restore": round(self.restore_seconds, 4),
                "replay": round(self.replay_seconds, 4),
                "validate": round(self.validate_seconds, 4),
                "swap": round(self.swap_seconds, 4),
                "total": round(self.total_seconds, 4),
            },
            "helper_partitions": self.helper_partitions,
            "side_seconds": {
                side: {phase: round(t, 4) for phase, t in ends.items()}
                for side, ends in self.side_seconds.items()
            },
            "stores": {name: s.__dict__ for name, s in sorted(self.stores.items())},
        }


def recover(
    settings: Settings,
    tracker: RecoveryTracker | None = None,
    partitions: list[int] | None = None,
    reason: str = "recovery requested",
    metrics: ProjectorMetrics | None = None,
) -> RecoveryReport:
    """Rebuild the live state from snapshots and the log; see the module docstring for guarantees.

    ``metrics``, when given, counts the replayed events like the projector's own."""
    tracker = tracker or RecoveryTracker()
    started = time.monotonic()
    live_root = settings.state_dir
    staging = live_root.with_name(live_root.name + STAGING_SUFFIX)
    helper_root = live_root.with_name(live_root.name + HELPER_SUFFIX)
    run: _TwoSides | None = None
    try:
        tracker.failure_detected(reason)
        tracker.begin()
        with (
            StateDirectory.open(live_root, settings),
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="recover-io") as io,
        ):
            ahead = _snapshotted_keys(settings, partitions)
            _prefetch_snapshots(settings, ahead)
            _remove_leftovers(live_root, staging, helper_root)
            restoring = _restore_ahead(settings, (live_root, staging), ahead, io)
            helper = _start_helper(settings, helper_root)
            try:
                admin = AdminClient(settings.client_config())
                count = events_partition_count(admin, settings.events_topic)
                keys = [CONFIG_PARTITION, *(partitions if partitions is not None else range(count))]
                helper_keys = _helper_share(settings, keys, admin) if helper is not None else []
            except BaseException:
                if helper is not None:
                    helper.stop()
                wait([restoring])  # nothing may write into staging once it is removed
                raise
            tracker.finish_step("detect", detail=reason)
            run = _TwoSides(settings, tracker, metrics, io, (staging, helper_root), keys, helper, helper_keys)
            run.recover(restoring)
            replaced = _swap_in(run.roots, live_root)
            tracker.finish_step("validate")
        tracker.recovered()
    except BaseException as exc:
        if run is not None:
            run.stop_helper()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(helper_root, ignore_errors=True)
        tracker.failed(str(exc))
        raise
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(helper_root, ignore_errors=True)
    ended = time.monotonic()
    _remove_in_background(replaced)
    ends = run.phase_ends
    digest = combined_digest({name: s.digest for name, s in run.stores.items()})
    return RecoveryReport(
        run.stores,
        run.started - started,
        ends["restore"] - run.started,
        ends["replay"] - ends["restore"],
        ends["validate"] - ends["replay"],
        ended - ends["validate"],
        ended - started,
        digest,
        run.helped_keys,
        run.side_ends(),
    )


class _TwoSides:
    """Replay and validate: here for some stores, in a helper process for the others.

    Restoring is done here, for both sides (it started before the helper could take any work); the
    helper's stores are then moved into its staging directory and handed over. Each side goes at
    its own pace. A step of the tracker ends when both sides finished it (its counts are their
    sums), so the tracker still moves restore -> replay -> validate, and the report's phase times
    are the boundaries between those ends. A helper failure at any point is logged; its partitions
    are then recovered here once this side's own work is done.
    """

    def __init__(
        self,
        settings: Settings,
        tracker: RecoveryTracker,
        metrics: ProjectorMetrics | None,
        io: ThreadPoolExecutor,
        roots: tuple[Path, Path],
        keys: list[int],
        helper: RecoveryHelper | None,
        helper_keys: list[int],
    ) -> None:
        self.settings, self.tracker, self.metrics, self.io = settings, tracker, metrics, io
        self.staging, self.helper_root = roots
        self.keys = keys
        self.stores: dict[str, StoreRecovery] = {}
        self.roots: dict[str, Path] = {}
        self.started = time.monotonic()
        self.phase_ends: dict[str, float] = {}
        self._ended: dict[str, dict[str, float]] = {phase: {} for phase in PHASES}
        self._done: dict[str, dict[str, int]] = {phase: {} for phase in PHASES}
        self._totals: dict[str, int] = {}
        self._phase = 0
        self.helper = helper
        self.helped_keys = helper_keys
        if helper is not None and not helper_keys:
            helper.stop()  # not worth it for this recovery
            self.helper = None
        if self.helper is None:
            self.helped_keys = []
        tracker.start_step("restore", total=len(keys))

    def recover(self, restoring: Future[dict[str, StoreRecovery]]) -> None:
        """Finish the restore begun ahead, hand the helper its stores, then replay and validate."""
        self.stores = self._finish_restore(restoring.result())
        self.roots = dict.fromkeys(self.stores, self.staging)
        if self.helper is not None:
            self._hand_over()
        self._progress("restore", "here", len(self.keys))
        self._finished("restore", "here")
        if self.helped_keys:
            self._finished("restore", "helper")
        own_keys = [k for k in self.keys if k not in self.helped_keys]
        own = {name: self.stores[name] for name in map(store_name, own_keys)}

        def replayed(done: int, total: int) -> None:
            self._progress("replay", "here", done, total)
            self._hear_helper(block=False)

        replay_stores(self.settings, self.staging, own_keys, self.stores, replayed, self.metrics)
        self._finished("replay", "here")

        def validated(done: int) -> None:
            self._progress("validate", "here", done)
            self._hear_helper(block=False)

        validate_stores(self.staging, own, self.io, validated)
        self._finished("validate", "here")
        while self.helper is not None and not self.helper.finished:
            self._hear_helper(block=True)
        if self.helped_keys and not (self.helper is not None and self.helper.finished):
            self._recover_helper_share_here()

    def _finish_restore(self, restored: dict[str, StoreRecovery]) -> dict[str, StoreRecovery]:
        """The stores restored ahead, completed to exactly this recovery's partitions: a partition
        without a snapshot (or one whose snapshot appeared meanwhile) is restored now, a snapshotted
        store that is not to be recovered is discarded."""
        wanted = {store_name(k): k for k in self.keys}
        for name in set(restored) - set(wanted):
            shutil.rmtree(self.staging / name, ignore_errors=True)
            del restored[name]
        missing = [key for name, key in wanted.items() if name not in restored]
        restored |= restore_stores(self.settings, self.staging, missing, self.io)
        assert set(restored) == set(wanted), "every partition recovered is restored exactly once"
        return restored

    def _hand_over(self) -> None:
        """Move the helper's restored stores into its staging directory and let it start."""
        assert self.helper is not None
        names = [store_name(k) for k in self.helped_keys]
        self.helper_root.mkdir()
        for name in names:
            if (self.staging / name).exists():  # a partition without a snapshot has no store yet
                os.rename(self.staging / name, self.helper_root / name)
            self.roots[name] = self.helper_root
        try:
            self.helper.assign({k: self.stores[store_name(k)].snapshot_offset for k in self.helped_keys})
            crashpoint("recover-helper-started")
        except HelperFailed as exc:
            self._drop_helper(exc)

    def side_ends(self) -> dict[str, dict[str, float]]:
        sides: dict[str, dict[str, float]] = {}
        for phase, ends in self._ended.items():
            for side, at in ends.items():
                sides.setdefault(side, {})[phase] = at - self.started
        return sides

    def stop_helper(self) -> None:
        if self.helper is not None:
            self.helper.stop()

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
                self._progress(phase, "helper", len(self.helped_keys))
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
        self.roots |= dict.fromkeys(map(store_name, self.helped_keys), self.staging)

    def _recover_helper_share_here(self) -> None:
        """The helper failed: its partitions restored, replayed and validated in this process."""
        keys = self.helped_keys
        redone = restore_stores(self.settings, self.staging, keys, self.io)
        replay_stores(self.settings, self.staging, keys, redone, None, self.metrics)
        validate_stores(self.staging, redone, self.io)
        self.stores |= redone
        self.roots |= dict.fromkeys(redone, self.staging)
        for phase in PHASES[1:]:
            self._progress(phase, "helper", len(keys) if phase != "replay" else 0)
            self._finished(phase, "helper")
        self.helped_keys = []

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
        sides = {"here", "helper"} if self.helped_keys else {"here"}
        while self._phase < len(PHASES) and set(self._ended[PHASES[self._phase]]) >= sides:
            current = PHASES[self._phase]
            self.phase_ends[current] = max(self._ended[current].values())
            assert self.phase_ends[current] >= max(self.phase_ends.values()), "phases end in order"
            self._phase += 1
            if self._phase < len(PHASES):
                self.tracker.finish_step(current)
                upcoming = PHASES[self._phase]
                self.tracker.start_step(upcoming, total=len(self.keys) if upcoming != "replay" else 0)
                self._show(upcoming)


def _remove_leftovers(live_root: Path, *staging: Path) -> None:
    for directory in staging:
        shutil.rmtree(directory, ignore_errors=True)
    for leftover in live_root.glob(".replaced-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _prefetch_snapshots(settings: Settings, keys: list[int]) -> None:
    """Ask the disk for every snapshot restore will read, at once and in the background: the restore
    threads, a few stores at a time, then find the later ones in memory."""
    names = [store_name(k) for k in keys]
    threading.Thread(
        target=prefetch_newest, args=(settings.snapshot_dir, names), name="recover-prefetch", daemon=True
    ).start()


def _snapshotted_keys(settings: Settings, partitions: list[int] | None) -> list[int]:
    """The stores worth restoring before the partition count is known: the config store and every
    event partition with a snapshot (only those of ``partitions`` when given)."""
    names = {store_name(k): k for k in partitions} if partitions is not None else None
    keys = [CONFIG_PARTITION]
    root = settings.snapshot_dir
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        key = partition_of_dir_name(directory.name)
        if key is not None and (names is None or directory.name in names):
            keys.append(key)
    return keys


def _restore_ahead(
    settings: Settings, roots: tuple[Path, Path], keys: list[int], io: ThreadPoolExecutor
) -> Future[dict[str, StoreRecovery]]:
    """Restore ``keys`` into the staging root in the background (on ``io``), starting now, in place
    of the live stores."""
    live_root, staging = roots
    restored: Future[dict[str, StoreRecovery]] = Future()

    def run() -> None:
        try:
            restored.set_result(restore_stores(settings, staging, keys, io, replacing=live_root))
        except BaseException as exc:
            restored.set_exception(exc)

    threading.Thread(target=run, name="recover-restore", daemon=True).start()
    return restored


def _start_helper(settings: Settings, root: Path) -> RecoveryHelper | None:
    """A helper started at once, so that its start-up overlaps finding out whether it is needed."""
    try:
        return RecoveryHelper.start(settings, root)
    except HelperFailed as exc:
        log.warning("recovery helper: %s; recovering every partition here", exc)
        return None


def _helper_share(settings: Settings, keys: list[int], admin: AdminClient) -> list[int]:
    """The event partitions a helper should recover: :data:`HELPER_SHARE` of the tail, or none when
    the tail is under ``recovery.parallel_min_events`` (a second process costs more than it saves)."""
    threshold = int(settings["recovery.parallel_min_events"])
    partitions = [k for k in keys if k != CONFIG_PARTITION]
    if len(partitions) < 2:
        return []
    tails = _tails(settings, partitions, admin)
    if tails is None or sum(tails.values()) < threshold:
        return []
    share: list[int] = []
    helper_load = own_load = 0
    for partition in sorted(partitions, key=lambda p: (-tails[p], p)):
        if helper_load / HELPER_SHARE < own_load / (1 - HELPER_SHARE):
            share.append(partition)
            helper_load += tails[partition]
        else:
            own_load += tails[partition]
    return sorted(share)


def _tails(settings: Settings, partitions: list[int], admin: AdminClient) -> dict[int, int] | None:
    """Events after each partition's newest snapshot (by its manifest), or None if the log end
    offsets cannot be listed (then recovery runs in one process, and replay reports the problem)."""
    topic = settings.events_topic
    try:
        sampler = OffsetSampler(settings.client_config(), admin=admin)
        found, failed = sampler.log_offsets((topic, p) for p in partitions)
    except RewindError:
        return None
    if failed:
        return None
    tails: dict[int, int] = {}
    for partition in partitions:
        start = 0
        for path in list_snapshots(settings.snapshot_dir, store_name(partition))[:1]:
            with contextlib.suppress(SnapshotInvalid):  # an estimate; restore reports a bad snapshot
                start = load_snapshot(path).offset + 1
        tails[partition] = max(0, found[(topic, partition)].end - start)
    return tails


def _swap_in(roots: dict[str, Path], live_root: Path) -> Path:
    """Replace each live store with the recovered one; each rename is atomic on its own. Returns the
    directory now holding the replaced stores (removing them is not part of recovering)."""
    replaced = live_root / f".replaced-{uuid.uuid4().hex}"
    replaced.mkdir()
    for name in sorted(roots):
        live = live_root / name
        if live.exists():
            os.rename(live, replaced / name)
        crashpoint("recover-swap")
        os.rename(roots[name] / name, live)
    fsync_directory(live_root)
    return replaced


_cleanups: list[threading.Thread] = []


def _remove_in_background(replaced: Path) -> None:
    """Delete the replaced stores after the recovered ones are live. Not a daemon thread: a process
    (``rewind recover``) exits only once the old files are gone; if it is killed first, the next
    recovery removes what is left."""
    cleanup = threading.Thread(
        target=shutil.rmtree,
        args=(replaced,),
        kwargs={"ignore_errors": True},
        name="recover-cleanup",
        daemon=False,  # even when started from a daemon thread (the CLI runs recovery in one)
    )
    cleanup.start()
    _cleanups[:] = [t for t in _cleanups if t.is_alive()] + [cleanup]


def wait_for_cleanup() -> None:
    """Return once the stores replaced by this process's recoveries are deleted (for a caller that
    measures what comes next, like the benchmark, and would otherwise time the deletion too)."""
    while _cleanups:
        _cleanups.pop().join()
