"""Codec micro-benchmark: µs per event for encode and decode (the projector's hot path).

Run: ``.venv/bin/python bench/bench_codec.py [--events N] [--repeat R]``. Prints a table and writes
``bench/results/codec.json``. Each figure is the best of R timed passes (after one warm-up pass) over
the same N simulator events: best-of, because the question is what the code costs, not what the
machine's neighbours cost.

Rows:
- ``encode (codec)``: strict field check + fastavro write + header, current schemas.
- ``decode (codec)``: header, fingerprint lookup, fastavro read, resolution into the current schema.
- ``decode v1 Fill -> v2``: an old writer, resolved by the prepared fast path (defaults filled in).
- ``fastavro general resolution v1 -> v2``: the same bytes through fastavro's own resolution, for
  comparison with the fast path.
- ``validate_event (builders)``: the full builder check ``EventProducer`` runs on an event that is
  not a builder's own (plain ``dict`` copies; a ``BuiltEvent`` is returned as it is).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import fastavro

from producers.builders import validate_event
from producers.simulator import SimulationParams, simulate
from schemas.codec import HEADER_SIZE, default_codec, physical_schema

RESULTS = Path(__file__).resolve().parent / "results"


def best_us_per_item(items: Sequence[Any], work: Callable[[Any], object], repeat: int) -> float:
    for item in items:  # warm-up pass, not timed
        work(item)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter_ns()
        for item in items:
            work(item)
        best = min(best, (time.perf_counter_ns() - started) / len(items) / 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    codec = default_codec()
    events = list(simulate(SimulationParams(events=args.events, seed=1, anomaly_rate=0.01)))
    plain = [dict(event) for event in events]
    values = [codec.encode(e) for e in events]
    fills = [e for e in events if e["event_type"] == "Fill"]
    v1_fills = [codec.encode({k: v for k, v in e.items() if k != "venue"}, version=1) for e in fills]
    versions = codec.catalog.versions("Fill")
    writer = fastavro.parse_schema(physical_schema(versions[0].schema))
    reader = fastavro.parse_schema(physical_schema(versions[-1].schema))

    def general(value: bytes) -> object:
        return fastavro.schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), writer, reader)

    rows = [
        ("encode (codec)", len(events), best_us_per_item(events, codec.encode, args.repeat)),
        ("decode (codec)", len(values), best_us_per_item(values, codec.decode, args.repeat)),
        (
            "decode v1 Fill -> v2 (fast path)",
            len(v1_fills),
            best_us_per_item(v1_fills, codec.decode, args.repeat),
        ),
        (
            "fastavro general resolution v1 -> v2",
            len(v1_fills),
            best_us_per_item(v1_fills, general, args.repeat),
        ),
        ("validate_event (builders)", len(plain), best_us_per_item(plain, validate_event, args.repeat)),
    ]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'operation':<{width}}  {'events':>7}  {'µs/event':>9}  {'events/s':>10}")
    for name, count, micros in rows:
        print(f"{name:<{width}}  {count:>7}  {micros:>9.2f}  {1e6 / micros:>10,.0f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "codec",
        "python": platform.python_version(),
        "fastavro": fastavro.__version__,
        "machine": platform.machine(),
        "events": args.events,
        "repeat": args.repeat,
        "rows": [{"operation": n, "events": c, "us_per_event": round(m, 3)} for n, c, m in rows],
    }
    out = RESULTS / "codec.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
