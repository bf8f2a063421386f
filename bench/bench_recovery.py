"""Recovery, time travel and snapshot-interference benchmarks, each beside its baseline in one run.

(a) recover vs cold replay: a state of about 1M orders (plus positions) and a 100k-event tail after
    the newest snapshots: ``rewind recover`` (restore + replay the tail + validate), run as a
    command, beside a cold full replay of the same log into an empty directory.
(b) time travel: build the state at random points (``--to P:K``) from the nearest snapshot, with
    snapshots taken at the service's default cadence while the log was projected.
(c) snapshot interference: projector batch latency p50/p99 while snapshots are taken continuously
    in the service's way, beside the same projection without them.

    .venv/bin/python -m bench.bench_recovery --events 3500000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.harness import bench_broker, bench_topics, produce
from bench.results_file import write_results
from projector import queries
from projector.gc_tuning import tune_gc_for_projection
from projector.metrics import ProjectorMetrics
from projector.runner import Projector
from projector.state_directory import StateDirectory
from projector.store import CONFIG_DIR_NAME, partition_dir_name
from replayer.recovery import recover, wait_for_cleanup
from replayer.timetravel import build_state_at
from rewind.ground.settings import Settings
from rewind.service import REWIND, snapshot_in_child
from snapshotter.snapshot import take_snapshot

SNAPSHOTS_TAKEN: list[int] = []  # stores snapshotted per `rewind snapshot` run in (c)


def project_with_snapshots(settings: Settings, state: Path, partitions: int, every: int) -> float:
    """Project everything, snapshotting every store each ``every`` events (the service's cadence)."""
    started = time.perf_counter()
    projector = Projector(settings, range(partitions), state_dir=state)
    done = {"since": 0}

    def on_batch(progress: object) -> None:
        applied = projector.progress.applied
        if applied - done["since"] >= every:
            done["since"] = applied
            for name in projector.directory.store_names():
                take_snapshot(projector.directory.store(name), settings.snapshot_dir, name)

    try:
        projector.run(until_caught_up=True, on_batch=on_batch)
        for name in projector.directory.store_names():
            take_snapshot(projector.directory.store(name), settings.snapshot_dir, name)
    finally:
        projector.close()
    return time.perf_counter() - started


def recover_command(settings: Settings) -> tuple[dict[str, object], float]:
    """``rewind recover --json`` as ops run it (its own process, GC set up by the command): the
    report, and the command's wall time including the interpreter's start and imports."""
    started = time.perf_counter()
    done = subprocess.run(
        [REWIND, "recover", "--json", "--no-progress"],
        capture_output=True,
        text=True,
        env=settings.child_environ(),
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"rewind recover failed ({done.returncode}): {done.stderr}")
    report = json.loads(done.stdout)
    assert isinstance(report, dict)
    return report, seconds


def cold_replay(settings: Settings, state: Path, partitions: int) -> tuple[float, int]:
    started = time.perf_counter()
    projector = Projector(settings, range(partitions), state_dir=state, commit_group=False)
    try:
        progress = projector.run(until_caught_up=True)
    finally:
        projector.close()
    return time.perf_counter() - started, progress.applied


def batch_latencies(settings: Settings, state: Path, partitions: int, snapshots: bool) -> list[float]:
    """Per-batch apply latency of a full projection; with ``snapshots``, `rewind snapshot` child
    processes run back to back beside it, as the service takes them."""
    metrics = BatchTimes(CollectorRegistry())
    latencies = metrics.batches
    projector = Projector(settings, range(partitions), state_dir=state, commit_group=False, metrics=metrics)
    stop = threading.Event()
    own_snapshots = state.with_name(state.name + "-snapshots")  # an earlier run's would be reused
    in_state = dataclasses.replace(
        settings, values={**settings.values, "state.dir": str(state), "snapshots.dir": str(own_snapshots)}
    )

    def snapshotter() -> None:
        while not stop.is_set():
            taken = snapshot_in_child(in_state)
            if taken.returncode != 0:
                raise SystemExit(f"rewind snapshot failed: {taken.stderr}")
            SNAPSHOTS_TAKEN.append(len(json.loads(taken.stdout)))

    thread = threading.Thread(target=snapshotter, daemon=True)
    try:
        for p in range(partitions):
            projector.directory.partition(p)
        projector.directory.config()
        if snapshots:
            thread.start()
        projector.run(until_caught_up=True)
    finally:
        stop.set()
        if snapshots:
            thread.join()
        projector.close()
    return latencies


class BatchTimes(ProjectorMetrics):
    """The projector's own per-batch timing (apply + commit), kept as a list."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.batches: list[float] = []

    def observe_batch(self, batch_seconds: float, commit_seconds: float) -> None:
        super().observe_batch(batch_seconds, commit_seconds)
        self.batches.append(batch_seconds)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap")
    parser.add_argument(
        "--events", type=int, default=3_500_000, help="events before the snapshot (~1M orders)"
    )
    parser.add_argument("--tail", type=int, default=100_000)
    parser.add_argument("--recover-rounds", type=int, default=3, help="(a): recoveries of each kind")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--snapshot-every", type=int, default=100_000)
    parser.add_argument("--travels", type=int, default=5)
    parser.add_argument("--interference-events", type=int, default=300_000)
    parser.add_argument(
        "--interference-rounds", type=int, default=2, help="(c): runs of each side, ABBA-ordered, pooled"
    )
    parser.add_argument("--only", default="abc", help="which parts to run, e.g. 'c' (default: abc)")
    args = parser.parse_args()
    tune_gc_for_projection()  # as `rewind recover` and `rewind serve` do: measure the product's setup
    with bench_broker(args.bootstrap) as (bootstrap, scratch):
        run(args, bootstrap, scratch)


def run(args: argparse.Namespace, bootstrap: str, scratch: Path) -> None:
    with (
        bench_topics(bootstrap, scratch, args.partitions) as settings,
        bench_topics(bootstrap, scratch, args.partitions) as settings_c,
    ):
        measure(args, settings, settings_c, scratch)


def measure(args: argparse.Namespace, settings: Settings, settings_c: Settings, scratch: Path) -> None:
    result: dict[str, object] = {"events": args.events, "tail": args.tail, "partitions": args.partitions}
    if "a" in args.only or "b" in args.only:
        result["a"] = measure_recovery(args, settings, scratch)
    if "b" in args.only:
        result["b"] = measure_time_travel(args, settings, scratch)
    if "c" in args.only:
        result["c"] = measure_interference(args, settings_c, scratch)
    write_results("recovery", result)


def measure_recovery(args: argparse.Namespace, settings: Settings, scratch: Path) -> dict[str, object]:
    print(f"(a) {args.events:,} events, then snapshots, then a {args.tail:,}-event tail", flush=True)
    produce(settings, args.events, seed=1, accounts=args.accounts)
    seconds = project_with_snapshots(settings, settings.state_dir, args.partitions, args.snapshot_every)
    with StateDirectory.open_readonly(settings.state_dir) as directory:
        orders = len(queries.orders(directory))
        positions = len(queries.positions(directory))
    print(
        f"  projected with snapshots every {args.snapshot_every:,} events in {seconds:.1f} s: "
        f"{orders:,} orders, {positions:,} positions",
        flush=True,
    )
    produce(settings, args.tail, seed=2, accounts=args.accounts)
    # Recovery is repeatable (each run starts again from the snapshots), so it runs several times,
    # three ways alternating: the command, the service's way (recover() inside a running process)
    # and the command forced into one process (no helper) as a same-run reference.
    one_process = dataclasses.replace(
        settings, values={**settings.values, "recovery.parallel_min_events": 10**12}
    )
    runs: dict[str, list[dict[str, float]]] = {"recover": [], "in_service": [], "recover_one_process": []}
    for _ in range(args.recover_rounds):
        for label, chosen in (
            ("recover", settings),
            ("in_service", settings),
            ("recover_one_process", one_process),
        ):
            if label == "in_service":
                report, command_seconds = recover(chosen).as_dict(), 0.0
                wait_for_cleanup()  # as the command does before it exits
            else:
                report, command_seconds = recover_command(chosen)
            timings = report["timings_seconds"]
            assert isinstance(timings, dict)
            runs[label].append(timings | ({"command": round(command_seconds, 3)} if command_seconds else {}))
            print(f"  {label}: {runs[label][-1]} helper partitions {report['helper_partitions']}")
            print(f"    each side finished at {report['side_seconds']}", flush=True)
    replay_seconds, replayed = cold_replay(settings, scratch / "cold", args.partitions)
    total = statistics.median(t["total"] for t in runs["recover"])
    command = statistics.median(t["command"] for t in runs["recover"])
    in_service = statistics.median(t["total"] for t in runs["in_service"])
    print(
        f"  cold full replay: {replayed:,} events in {replay_seconds:.2f} s "
        f"-> recovery (median {total:.2f} s; the whole command {command:.2f} s; "
        f"in a running process {in_service:.2f} s) "
        f"is {replay_seconds / total:.1f}x faster",
        flush=True,
    )
    return {
        "orders": orders,
        "positions": positions,
        "recover_seconds": runs["recover"],
        "recover_one_process_seconds": runs["recover_one_process"],
        "recover_median_total": round(total, 3),
        "recover_median_command": round(command, 3),
        "in_service_median_total": round(in_service, 3),
        "in_service_seconds": runs["in_service"],
        "cold_replay_seconds": round(replay_seconds, 3),
        "cold_replay_events": replayed,
        "speedup": round(replay_seconds / total, 1),
    }


def measure_time_travel(args: argparse.Namespace, settings: Settings, scratch: Path) -> dict[str, object]:
    print(f"(b) time travel to {args.travels} random points", flush=True)
    chooser = random.Random(5)
    travels = []
    with StateDirectory.open_readonly(settings.state_dir) as directory:
        ends = {p: directory.partition(p).offset() + 1 for p in range(args.partitions)}
    for trial in range(args.travels):
        partition = chooser.randrange(args.partitions)
        k = chooser.randrange(1, ends[partition] + 1)
        started = time.perf_counter()
        stores = build_state_at(settings, scratch / f"travel-{trial}", {partition_dir_name(partition): k})
        seconds = time.perf_counter() - started
        base = stores[0].snapshot_offset
        travels.append(
            {"partition": partition, "k": k, "snapshot_offset": base, "seconds": round(seconds, 3)}
        )
        print(
            f"  {partition_dir_name(partition)} first {k:,} events from snapshot @{base}: {seconds:.2f} s",
            flush=True,
        )
    travels_at = []
    for trial in range(2):
        points = {partition_dir_name(p): chooser.randrange(1, ends[p] + 1) for p in range(args.partitions)}
        points[CONFIG_DIR_NAME] = 0
        started = time.perf_counter()
        build_state_at(settings, scratch / f"travel-all-{trial}", points)
        seconds = time.perf_counter() - started
        travels_at.append(round(seconds, 3))
        print(f"  all {args.partitions} partitions at random points: {seconds:.2f} s", flush=True)
    return {"single_partition": travels, "all_partitions_seconds": travels_at}


def measure_interference(args: argparse.Namespace, settings: Settings, scratch: Path) -> dict[str, object]:
    print(f"(c) batch latency with and without snapshots ({args.interference_events:,} events)", flush=True)
    produce(settings, args.interference_events, seed=3, accounts=args.accounts)
    # ABBA order, so neither side always runs first (a cold broker cache or a warm-up favours one).
    pooled: dict[bool, list[float]] = {False: [], True: []}
    order = [False, True, True, False] * (args.interference_rounds // 2) or [False, True]
    for run, snapshots in enumerate(order):
        state = scratch / f"c-{run}-{'with' if snapshots else 'without'}"
        pooled[snapshots].extend(batch_latencies(settings, state, args.partitions, snapshots=snapshots))
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(state.with_name(state.name + "-snapshots"), ignore_errors=True)
    without, with_snapshots = pooled[False], pooled[True]
    rows: dict[str, object] = {}
    for label, values in (("without", without), ("with snapshots", with_snapshots)):
        row = {
            "batches": len(values),
            "p50_ms": round(statistics.median(values) * 1000, 2),
            "p99_ms": round(pct(values, 0.99) * 1000, 2),
        }
        rows[label] = row
        print(f"  {label:<15} {row}", flush=True)
    rows["snapshot_runs"] = len(SNAPSHOTS_TAKEN)
    rows["store_snapshots"] = sum(SNAPSHOTS_TAKEN)
    runs, stores = len(SNAPSHOTS_TAKEN), sum(SNAPSHOTS_TAKEN)
    print(f"  {runs} `rewind snapshot` runs: {stores} store snapshots", flush=True)
    return rows


if __name__ == "__main__":
    main()
