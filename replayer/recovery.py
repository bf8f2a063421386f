"""Crash recovery: newest verified snapshot + replay of the log after it, validated, then swapped in.

Per partition: pick the newest snapshot whose manifest and checksum verify (reporting each corrupt
one passed over), restore it into a staging directory beside the live state, replay from its offset
+ 1 to the current log end with the projector itself (the same fold, never a copy), validate, and
only then swap each partition's store into the live directory. The live state is never modified
before validation succeeds, so a failed recovery (a data-loss gap, a broker outage) leaves it as it
was. Killed at any instant, a recovery can simply be run again: the staging directory is discarded,
and each live store is either the old or the new one, both consistent on their own.

The staging copy is built without an fsync per commit (nothing depends on it until the swap); each
staging store is synced once, while validation reads, and nothing is swapped in before every sync
has finished.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from projector.crashpoints import crashpoint
from projector.metrics import ProjectorMetrics
from projector.runner import CONFIG_PARTITION, Progress, Projector
from projector.state_directory import StateDirectory, combined_digest
from projector.store import CONFIG_DIR_NAME, partition_dir_name
from replayer.parallel_digest import store_digests
from replayer.progress import RecoveryTracker
from rewind.config import Settings
from rewind.topics import events_partition_count
from snapshotter.snapshot import newest_valid, restore, sync_store_files

STAGING_SUFFIX = ".recovering"


def store_name(key: int) -> str:
    return CONFIG_DIR_NAME if key == CONFIG_PARTITION else partition_dir_name(key)


@dataclass
class StoreRecovery:
    """What recovery did for one partition store."""

    name: str
    snapshot_offset: int | None
    rejected_snapshots: list[str] = field(default_factory=list)
    replayed: int = 0
    offset: int = -1
    digest: str = ""


@dataclass
class RecoveryReport:
    stores: dict[str, StoreRecovery]
    restore_seconds: float
    replay_seconds: float
    validate_seconds: float
    total_seconds: float
    digest: str

    def as_dict(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "timings_seconds": {
                "restore": round(self.restore_seconds, 4),
                "replay": round(self.replay_seconds, 4),
                "validate": round(self.validate_seconds, 4),
                "total": round(self.total_seconds, 4),
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
    try:
        tracker.failure_detected(reason)
        tracker.begin()
        with StateDirectory.open(live_root, settings):
            count = events_partition_count(AdminClient(settings.client_config()), settings.events_topic)
            keys = [CONFIG_PARTITION, *(partitions if partitions is not None else range(count))]
            _remove_leftovers(live_root, staging)
            tracker.finish_step("detect", detail=reason)

            # One pool for the I/O that can overlap the CPU work: restoring stores side by side, and
            # syncing them to disk while validation reads (they were written without fsync; the
            # staging copy is thrown away if this run dies, and nothing is swapped in before every
            # sync has finished).
            with ThreadPoolExecutor(max_workers=4, thread_name_prefix="recover-io") as io:
                tracker.start_step("restore", total=len(keys))
                restore_started = time.monotonic()
                stores = _restore(settings, staging, keys, tracker, io)
                restore_seconds = time.monotonic() - restore_started
                tracker.finish_step("restore")

                tracker.start_step("replay")
                replay_started = time.monotonic()
                _replay(settings, staging, keys, stores, tracker, metrics)
                replay_seconds = time.monotonic() - replay_started
                tracker.finish_step("replay")

                tracker.start_step("validate", total=len(keys))
                validate_started = time.monotonic()
                # After replay, so one sync per store covers the restored copy and every replayed commit.
                syncs = [io.submit(sync_store_files, staging / name) for name in stores]
                digest = _validate(staging, stores, tracker)
                for sync in syncs:
                    sync.result()
                validate_seconds = time.monotonic() - validate_started
            _swap_in(staging, live_root, stores)
            tracker.finish_step("validate")
        tracker.recovered()
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        tracker.failed(str(exc))
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return RecoveryReport(
        stores, restore_seconds, replay_seconds, validate_seconds, time.monotonic() - started, digest
    )


def _remove_leftovers(live_root: Path, staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    for leftover in live_root.glob(".replaced-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _restore(
    settings: Settings, staging: Path, keys: list[int], tracker: RecoveryTracker, io: ThreadPoolExecutor
) -> dict[str, StoreRecovery]:
    """Each store from its newest valid snapshot (checksum, then copy), several stores at a time."""

    def restore_one(key: int) -> StoreRecovery:
        name = store_name(key)
        snapshot, rejected = newest_valid(settings.snapshot_dir, name)
        if snapshot is not None:
            restore(snapshot, staging / name, durable=False)
            crashpoint("recover-restored")
        return StoreRecovery(name, None if snapshot is None else snapshot.offset, rejected)

    stores: dict[str, StoreRecovery] = {}
    for done, recovery in enumerate(io.map(restore_one, keys), start=1):
        stores[recovery.name] = recovery
        tracker.advance("restore", done)
    return stores


def _replay(
    settings: Settings,
    staging: Path,
    keys: list[int],
    stores: dict[str, StoreRecovery],
    tracker: RecoveryTracker,
    metrics: ProjectorMetrics | None,
) -> None:
    projector = Projector(
        settings,
        metrics=metrics,
        partitions=[k for k in keys if k != CONFIG_PARTITION],
        state_dir=staging,
        include_config=CONFIG_PARTITION in keys,
        commit_group=False,
        durable=False,
    )

    def on_batch(progress: Progress) -> None:
        done = progress.applied + progress.dead_letters
        tracker.advance("replay", done, done + progress.remaining())

    try:
        projector.run(until_caught_up=True, on_batch=on_batch)
        progress = projector.progress
    finally:
        projector.close()
    for key in keys:
        store = stores[store_name(key)]
        store.offset = progress.offsets[key]
        base = -1 if store.snapshot_offset is None else store.snapshot_offset
        store.replayed = store.offset - base
        assert store.offset == progress.targets[key] - 1, f"{store.name} stopped at {store.offset}"


def _validate(staging: Path, stores: dict[str, StoreRecovery], tracker: RecoveryTracker) -> str:
    """Every store is at the offset replay reached, and its digest recomputes from its own content.

    Entity invariants (filled <= quantity, basis sign, ...) were asserted by the fold on every change
    that built this state, and the snapshot it started from was checksum-verified.
    """
    found = store_digests(staging, sorted(stores), lambda done: tracker.advance("validate", done))
    for name, recovery in stores.items():
        offset, recovery.digest = found[name]
        assert offset == recovery.offset, f"{name}: stored offset {offset} != {recovery.offset}"
    return combined_digest({name: s.digest for name, s in stores.items()})


def _swap_in(staging: Path, live_root: Path, stores: dict[str, StoreRecovery]) -> None:
    """Replace each live store with the recovered one; each rename is atomic on its own."""
    for name in sorted(stores):
        live = live_root / name
        if live.exists():
            os.rename(live, live_root / f".replaced-{name}")
        crashpoint("recover-swap")
        os.rename(staging / name, live)
    descriptor = os.open(live_root, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    for leftover in live_root.glob(".replaced-*"):
        shutil.rmtree(leftover, ignore_errors=True)
