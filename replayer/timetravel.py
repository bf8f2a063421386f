"""Time travel: build the state as it was at a point in the log, into a directory of its own.

A point is, per partition, the number of events to include (Kafka-style: ``K`` means offsets
0..K-1 are applied and offset K is the next one). ``--to P:K`` names it directly; ``--at TIME`` finds,
in each partition, the first record whose Kafka timestamp is after TIME, so the state includes every
event logged at or before TIME. Each partition starts from its nearest verified snapshot at or before
the point (or from the log start) and is replayed by the projector itself, bounded at the point.
Live state is never touched: the output directory must be elsewhere and empty.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import TopicPartition

from projector.runner import ProjectionProgress, Projector, labelled_store, store_partition, store_source
from projector.store import CONFIG_DIR_NAME, partition_dir_name, partition_of_dir_name
from rewind.ground.errors import RewindError
from rewind.ground.kafka_reader import open_reader
from rewind.ground.settings import Settings
from rewind.ground.watermarks import watermark_offsets
from snapshotter.snapshot_store import newest_valid_anywhere, restore_chosen


@dataclass(frozen=True)
class ReplayedStore:
    name: str
    events: int
    snapshot_offset: int | None
    rejected_snapshots: tuple[str, ...]


def parse_time(text: str) -> datetime:
    """ISO-8601 (``2026-11-21T14:03:00``, ``...Z``, ``...+01:00``); no zone means UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise RewindError(f"'{text}' is not an ISO-8601 time", "write e.g. 2026-11-21T14:03:00Z") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_points(text: str, partition_count: int) -> dict[str, int]:
    """``"3:1200,config:40"`` -> {"events-p0003": 1200, "config": 40} (events to include per store)."""
    points: dict[str, int] = {}
    for part in text.split(","):
        label, sep, count = part.strip().partition(":")
        try:
            store = labelled_store(label)
            events = int(count)
        except ValueError as exc:
            raise RewindError(
                f"--to: '{part}' is not PARTITION:OFFSET", "write e.g. --to 3:1200,config:40"
            ) from exc
        partition = partition_of_dir_name(store)
        if not sep or events < 0 or not (partition is None or 0 <= partition < partition_count):
            raise RewindError(
                f"--to: '{part}' is not a partition of the events topic "
                f"(0-{partition_count - 1}) or 'config' "
                "with a non-negative offset",
                "write e.g. --to 3:1200",
            )
        points[store] = events
    return points


def points_at(settings: Settings, moment: datetime, stores: list[str]) -> dict[str, int]:
    """Per store, how many events were logged at or before ``moment`` (by Kafka timestamp)."""
    millis = int(moment.timestamp() * 1000) + 1
    consumer = open_reader(settings.client_config(), "rewind-timetravel")
    try:
        wanted = [TopicPartition(*store_source(settings, store), millis) for store in stores]
        found = consumer.offsets_for_times(wanted, timeout=30)
        points: dict[str, int] = {}
        for key, tp in zip(stores, found, strict=True):
            if tp.offset < 0:
                _low, high = watermark_offsets(consumer, tp, 30)
                points[key] = high
            else:
                points[key] = tp.offset
        return points
    finally:
        consumer.close()


def stores_with_config(partitions: Iterable[int]) -> list[str]:
    """The config store and the stores of ``partitions``: what ``--at`` rebuilds."""
    return [CONFIG_DIR_NAME, *map(partition_dir_name, partitions)]


def build_state_at(
    settings: Settings,
    out_dir: Path,
    points: dict[str, int],
    on_batch: Callable[[ProjectionProgress], None] | None = None,
) -> list[ReplayedStore]:
    """Build, in ``out_dir``, the state after the first ``points[store]`` events of each store."""
    out = out_dir.resolve()
    live = settings.state_dir.resolve()
    if out == live or live in out.parents or out in live.parents:
        raise RewindError(
            f"--out {out_dir} overlaps the live state directory {settings.state_dir}",
            "choose a directory of its own, e.g. --out /tmp/replay-incident-42",
        )
    if out.exists() and any(out.iterdir()):
        raise RewindError(f"--out {out_dir} is not empty", "choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    stores: list[ReplayedStore] = []
    for name, events in sorted(points.items()):
        chosen, rejected = newest_valid_anywhere(settings, name, out / ".remote", max_offset=events - 1)
        if chosen is not None:
            restore_chosen(chosen, out / name)
        shutil.rmtree(out / ".remote", ignore_errors=True)
        stores.append(
            ReplayedStore(name, events, None if chosen is None else chosen.snapshot.offset, tuple(rejected))
        )
    projector = Projector(
        settings,
        [store_partition(name) for name in points if name != CONFIG_DIR_NAME],
        state_dir=out,
        until={name: n - 1 for name, n in points.items()},
        include_config=CONFIG_DIR_NAME in points,
        commit_group=False,
    )
    try:
        projector.run(on_batch=on_batch)
    finally:
        projector.close()
    return stores
