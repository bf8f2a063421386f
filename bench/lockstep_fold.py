"""Two or more builds fold the same stream batch by batch, in turn: costs of a few percent, measured.

On a shared machine, a build's throughput moves by 10-20 % from one minute to the next, so two
builds benchmarked one after the other cannot show a difference of 3 %. Here each build runs as a
worker process (its own checkout's ``.venv``) that decodes, folds and commits a generated trading
day (:func:`bench.bench_fold.generate`, encoded up front) into its own LMDB store, exactly as
:mod:`bench.bench_reads` does. The driver tells the workers to fold batch k one after the other, in
an order that rotates every batch, so that a slow moment of the machine falls on every build
alike. Each worker reports the CPU seconds of each batch; the figure per build is its total over
all batches, and the comparison is the ratio of totals plus the median of the per-batch ratios.

    .venv/bin/python -m bench.lockstep_fold --build without=/tmp/b-without --build with=. \\
        --events 300000 --passes 3

Every checkout needs ``bench/lockstep_fold.py`` (the worker is this module). Writes
``bench/results/lockstep-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

RESULTS = Path(__file__).parent / "results"
BATCH = 5_000


def worker(events: int, seed: int, scratch: Path) -> None:
    """Fold one batch per ``batch`` line on stdin; answer each with its CPU seconds."""
    from bench.bench_fold import generate
    from projector.gc_tuning import tune_gc_for_projection
    from projector.lmdb_state import EntityCache, LmdbPartitionState
    from projector.policy import EventsStep
    from projector.state_directory import StateDirectory
    from rewind.ground.settings import load_settings
    from schemas.codec import default_codec

    codec = default_codec()
    values = [codec.encode(event) for event in generate(events, seed)]
    tune_gc_for_projection()
    passes = 0
    directory = store = cache = None
    position = offset = 0

    def fresh() -> None:
        nonlocal directory, store, cache, position, offset, passes
        if directory is not None:
            directory.close()
        root = scratch / f"pass{passes}"
        passes += 1
        settings = load_settings(environ={"REWIND_HOME": str(root)})
        directory = StateDirectory.open(root / "state", settings, durable=False)
        store = directory.store("events-p0000")
        cache = EntityCache()
        position, offset = 0, -1

    fresh()
    print(f"ready {len(values)}", flush=True)
    for line in sys.stdin:
        if line.strip() == "restart":
            fresh()
            print("ok", flush=True)
            continue
        assert store is not None and cache is not None
        batch = values[position : position + BATCH]
        started = time.process_time()
        state = LmdbPartitionState(store, cache)
        step = EventsStep(state, 0, offset=offset)
        step.expect(batch)
        for value in batch:
            step.record(value, step.offset + 1)
        offset = step.offset
        store.commit(state.changes(), offset, len(batch))
        print(f"{time.process_time() - started:.6f}", flush=True)
        position += len(batch)
    if directory is not None:
        directory.close()


def _ask(process: subprocess.Popen[str], line: str) -> str:
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None and stdout is not None
    stdin.write(line + "\n")
    stdin.flush()
    return _answer(stdout)


def _answer(stdout: IO[str]) -> str:
    answer = stdout.readline()
    if not answer:
        raise SystemExit("a worker ended early; run it alone to see why")
    return answer.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--build", action="append", metavar="NAME=PATH", help="a build to compare (repeat)")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--passes", type=int, default=3, help="folds of the whole stream, each into a fresh store"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.events, args.seed, args.worker)
        return
    builds: dict[str, Path] = {}
    for spec in args.build or []:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise SystemExit(f"--build {spec!r}: expected NAME=PATH")
        builds[name] = Path(path).resolve()
    if len(builds) < 2:
        raise SystemExit("give at least two --build NAME=PATH")
    batches = -(-args.events // BATCH)
    seconds: dict[str, list[float]] = {name: [] for name in builds}
    with tempfile.TemporaryDirectory(prefix="rewind-lockstep-") as scratch:
        workers = {
            name: subprocess.Popen(
                [
                    str(path / ".venv" / "bin" / "python"),
                    "-m",
                    "bench.lockstep_fold",
                    "--worker",
                    str(Path(scratch) / name),
                    "--events",
                    str(args.events),
                    "--seed",
                    str(args.seed),
                ],
                cwd=path,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for name, path in builds.items()
        }
        for process in workers.values():
            assert process.stdout is not None
            _answer(process.stdout)
        names = list(builds)
        for run in range(args.passes):
            if run:
                for process in workers.values():
                    _ask(process, "restart")
            for batch in range(batches):
                turn = (run * batches + batch) % len(names)
                for name in names[turn:] + names[:turn]:
                    seconds[name].append(float(_ask(workers[name], "batch")))
        for process in workers.values():
            assert process.stdin is not None
            process.stdin.close()
            process.wait(60)
    base = names[0]
    report: dict[str, object] = {"events": args.events, "passes": args.passes, "batch": BATCH, "builds": {}}
    print(f"{args.passes} passes of {args.events:,} events, {batches} batches each; CPU seconds per build")
    for name in names:
        total = sum(seconds[name])
        rate = args.passes * args.events / total
        line = f"{name:>12}: {total:7.2f} s, {rate:,.0f} events per CPU-second"
        entry: dict[str, object] = {"seconds": seconds[name], "events_per_cpu_s": round(rate)}
        if name != base:
            ratios = [b / a for a, b in zip(seconds[name], seconds[base], strict=True)]
            entry["throughput_vs_" + base] = round(sum(seconds[base]) / total, 4)
            entry["median_batch_ratio_vs_" + base] = round(statistics.median(ratios), 4)
            line += (
                f"; throughput / {base}: {sum(seconds[base]) / total:.3f} (totals), "
                f"{statistics.median(ratios):.3f} (median of batches)"
            )
        print(line)
        report["builds"][name] = entry  # type: ignore[index]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"lockstep-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
