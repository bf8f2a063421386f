"""Produce benchmark: EventProducer beside the raw confluent-kafka producer, same bytes, same run.

Run: ``.venv/bin/python bench/bench_produce.py [--bootstrap HOST:PORT] [--events N] [--emit-calls M]``
(the bootstrap defaults to rewind's configuration: ``REWIND_BOOTSTRAP``, rewind.toml, or the local
broker). Prints a table and writes ``bench/results/produce.json``.

What is compared:
- throughput: ``EventProducer.emit_async`` (validate + encode + route + produce) for N simulator
  events, then ``flush``; against a bare ``confluent_kafka.Producer`` with the same configuration
  sending the *same* pre-encoded values, keys and headers, with the same delivery callback and
  ``poll`` cadence. Each runs ``--rounds`` times, alternating,
  into its own fresh topic; the best round of each is reported, and the median of the per-round
  ratios (each round's pair ran at the same moment of the machine).
- latency: M sequential ``EventProducer.emit`` calls (each waits for the broker's acknowledgement),
  p50 / p99 / max; and the bare producer's produce + flush per message for the same bytes.

The topics are created for the run and deleted afterwards (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from producers.event_producer import POLL_EVERY, EventProducer, producer_config
from producers.simulator import SimulationParams, simulate
from rewind.ground.settings import load_settings
from schemas.codec import default_codec

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def raw_throughput(config: dict[str, Any], records: list[tuple[str, bytes, bytes, Any]]) -> float:
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _message: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(config)
    for topic in {record[0] for record in records}:
        producer.list_topics(topic, timeout=30)  # connections and metadata up before the clock starts
    started = time.perf_counter()
    for count, (topic, key, value, headers) in enumerate(records, 1):
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if not count % POLL_EVERY:
            producer.poll(0)
    remaining = producer.flush(120)
    elapsed = time.perf_counter() - started
    if failures or remaining:
        raise SystemExit(f"raw producer: {len(failures)} failed, {remaining} unflushed")
    return len(records) / elapsed


def rewind_throughput(make: Callable[[], EventProducer], events: list[dict[str, Any]]) -> float:
    producer = make()
    producer.check_topics()  # connections and metadata up before the clock starts
    started = time.perf_counter()
    for event in events:
        producer.emit_async(event)
    producer.flush(120)
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: rewind's configuration)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--emit-calls", type=int, default=2_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark topics")
    args = parser.parse_args()

    settings = load_settings(flags={"kafka.bootstrap": args.bootstrap})
    client = settings.client_config()
    admin = AdminClient(client)
    run = f"bench-produce-{uuid.uuid4().hex[:8]}"
    topics = {
        name: f"{run}-{name}" for name in ("rewind-events", "rewind-config", "raw-events", "raw-config")
    }
    created = admin.create_topics(
        [NewTopic(t, 1 if t.endswith("config") else args.partitions, 1) for t in topics.values()]
    )
    for future in created.values():
        future.result(timeout=30)

    try:
        codec = default_codec()
        events = list(simulate(SimulationParams(events=args.events, accounts=50, symbols=40, seed=7)))

        def make() -> EventProducer:
            return EventProducer(
                client, events_topic=topics["rewind-events"], config_topic=topics["rewind-config"]
            )

        router = make()
        records = []
        for event in events:
            topic, key = router.route(event)
            raw_topic = topics["raw-config"] if topic == topics["rewind-config"] else topics["raw-events"]
            records.append(
                (raw_topic, key.encode(), codec.encode(event), [("event_type", event["event_type"].encode())])
            )
        raw_config = producer_config(client)

        raw_rates, rewind_rates = [], []
        for _ in range(args.rounds):
            raw_rates.append(raw_throughput(raw_config, records))
            rewind_rates.append(rewind_throughput(make, events))

        producer = make()
        producer.check_topics()
        emit_ms = []
        for event in events[: args.emit_calls]:
            started = time.perf_counter()
            producer.emit(event)
            emit_ms.append((time.perf_counter() - started) * 1000)

        raw = Producer(raw_config)
        raw.list_topics(topics["raw-events"], timeout=30)
        raw_ms = []
        for raw_topic, raw_key, value, headers in records[: args.emit_calls]:
            started = time.perf_counter()
            raw.produce(raw_topic, value, raw_key, headers=headers)
            if raw.flush(30):
                raise SystemExit("raw producer: a message was not delivered within 30 s")
            raw_ms.append((time.perf_counter() - started) * 1000)
    finally:
        if not args.keep:
            for future in admin.delete_topics(list(topics.values())).values():
                future.result(timeout=30)

    best_raw, best_rewind = max(raw_rates), max(rewind_rates)
    # Rounds alternate, so each round's pair shared the machine's moment: the median of their ratios
    # is steadier than the ratio of the two best rounds (one lucky baseline round moves that).
    paired = statistics.median(r / b for r, b in zip(rewind_rates, raw_rates, strict=True))
    result = {
        "benchmark": "produce",
        "bootstrap": settings.bootstrap,
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "events": args.events,
        "partitions": args.partitions,
        "rounds": args.rounds,
        "throughput_events_per_s": {
            "raw_producer_pre_encoded": round(best_raw),
            "event_producer_emit_async": round(best_rewind),
            "ratio": round(best_rewind / best_raw, 3),
            "median_paired_ratio": round(paired, 3),
            "all_rounds": {
                "raw": [round(r) for r in raw_rates],
                "emit_async": [round(r) for r in rewind_rates],
            },
        },
        "latency_ms": {
            "emit": _latency(emit_ms),
            "raw_produce_and_flush": _latency(raw_ms),
        },
    }
    shape = f"{args.events} simulator events, {args.partitions} partitions, best of {args.rounds}"
    print(f"produce benchmark: {shape}")
    print(f"{'':34} {'events/s':>10}")
    print(f"{'raw confluent-kafka, pre-encoded':34} {best_raw:>10,.0f}")
    print(f"{'EventProducer.emit_async':34} {best_rewind:>10,.0f}   ({best_rewind / best_raw:.0%} of raw)")
    print(f"{'median ratio of the paired rounds':34} {paired:>10.0%}")
    print(f"\n{'latency over ' + str(len(emit_ms)) + ' calls (ms)':34} {'p50':>7} {'p99':>7} {'max':>7}")
    for label, samples in (("EventProducer.emit", emit_ms), ("raw produce + flush", raw_ms)):
        stats = _latency(samples)
        print(f"{label:34} {stats['p50']:>7.2f} {stats['p99']:>7.2f} {stats['max']:>7.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "produce.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


def _latency(samples: list[float]) -> dict[str, float]:
    return {
        "calls": len(samples),
        "p50": round(percentile(samples, 0.50), 3),
        "p99": round(percentile(samples, 0.99), 3),
        "max": round(max(samples), 3),
        "mean": round(statistics.fmean(samples), 3),
    }


if __name__ == "__main__":
    main()
