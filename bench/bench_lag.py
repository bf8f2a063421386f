"""Cost of one lag evaluation over many partitions, beside the bare AdminClient calls it rests on.

Creates a topic of ``--partitions`` partitions (1000 by default) with ``--records`` old-timestamped
records each, and a group that committed on every partition: up to the end on most, ``--behind``
records short on ``--lagging`` of them (one scenario per value). Then, per scenario, median wall
time over ``--runs`` of:

  admin calls      list_consumer_group_offsets + list_offsets earliest + latest (the floor)
  first records    fetching the first unconsumed record of every lagging partition (one consumer)
  commit log       reading the group's commits from __consumer_offsets (first read, one window)
  evaluate cold    LagMonitor.evaluate_group on a new monitor (what `rewind lag` does once)
  evaluate warm    evaluate_group on a monitor that already evaluated (--watch, the service)
  offsets mapping  evaluate_offsets on the same positions (the projector's LMDB offsets)

Prints a table and writes ``bench/results/lag.json``. The topic is deleted afterwards.

    .venv/bin/python -m bench.bench_lag --bootstrap 127.0.0.1:39092
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from rewind.ground.offset_sampler import OffsetSampler
from rewind.lag import LagMonitor
from rewind.lag_commitlog import CommitLogReader

RESULTS = Path(__file__).resolve().parent / "results"
EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]


def median_seconds(runs: int, work: Callable[[], object]) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def setup(bootstrap: str, topic: str, partitions: int, records: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=60)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 2_000_000}
    )
    old = int((time.time() - 300) * 1000)
    for partition in range(partitions):
        for i in range(records):
            producer.produce(topic, value=b"x" * 100, partition=partition, timestamp=old + i)
        producer.poll(0)
    assert producer.flush(120) == 0


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    consumer.close()


def admin_calls(admin: AdminClient, group: str, keys: list[tuple[str, int]]) -> None:
    """The floor: the three offset requests any lag tool must make, batched and concurrent."""
    committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    earliest = admin.list_offsets({TopicPartition(t, p): EARLIEST for t, p in keys})
    latest = admin.list_offsets({TopicPartition(t, p): LATEST for t, p in keys})
    committed.result()
    for future in [*earliest.values(), *latest.values()]:
        future.result()


def scenario(
    bootstrap: str, topic: str, partitions: int, records: int, lagging: int, behind: int, runs: int
) -> dict[str, Any]:
    config: dict[str, str | int | float | bool] = {"bootstrap.servers": bootstrap}
    group = f"bench-lag-{uuid.uuid4().hex[:8]}"
    offsets = {(topic, p): records - (behind if p < lagging else 0) for p in range(partitions)}
    commit(bootstrap, group, offsets)
    commit(bootstrap, group, offsets)
    keys = sorted(offsets)
    admin = AdminClient(config)
    sampler = OffsetSampler(config)
    positions = {k: o for k, o in offsets.items() if o < records}
    warm = LagMonitor(config, window_seconds=60)
    warm.evaluate_group(group, topic)

    def cold() -> None:
        with LagMonitor(config, window_seconds=60) as monitor:
            monitor.evaluate_group(group, topic)

    def commit_log() -> None:
        reader = CommitLogReader(config, group, history_seconds=60)
        try:
            assert len(reader.read_new()) == 2 * partitions
        finally:
            reader.close()

    def first_records() -> None:
        assert len(sampler.first_unconsumed(positions)) == len(positions)

    passes: list[tuple[str, Callable[[], object]]] = [
        ("admin calls", lambda: admin_calls(admin, group, keys)),
        ("first records", first_records),
        ("commit log", commit_log),
        ("evaluate cold", cold),
        ("evaluate warm", lambda: warm.evaluate_group(group, topic)),
        ("offsets mapping", lambda: warm.evaluate_offsets(offsets, name=f"{group}-mapping")),
    ]
    rows = []
    floor = None
    for label, work in passes:
        median, times = median_seconds(runs, work)
        floor = median if floor is None else floor
        rows.append(
            {
                "pass": label,
                "median_ms": round(median * 1000, 2),
                "min_ms": round(min(times) * 1000, 2),
                "max_ms": round(max(times) * 1000, 2),
                "vs_admin_calls": round(median / floor, 2),
            }
        )
    report = warm.evaluate_group(group, topic)
    warm.close()
    assert len(report.partitions) == partitions and report.total_lag_messages == lagging * behind
    return {"partitions": partitions, "lagging": lagging, "behind": behind, "runs": runs, "passes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("REWIND_BOOTSTRAP", "127.0.0.1:39092"))
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--records", type=int, default=20, help="records per partition")
    parser.add_argument("--lagging", default="100,1000", help="comma-separated lagging-partition counts")
    parser.add_argument("--behind", type=int, default=10, help="records each lagging partition is behind")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    topic = f"bench-lag-{uuid.uuid4().hex[:8]}"
    print(f"topic {topic}: {args.partitions} partitions x {args.records} records", flush=True)
    setup(args.bootstrap, topic, args.partitions, args.records)
    scenarios = []
    try:
        for lagging in (int(n) for n in args.lagging.split(",")):
            result = scenario(
                args.bootstrap, topic, args.partitions, args.records, lagging, args.behind, args.runs
            )
            scenarios.append(result)
            print(
                f"\n{args.partitions} partitions, {lagging} lagging by {args.behind} (median of {args.runs})"
            )
            print(f"{'pass':<16} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'x admin':>8}")
            for row in result["passes"]:
                print(
                    f"{row['pass']:<16} {row['median_ms']:>10.2f} {row['min_ms']:>9.2f} "
                    f"{row['max_ms']:>9.2f} {row['vs_admin_calls']:>8.2f}"
                )
    finally:
        admin = AdminClient({"bootstrap.servers": args.bootstrap})
        admin.delete_topics([topic])[topic].result(timeout=60)

    RESULTS.mkdir(exist_ok=True)
    document = {
        "benchmark": "lag",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "records_per_partition": args.records,
        "scenarios": scenarios,
    }
    path = RESULTS / "lag.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
