"""Time travel: build the state as it was at a point in the log, into a directory of its own.

A point is, per partition, the number of events to include (Kafka-style: ``K`` means offsets
0..K-1 are applied and offset K is the next one). ``--to P:K`` names it directly; ``--at TIME`` finds,
in each partition, the first record whose Kafka timestamp is after TIME, so the state includes every
event logged at or before TIME. Each partition starts from its nearest verified snapshot at or before
the point (or from the log start) and is replayed by the projector itself, bounded at the point.
Live state is never touched: the output directory must be elsewhere and empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from projector.runner import CONFIG_PARTITION, Progress, Projector
from replayer.recovery_steps import store_name
from rewind.ground.errors import RewindError
from rewind.ground.kafka_reader import open_reader
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from rewind.ground.watermarks import watermark_offsets
from snapshotter.snapshot import newest_valid, restore


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


def parse_points(text: str, partition_count: int) -> dict[int, int]:
    """``"3:1200,config:40"`` -> {3: 1200, CONFIG_PARTITION: 40} (events to include per partition)."""
    points: dict[int, int] = {}
    for part in text.split(","):
        name, sep, count = part.strip().partition(":")
        try:
            key = CONFIG_PARTITION if name == "config" else int(name)
            events = int(count)
        except ValueError as exc:
            raise RewindError(
                f"--to: '{part}' is not PARTITION:OFFSET", "write e.g. --to 3:1200,config:40"
            ) from exc
        if not sep or events < 0 or not (key == CONFIG_PARTITION or 0 <= key < partition_count):
            raise RewindError(
                f"--to: '{part}' is not a partition of the events topic "
                f"(0-{partition_count - 1}) or 'config' "
                "with a non-negative offset",
                "write e.g. --to 3:1200",
            )
        points[key] = events
    return points


def points_at(settings: Settings, moment: datetime, keys: list[int]) -> dict[int, int]:
    """Per partition, how many events were logged at or before ``moment`` (by Kafka timestamp)."""
    millis = int(moment.timestamp() * 1000) + 1
    consumer = open_reader(settings.client_config(), "rewind-timetravel")
    try:
        wanted = [
            TopicPartition(
                settings.config_topic if k == CONFIG_PARTITION else settings.events_topic,
                0 if k == CONFIG_PARTITION else k,
                millis,
            )
            for k in keys
        ]
        found = consumer.offsets_for_times(wanted, timeout=30)
        points: dict[int, int] = {}
        for key, tp in zip(keys, found, strict=True):
            if tp.offset < 0:
                _low, high = watermark_offsets(consumer, tp, 30)
                points[key] = high
            else:
                points[key] = tp.offset
        return points
    finally:
        consumer.close()


def all_keys(settings: Settings, partitions: list[int] | None) -> list[int]:
    count = events_partition_count(AdminClient(settings.client_config()), settings.events_topic)
    return [CONFIG_PARTITION, *(partitions if partitions is not None else range(count))]


def build_state_at(
    settings: Settings,
    out_dir: Path,
    points: dict[int, int],
    on_batch: Callable[[Progress], None] | None = None,
) -> list[ReplayedStore]:
    """Build, in ``out_dir``, the state after the first ``points[key]`` events of each partition."""
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
    for key, events in sorted(points.items()):
        name = store_name(key)
        snapshot, rejected = newest_valid(settings.snapshot_dir, name, max_offset=events - 1)
        if snapshot is not None:
            restore(snapshot, out / name)
        stores.append(
            ReplayedStore(name, events, None if snapshot is None else snapshot.offset, tuple(rejected))
        )
    projector = Projector(
        settings,
        [k for k in points if k != CONFIG_PARTITION],
        state_dir=out,
        until={k: n - 1 for k, n in points.items()},
        include_config=CONFIG_PARTITION in points,
        commit_group=False,
    )
    try:
        projector.run(on_batch=on_batch)
    finally:
        projector.close()
    return stores
