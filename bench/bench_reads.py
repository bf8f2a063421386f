"""Folding into LMDB and reading it back, without Kafka: what checked rows cost writes and reads.

Decodes and folds a generated trading day (:func:`bench.bench_fold.generate`, encoded up front) into
one real LMDB store in batches of 5,000 events, as the projector commits them (decode, fold, encode,
commit: the hot path without the consumer), then reads the store back the ways users do: every
order (a full scan through :mod:`projector.queries`, as ``rewind state orders`` does), 20,000 point
reads of orders (``rewind state get order``), and the store's digest (snapshots, recovery's
validation, ``rewind state digest``). Each figure is the best of ``--repeat`` runs. Run it from two
checkouts side by side (``bench.compare_builds --reads``) to compare builds. Writes
``bench/results/reads-<time>.json``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_fold import generate
from bench.results_file import write_results
from projector import queries
from projector.gc_tuning import tune_gc_for_projection
from projector.lmdb_state import EntityCache, LmdbPartitionState
from projector.policy import EventsStep
from projector.state_directory import StateDirectory
from rewind.ground.settings import load_settings
from schemas.codec import default_codec

BATCH = 5_000
POINT_READS = 20_000


def _best(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def fold_into_lmdb(root: Path, values: list[bytes]) -> tuple[float, StateDirectory]:
    """Seconds to decode and fold ``values`` into a fresh store at ``root``, committing every
    :data:`BATCH`, through the policy step as the projector's consume loop drives it."""
    settings = load_settings(environ={"REWIND_HOME": str(root)})
    directory = StateDirectory.open(root / "state", settings, durable=False)
    store = directory.store("events-p0000")
    cache = EntityCache()
    offset = -1
    started = time.perf_counter()
    for first in range(0, len(values), BATCH):
        state = LmdbPartitionState(store, cache)
        step = EventsStep(state, 0, offset=offset)
        batch = values[first : first + BATCH]
        for value in batch:
            step.record(value, step.offset + 1)
        offset = step.offset
        store.commit(state.changes(), offset, len(batch))
    return time.perf_counter() - started, directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    events = generate(args.events, args.seed)
    codec = default_codec()
    values: list[bytes] = [codec.encode(event) for event in events]
    tune_gc_for_projection()  # as every projecting command does
    folds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rewind-bench-reads-") as scratch:
        for run in range(3):
            seconds, directory = fold_into_lmdb(Path(scratch) / f"run{run}", values)
            folds.append(seconds)
            if run < 2:
                directory.close()
        store = directory.store("events-p0000")
        order_ids = [order.order_id for order in queries.orders(directory)]
        sample = random.Random(args.seed).sample(order_ids, min(POINT_READS, len(order_ids)))
        scan = _best(args.repeat, lambda: queries.orders(directory))
        points = _best(args.repeat, lambda: [queries.order(directory, order_id) for order_id in sample])
        digest = _best(args.repeat, store.digest)
        directory.close()
    rows = {
        "events": len(events),
        "orders": len(order_ids),
        "decode_fold_commit_events_per_s": round(len(events) / min(folds)),
        "scan_orders_per_s": round(len(order_ids) / scan),
        "point_reads_per_s": round(len(sample) / points),
        "digest_seconds": round(digest, 4),
    }
    for name, value in rows.items():
        print(f"{name}: {value:,}" if isinstance(value, int) else f"{name}: {value}")
    write_results("reads", rows)


if __name__ == "__main__":
    main()
