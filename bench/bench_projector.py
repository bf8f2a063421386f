"""Projector throughput: Kafka -> decode -> fold -> durable LMDB commit, beside its baselines.

In one run, over the same topic of simulated events:
  raw consume   confluent-kafka consume of every record (the ceiling: no decode, no fold, no LMDB)
  decode only   the same consume plus the Avro decode of every record
  projector     the real projector (decode, fold, one durable LMDB commit per partition per batch)

Reports events/s (wall) and events per CPU-second of this process (librdkafka's fetch threads
included), so "on one core" can be read off directly. ``--profile`` adds a cProfile of the projector.

    .venv/bin/python -m bench.bench_projector --events 1000000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.harness import bench_broker, bench_topics, produce
from bench.results_file import write_results
from projector.gc_tuning import tune_gc_for_projection
from projector.runner import Projector
from schemas.codec import default_codec


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(label: str, events: int, work: Callable[[], None]) -> dict[str, float | str]:
    wall, cpu = time.perf_counter(), _cpu()
    work()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    row: dict[str, float | str] = {
        "pass": label,
        "events": events,
        "seconds": round(wall, 3),
        "events_per_s": round(events / wall),
        "events_per_cpu_s": round(events / cpu),
    }
    print(
        f"{label:<14} {events:>9} events {wall:8.2f} s {row['events_per_s']:>10,} ev/s "
        f"{row['events_per_cpu_s']:>10,} ev/cpu-s",
        flush=True,
    )
    return row


def consume_all(bootstrap: str, topic: str, partitions: int, total: int, decode: bool) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "queued.max.messages.kbytes": 262144,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    decoder = default_codec().decode
    seen = 0
    while seen < total:
        batch = consumer.consume(5000, 1.0)
        if decode:
            for message in batch:
                decoder(message.value())
        else:
            for message in batch:
                message.value()
        seen += len(batch)
    consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="existing broker (default: start a local one in a temp dir)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--batch-events", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the projector")
    args = parser.parse_args()
    tune_gc_for_projection()

    with bench_broker(args.bootstrap) as (bootstrap, scratch):
        run(args, bootstrap, scratch)


def run(args: argparse.Namespace, bootstrap: str, scratch: Path) -> None:
    extra = {"REWIND_PROJECTOR_BATCH_EVENTS": str(args.batch_events)}
    with bench_topics(bootstrap, scratch, args.partitions, **extra) as settings:
        print(f"producing {args.events:,} simulated events into {settings.events_topic} ...", flush=True)
        summary = produce(settings, args.events, seed=1, accounts=args.accounts)
        last = summary.last_offsets.get(settings.events_topic, {})
        total = sum(last.values()) + len(last)
        everything = summary.events

        rows = [
            measure(
                "raw consume",
                total,
                lambda: consume_all(bootstrap, settings.events_topic, args.partitions, total, False),
            ),
            measure(
                "decode only",
                total,
                lambda: consume_all(bootstrap, settings.events_topic, args.partitions, total, True),
            ),
        ]

        def project(state: Path) -> Callable[[], None]:
            def work() -> None:
                projector = Projector(settings, range(args.partitions), state_dir=state)
                try:
                    progress = projector.run(until_caught_up=True)
                    assert progress.applied + progress.dead_letters == everything, progress
                finally:
                    projector.close()

            return work

        rows.append(measure("projector", everything, project(scratch / "state")))
        raw = float(rows[0]["events_per_s"])
        projected = float(rows[2]["events_per_s"])
        print(f"projector / raw consume = {projected / raw:.0%}", flush=True)

        profile_text = ""
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(project(scratch / "state-profiled"))
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            profile_text = out.getvalue()
            print(profile_text)

        result = {
            "events": everything,
            "partitions": args.partitions,
            "batch_events": args.batch_events,
            "rows": rows,
            "projector_vs_raw": round(projected / raw, 3),
            "profile": profile_text,
        }
        write_results("projector", result)


if __name__ == "__main__":
    main()
