"""Crash recovery: newest verified snapshot + replay of the log after it, validated, then swapped in.

Per partition: pick the newest snapshot whose manifest and checksum verify (reporting each corrupt
one passed over), restore it into a staging directory beside the live state, replay from its offset
+ 1 to the current log end with the projector itself (the same fold, never a copy), validate, and
only then swap each partition's store into the live directory. The live state is never modified
before validation succeeds, so a failed recovery (a data-loss gap, a broker outage) leaves it as it
was. Killed at any instant, a recovery can simply be run again: the staging directories are
discarded, and each live store is either the old or the new one, both consistent on their own.

Restoring starts first thing, beside the rest of the preparation (the helper's start, the partition
count, the tails), for every store that has a snapshot, on this host or in the remote store (a
remote one is downloaded into the staging directory meanwhile).

When the tail to replay is large, a helper process replays and validates part of the event
partitions beside this one (:mod:`replayer.helper_coordination`); if it fails, its partitions are
recovered here.
"""

from __future__ import annotations

import contextlib
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
from projector.runner import store_partition
from projector.state_directory import StateDirectory, combined_digest
from projector.store import CONFIG_DIR_NAME, fsync_directory, partition_dir_name, partition_of_dir_name
from replayer.helper_coordination import HelperCoordinator, helper_share, start_helper
from replayer.recovery_steps import StoreRecovery, replay_stores, restore_stores, validate_stores
from replayer.recovery_tracker import RecoveryTracker
from rewind.ground.errors import InvariantViolation
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from snapshotter.snapshot import prefetch_newest
from snapshotter.snapshot_store import RemoteUnavailable, remote_store

STAGING_SUFFIX = ".recovering"
HELPER_SUFFIX = ".recovering-helper"


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
    run: HelperCoordinator | None = None
    try:
        tracker.failure_detected(reason)
        tracker.begin()
        with (
            StateDirectory.open(live_root, settings),
            ThreadPoolExecutor(max_workers=4, thread_name_prefix="recover-io") as io,
        ):
            ahead = _snapshotted_stores(settings, partitions)
            _prefetch_snapshots(settings, ahead)
            _remove_leftovers(live_root, staging, helper_root)
            restoring = _restore_ahead(settings, (live_root, staging), ahead, io)
            helper = start_helper(settings, helper_root)
            try:
                admin = AdminClient(settings.client_config())
                count = events_partition_count(admin, settings.events_topic)
                chosen = partitions if partitions is not None else range(count)
                names = [CONFIG_DIR_NAME, *map(partition_dir_name, chosen)]
                helper_names = helper_share(settings, names, admin) if helper is not None else []
            except BaseException:
                if helper is not None:
                    helper.stop()
                wait([restoring])  # nothing may write into staging once it is removed
                raise
            tracker.finish_step("detect", detail=reason)
            run = HelperCoordinator(tracker, metrics, (staging, helper_root), names, helper, helper_names)
            stores = _recover_stores(settings, run, restoring, io)
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
    digest = combined_digest({name: s.digest for name, s in stores.items()})
    return RecoveryReport(
        stores,
        run.started - started,
        ends["restore"] - run.started,
        ends["replay"] - ends["restore"],
        ends["validate"] - ends["replay"],
        ended - ends["validate"],
        ended - started,
        digest,
        [store_partition(name) for name in run.helper_names],
        run.side_ends(),
    )


def _recover_stores(
    settings: Settings,
    run: HelperCoordinator,
    restoring: Future[dict[str, StoreRecovery]],
    io: ThreadPoolExecutor,
) -> dict[str, StoreRecovery]:
    """Finish the restore begun ahead, then replay and validate this side's stores while the helper
    does its share; the helper's share is recovered here too if it failed."""
    staging, metrics = run.staging, run.metrics
    stores = _finish_restore(settings, staging, run.names, restoring.result(), io)
    run.restored(stores)
    own_names = run.own_names
    own = {name: stores[name] for name in own_names}

    def replayed(done: int, total: int) -> None:
        run.progressed_here("replay", done, total)

    replay_stores(settings, staging, own_names, stores, replayed, metrics)
    run.finished_here("replay")

    def validated(done: int) -> None:
        run.progressed_here("validate", done)

    validate_stores(staging, own, io, validated)
    run.finished_here("validate")
    left = run.wait_for_helper()
    if left:
        redone = restore_stores(settings, staging, left, io)
        replay_stores(settings, staging, left, redone, None, metrics)
        validate_stores(staging, redone, io)
        stores |= redone
        run.recovered_here(redone)
    return stores


def _finish_restore(
    settings: Settings,
    staging: Path,
    names: list[str],
    restored: dict[str, StoreRecovery],
    io: ThreadPoolExecutor,
) -> dict[str, StoreRecovery]:
    """The stores restored ahead, completed to exactly this recovery's partitions: a partition
    without a snapshot (or one whose snapshot appeared meanwhile) is restored now, a snapshotted
    store that is not to be recovered is discarded."""
    wanted = set(names)
    for name in set(restored) - wanted:
        shutil.rmtree(staging / name, ignore_errors=True)
        del restored[name]
    missing = [name for name in names if name not in restored]
    restored |= restore_stores(settings, staging, missing, io)
    if set(restored) != wanted:
        raise InvariantViolation(
            f"recovery restored {sorted(restored)}, not exactly the stores to recover {sorted(wanted)}",
            "the live state was not changed; report this message, then run `rewind recover` again",
        )
    return restored


def _remove_leftovers(live_root: Path, *staging: Path) -> None:
    for directory in staging:
        shutil.rmtree(directory, ignore_errors=True)
    for leftover in live_root.glob(".replaced-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _prefetch_snapshots(settings: Settings, names: list[str]) -> None:
    """Ask the disk for every snapshot restore will read, at once and in the background: the restore
    threads, a few stores at a time, then find the later ones in memory."""
    threading.Thread(
        target=prefetch_newest, args=(settings.snapshot_dir, names), name="recover-prefetch", daemon=True
    ).start()


def _snapshotted_stores(settings: Settings, partitions: list[int] | None) -> list[str]:
    """The stores worth restoring before the partition count is known: the config store and every
    event partition's store with a snapshot, here or in the remote store (only those of
    ``partitions`` when given)."""
    chosen = set(partitions) if partitions is not None else None
    names = [CONFIG_DIR_NAME]
    root = settings.snapshot_dir
    found = {directory.name for directory in root.iterdir()} if root.is_dir() else set()
    remote = remote_store(settings)
    if remote is not None:
        with contextlib.suppress(RemoteUnavailable):  # restore reports it, per store
            found |= set(remote.stores())
    for name in sorted(found):
        partition = partition_of_dir_name(name)
        if partition is not None and (chosen is None or partition in chosen):
            names.append(name)
    return names


def _restore_ahead(
    settings: Settings, roots: tuple[Path, Path], names: list[str], io: ThreadPoolExecutor
) -> Future[dict[str, StoreRecovery]]:
    """Restore the stores ``names`` into the staging root in the background (on ``io``), starting
    now, in place of the live stores."""
    live_root, staging = roots
    restored: Future[dict[str, StoreRecovery]] = Future()

    def run() -> None:
        try:
            restored.set_result(restore_stores(settings, staging, names, io, replacing=live_root))
        except BaseException as exc:
            restored.set_exception(exc)

    threading.Thread(target=run, name="recover-restore", daemon=True).start()
    return restored


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
