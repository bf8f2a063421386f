"""The cost of the service's monitoring on projector throughput, side by side in one run.

"on":  the projector with its Prometheus metrics, the lag evaluator every 5 s (as the service runs
       it) and a Prometheus scrape of the whole registry every second.
"off": the same projector with no metrics and nothing beside it.
Runs alternate (off, on, off, on, ...) over the same topic into fresh state directories, and the
medians are compared, both as events per wall second and per CPU-second of the process (which a
shared VM's stolen time disturbs less). Target: overhead <= 5%.

    .venv/bin/python -m bench.bench_monitoring --events 300000 --rounds 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from bench.harness import bench_broker, bench_topics, produce
from bench.results_file import write_results
from projector.metrics import ProjectorMetrics
from projector.runner import Projector
from rewind.ground.settings import Settings
from rewind.lag import LagMonitor
from rewind.lag_metrics import LagMetrics
from rewind.service import LAG_INTERVAL_SECONDS, projector_offsets
from rewind.service_metrics import ServiceMetrics


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process, librdkafka's too
    return usage.ru_utime + usage.ru_stime


def project(settings: Settings, state: Path, partitions: int, monitored: bool) -> tuple[float, float]:
    """(events per second, events per CPU-second) of one full projection, with or without monitoring."""
    registry = CollectorRegistry()
    metrics = ProjectorMetrics(registry) if monitored else None
    projector = Projector(settings, range(partitions), metrics=metrics, state_dir=state, commit_group=False)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    if monitored:
        ServiceMetrics(registry)
        lag_metrics = LagMetrics(registry)

        def lag_loop() -> None:
            with LagMonitor.from_settings(settings) as monitor:
                while not stop.wait(LAG_INTERVAL_SECONDS):
                    offsets, commit_times = projector_offsets(settings, projector.progress)
                    lag_metrics.update(
                        monitor.evaluate_offsets(offsets, name="bench", commit_times=commit_times)
                    )

        def scrape_loop() -> None:
            while not stop.wait(1.0):
                generate_latest(registry)

        threads = [
            threading.Thread(target=lag_loop, daemon=True),
            threading.Thread(target=scrape_loop, daemon=True),
        ]
    started, cpu = time.perf_counter(), _cpu_seconds()
    for thread in threads:
        thread.start()
    try:
        progress = projector.run(until_caught_up=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        projector.close()
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    return progress.applied / wall, progress.applied / cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with (
        bench_broker(args.bootstrap) as (bootstrap, scratch),
        bench_topics(bootstrap, scratch, args.partitions) as settings,
    ):
        produce(settings, args.events, seed=9)
        rates: dict[str, list[float]] = {"off": [], "on": []}
        per_cpu: dict[str, list[float]] = {"off": [], "on": []}
        for round_ in range(args.rounds):
            for label in ("off", "on"):
                state = scratch / f"state-{label}-{round_}"
                rate, cpu_rate = project(settings, state, args.partitions, label == "on")
                rates[label].append(rate)
                per_cpu[label].append(cpu_rate)
                print(
                    f"round {round_ + 1} monitoring {label:<3} {rate:>10,.0f} events/s "
                    f"{cpu_rate:>10,.0f} events/CPU-s",
                    flush=True,
                )
    result: dict[str, object] = {"events": args.events, "rates": rates, "per_cpu": per_cpu}
    for name, series in (("wall", rates), ("cpu", per_cpu)):
        off, on = statistics.median(series["off"]), statistics.median(series["on"])
        overhead = (off - on) / off
        result[f"overhead_{name}"] = round(overhead, 4)
        print(f"median {name}: off {off:,.0f}, on {on:,.0f} events/s -> overhead {overhead:.1%}", flush=True)
    write_results("monitoring", result)


if __name__ == "__main__":
    main()
