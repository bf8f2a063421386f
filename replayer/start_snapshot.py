"""Where a partition's replay starts: the newest verified snapshot at or before a bound, or nothing.

A verified snapshot is byte for byte a state the projector committed, so replaying the log after it
gives the same state as replaying from the log start. A snapshot that fails verification is named in
the result and passed over, never used.
"""

from __future__ import annotations

import shutil
import uuid

from projector import encoding
from projector.state import MemoryState
from projector.store import PartitionStore, partition_dir_name
from rewind.ground.errors import DataLossError
from rewind.ground.settings import Settings
from snapshotter.snapshot_store import newest_valid_anywhere


def starting_state(
    settings: Settings, partition: int, bound: int, low: int
) -> tuple[MemoryState, int | None, list[str]]:
    """The newest verified snapshot at or below ``bound`` as a :class:`MemoryState`, or an empty one.

    Refuses (data loss) when the replay would have to start before the log start ``low``.
    """
    name = partition_dir_name(partition)
    scratch = settings.home / f".remote-{uuid.uuid4().hex}"
    try:
        chosen, rejected = (
            (None, []) if bound < 0 else newest_valid_anywhere(settings, name, scratch, bound, deep=True)
        )
        snapshot = None if chosen is None else chosen.snapshot
        if snapshot is None:
            state = MemoryState()
        else:
            with PartitionStore(snapshot.path, encoding.EVENTS_TABLES, readonly=True, shared=False) as copy:
                state = MemoryState.from_records(copy.records())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    start = state.offset + 1
    if start < low:
        raise DataLossError(
            f"data loss on {settings.events_topic}[{partition}]: the history needs offsets "
            f"{start}-{low - 1}, deleted by retention (the log now starts at {low}), and no verified "
            f"snapshot between offsets {low - 1} and {bound} covers them",
            f"pass a later --from (at or after the time of offset {low}) so a newer snapshot can be the "
            "start, or re-ingest the deleted events",
        )
    return state, None if snapshot is None else snapshot.offset, rejected
