"""The three steps of recovering a set of partition stores inside one staging root.

Restore each store from its newest valid snapshot, replay the log after it with the projector itself
(the same fold, never a copy), then validate: sync every store to disk and recompute its digest from
its own content. :mod:`replayer.recovery` runs these steps for its share of the partitions and a
:mod:`replayer.recovery_helper` process for the other share; the steps do not care which process runs
them, and touch nothing outside ``root``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from projector.crashpoints import crashpoint
from projector.metrics import ProjectorMetrics
from projector.runner import ProjectionProgress, Projector, store_partition
from projector.state_directory import StateDirectory
from projector.store import CONFIG_DIR_NAME, DATA_FILE, advise_page_cache
from rewind.ground.errors import InvariantViolation
from rewind.ground.settings import Settings
from snapshotter.snapshot import sync_store_files
from snapshotter.snapshot_store import newest_valid_anywhere, restore_chosen

REMOTE_SCRATCH = ".remote"
"""Where remote snapshots are downloaded inside a staging root before each is moved into its store."""


@dataclass
class StoreRecovery:
    """What recovery did for one partition store."""

    name: str
    snapshot_offset: int | None
    rejected_snapshots: list[str] = field(default_factory=list)
    replayed: int = 0
    offset: int = -1
    digest: str = ""
    snapshot_location: str | None = None
    """Where the snapshot came from: ``local``, ``remote`` (the object store), or None."""


def restore_stores(
    settings: Settings,
    root: Path,
    names: list[str],
    io: ThreadPoolExecutor,
    replacing: Path | None = None,
) -> dict[str, StoreRecovery]:
    """Each store of ``names`` under ``root`` from its newest valid snapshot (checksum, then copy),
    several at a time; a store without one starts empty. The stores of the same name under
    ``replacing`` (the live ones, to be replaced) first give up their page cache, so each copy reuses
    that memory instead of evicting other files."""

    def restore_one(name: str) -> StoreRecovery:
        if replacing is not None:
            advise_page_cache(replacing / name / DATA_FILE, "DONTNEED")
        chosen, rejected = newest_valid_anywhere(settings, name, root / REMOTE_SCRATCH)
        if chosen is not None:
            restore_chosen(chosen, root / name, durable=False)
            crashpoint("recover-restored")
        recovery = StoreRecovery(name, None if chosen is None else chosen.snapshot.offset, rejected)
        recovery.snapshot_location = None if chosen is None else chosen.location
        return recovery

    return {recovery.name: recovery for recovery in io.map(restore_one, names)}


def replay_stores(
    settings: Settings,
    root: Path,
    names: list[str],
    stores: dict[str, StoreRecovery],
    on_progress: Callable[[int, int], None] | None = None,
    metrics: ProjectorMetrics | None = None,
) -> None:
    """Replay each store of ``names`` from its offset + 1 to the log end the projector found when it
    started; records where each store stopped in ``stores``. ``on_progress(done, total)`` after every
    batch. Raises :class:`InvariantViolation` if a store stopped anywhere else."""
    projector = Projector(
        settings,
        metrics=metrics,
        partitions=[store_partition(name) for name in names if name != CONFIG_DIR_NAME],
        state_dir=root,
        include_config=CONFIG_DIR_NAME in names,
        commit_group=False,
        durable=False,
    )

    def on_batch(progress: ProjectionProgress) -> None:
        if on_progress is not None:
            done = progress.applied + progress.dead_letters
            on_progress(done, done + progress.remaining())

    try:
        projector.run(until_caught_up=True, on_batch=on_batch)
        progress = projector.progress
    finally:
        projector.close()
    for name in names:
        store = stores[name]
        store.offset = progress.offsets[name]
        base = -1 if store.snapshot_offset is None else store.snapshot_offset
        store.replayed = store.offset - base
        target = progress.targets[name] - 1
        if store.offset != target:
            raise InvariantViolation(
                f"recovery replayed {name} to offset {store.offset}, not to offset {target}, the last "
                "before the log end it found",
                "the live state was not changed; report this message, then run `rewind recover` again",
            )


def validate_stores(
    root: Path,
    stores: dict[str, StoreRecovery],
    io: ThreadPoolExecutor,
    on_validated: Callable[[int], None] | None = None,
) -> None:
    """Every store is on disk, at the offset replay reached (:class:`InvariantViolation` otherwise),
    and its digest recomputes from its own content (recorded in ``digest``).

    Entity invariants (filled <= quantity, basis sign, ...) were asserted by the fold on every change
    that built this state, and the snapshot it started from was checksum-verified. The stores were
    written without fsync; one sync per store, overlapping the digests, covers the restored copy and
    every replayed commit.
    """
    syncs = [io.submit(sync_store_files, root / name) for name in stores]
    with StateDirectory.open_readonly(root) as directory:
        for done, (name, recovery) in enumerate(sorted(stores.items()), start=1):
            store = directory.store(name)
            offset, recovery.digest = store.offset(), store.digest()
            if offset != recovery.offset:
                raise InvariantViolation(
                    f"recovered {name} holds offset {offset} on disk, not the offset {recovery.offset} "
                    "its replay reached",
                    "the live state was not changed; report this message, then run `rewind recover` again",
                )
            if on_validated is not None:
                on_validated(done)
    for sync in syncs:
        sync.result()
