"""Crash recovery: newest verified snapshot + replay of the log after it, validated, then swapped in.

Per partition: pick the newest snapshot whose manifest and checksum verify (reporting each corrupt
one passed over), restore it into a staging directory beside the live state, replay from its offset
+ 1 to the current log end with the projector itself (the same fold, never a copy), validate, and
only then swap each partition's store into the live directory. The live state is never modified
before validation succeeds, so a failed recovery (a data-loss gap, a broker outage) leaves it as it
was. Killed at any instant, a recovery can simply be run again: the staging directories are
discarded, and each live store is either the old or the new one, both consistent on their own.

When the tail to replay is large (``recovery.parallel_min_events``), part of the event partitions go
to a :mod:`replayer.recovery_helper` process with its own staging directory, so replay and validation
use two cores; the steps stay in lockstep (each ends when both sides finished it). If the helper fails
in any way, its staging directory is discarded and its partitions are recovered here: slower, same
result, and the failure is logged, never ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from projector.crashpoints import crashpoint
from projector.metrics import ProjectorMetrics
from projector.runner import CONFIG_PARTITION
from projector.state_directory import StateDirectory, combined_digest
from replayer.progress import RecoveryTracker
from replayer.recovery_helper import HelperFailed, RecoveryHelper
from replayer.recovery_steps import (
    StoreRecovery,
    replay_stores,
    restore_stores,
    store_name,
    validate_stores,
)
from rewind.config import Settings
from rewind.topics import events_partition_count
from snapshotter.snapshot import SnapshotInvalid, list_snapshots, load_snapshot

log = logging.getLogger(__name__)

STAGING_SUFFIX = ".recovering"
HELPER_SUFFIX = ".recovering-helper"
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]


@dataclass
class RecoveryReport:
    stores: dict[str, StoreRecovery]
    restore_seconds: float
    replay_seconds: float
    validate_seconds: float
    total_seconds: float
    digest: str
    helper_partitions: list[int]

    def as_dict(self) -> dict[str, object]:
        return {
            "digest": self.digest,
            "timings_seconds": {
                "restore": round(self.restore_seconds, 4),
                "replay": round(self.replay_seconds, 4),
                "validate": round(self.validate_seconds, 4),
                "total": round(self.total_seconds, 4),
            },
            "helper_partitions": self.helper_partitions,
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
    helper: RecoveryHelper | None = None
    try:
        tracker.failure_detected(reason)
        tracker.begin()
        with StateDirectory.open(live_root, settings):
            admin = AdminClient(settings.client_config())
            count = events_partition_count(admin, settings.events_topic)
            keys = [CONFIG_PARTITION, *(partitions if partitions is not None else range(count))]
            _remove_leftovers(live_root, staging, helper_root)
            helper_keys = _helper_share(settings, admin, keys)
            tracker.finish_step("detect", detail=reason)
            if helper_keys:
                names = [store_name(k) for k in helper_keys]
                try:
                    helper = RecoveryHelper.start(settings, helper_root, helper_keys, names)
                    crashpoint("recover-helper-started")
                except HelperFailed as exc:
                    log.warning("recovery helper: %s; recovering every partition here", exc)
            own_keys = [k for k in keys if helper is None or k not in helper_keys]
            with ThreadPoolExecutor(max_workers=4, thread_name_prefix="recover-io") as io:
                tracker.start_step("restore", total=len(keys))
                restore_started = time.monotonic()
                stores = restore_stores(
                    settings, staging, own_keys, io, lambda done: tracker.advance("restore", done)
                )
                roots = dict.fromkeys(stores, staging)
                if helper is not None:
                    try:
                        helped = helper.restored()
                    except HelperFailed as exc:
                        _without_helper(helper, helper_root, exc)
                        helper = None
                        helped = restore_stores(settings, staging, helper_keys, io)
                        own_keys = keys
                    stores |= helped
                    roots |= dict.fromkeys(helped, helper_root if helper is not None else staging)
                restore_seconds = time.monotonic() - restore_started
                tracker.finish_step("restore")

                tracker.start_step("replay")
                replay_started = time.monotonic()
                if helper is not None:
                    helper.replay()
                    on_progress = _replay_progress(tracker, helper)
                else:
                    on_progress = _replay_progress(tracker, None)
                replay_stores(settings, staging, own_keys, stores, on_progress, metrics)
                if helper is not None:
                    try:
                        helper.replayed(stores, metrics)
                    except HelperFailed as exc:
                        _without_helper(helper, helper_root, exc)
                        helper = None
                        _recover_here(settings, staging, helper_keys, stores, io, metrics)
                        roots |= {store_name(k): staging for k in helper_keys}
                replay_seconds = time.monotonic() - replay_started
                tracker.finish_step("replay")

                tracker.start_step("validate", total=len(keys))
                validate_started = time.monotonic()
                if helper is not None:
                    helper.validate()
                mine = {name: stores[name] for name, root in roots.items() if root == staging}
                validate_stores(staging, mine, io, lambda done: tracker.advance("validate", done))
                if helper is not None:
                    try:
                        helper.validated(stores)
                    except HelperFailed as exc:
                        _without_helper(helper, helper_root, exc)
                        helper = None
                        _recover_here(settings, staging, helper_keys, stores, io, metrics)
                        helped = {store_name(k): stores[store_name(k)] for k in helper_keys}
                        validate_stores(staging, helped, io)
                        roots |= dict.fromkeys(helped, staging)
                tracker.advance("validate", len(keys))
                digest = combined_digest({name: s.digest for name, s in stores.items()})
                validate_seconds = time.monotonic() - validate_started
            _swap_in(roots, live_root)
            tracker.finish_step("validate")
        tracker.recovered()
    except BaseException as exc:
        if helper is not None:
            helper.stop()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(helper_root, ignore_errors=True)
        tracker.failed(str(exc))
        raise
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(helper_root, ignore_errors=True)
    return RecoveryReport(
        stores,
        restore_seconds,
        replay_seconds,
        validate_seconds,
        time.monotonic() - started,
        digest,
        [] if helper is None else helper_keys,
    )


def _remove_leftovers(live_root: Path, *staging: Path) -> None:
    for directory in staging:
        shutil.rmtree(directory, ignore_errors=True)
    for leftover in live_root.glob(".replaced-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _helper_share(settings: Settings, admin: AdminClient, keys: list[int]) -> list[int]:
    """The event partitions a helper should recover: about half the tail to replay, or none when
    the tail is under ``recovery.parallel_min_events`` (a second process costs more than it saves)."""
    threshold = int(settings["recovery.parallel_min_events"])
    partitions = [k for k in keys if k != CONFIG_PARTITION]
    if len(partitions) < 2:
        return []
    tails = _tails(settings, admin, partitions)
    if tails is None or sum(tails.values()) < threshold:
        return []
    share: list[int] = []
    helper_load = own_load = 0
    for partition in sorted(partitions, key=lambda p: (-tails[p], p)):
        if helper_load < own_load:
            share.append(partition)
            helper_load += tails[partition]
        else:
            own_load += tails[partition]
    return sorted(share)


def _tails(settings: Settings, admin: AdminClient, partitions: list[int]) -> dict[int, int] | None:
    """Events after each partition's newest snapshot (by its manifest), or None if the log end
    offsets cannot be listed (then recovery runs in one process, and replay reports the problem)."""
    request = {TopicPartition(settings.events_topic, p): _LATEST for p in partitions}
    try:
        ends = {tp.partition: f.result().offset for tp, f in admin.list_offsets(request).items()}
    except KafkaException:
        return None
    tails: dict[int, int] = {}
    for partition in partitions:
        start = 0
        for path in list_snapshots(settings.snapshot_dir, store_name(partition))[:1]:
            with contextlib.suppress(SnapshotInvalid):  # an estimate; restore reports a bad snapshot
                start = load_snapshot(path).offset + 1
        tails[partition] = max(0, ends[partition] - start)
    return tails


def _replay_progress(tracker: RecoveryTracker, helper: RecoveryHelper | None) -> Callable[[int, int], None]:
    def on_progress(done: int, total: int) -> None:
        if helper is None:
            tracker.advance("replay", done, total)
        else:
            tracker.advance(
                "replay", done + helper.replay_done, total + max(helper.replay_total, helper.replay_done)
            )

    return on_progress


def _without_helper(helper: RecoveryHelper, root: Path, failure: HelperFailed) -> None:
    log.warning("recovery helper failed (%s); recovering its partitions here", failure)
    helper.stop()
    shutil.rmtree(root, ignore_errors=True)


def _recover_here(
    settings: Settings,
    staging: Path,
    keys: list[int],
    stores: dict[str, StoreRecovery],
    io: ThreadPoolExecutor,
    metrics: ProjectorMetrics | None,
) -> None:
    """Restore and replay ``keys`` in this process's staging directory (after a helper failed)."""
    redone = restore_stores(settings, staging, keys, io)
    replay_stores(settings, staging, keys, redone, None, metrics)
    stores.update(redone)


def _swap_in(roots: dict[str, Path], live_root: Path) -> None:
    """Replace each live store with the recovered one; each rename is atomic on its own."""
    for name in sorted(roots):
        live = live_root / name
        if live.exists():
            os.rename(live, live_root / f".replaced-{name}")
        crashpoint("recover-swap")
        os.rename(roots[name] / name, live)
    descriptor = os.open(live_root, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    for leftover in live_root.glob(".replaced-*"):
        shutil.rmtree(leftover, ignore_errors=True)
