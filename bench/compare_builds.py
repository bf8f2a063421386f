"""Two builds of rewind side by side: the projector and recovery benchmarks, alternating, one broker.

A change that should not cost speed (a restructuring, say) is measured by running the same
benchmarks from two checkouts, each with its own ``make setup``, in ABAB order against the same
broker, so that a slow moment of the machine slows both. Each round's figures come from the
``bench/results`` file the benchmark writes in its own checkout.

    git worktree add /tmp/before <commit>; (cd /tmp/before && make setup)
    .venv/bin/python -m bench.compare_builds --before /tmp/before --after . --rounds 2

More than two builds: ``--build NAME=PATH`` for each (round r starts at the r-th build, so every
build goes first as often as the others). ``--reads`` adds :mod:`bench.bench_reads` (fold into LMDB
without Kafka, then scans, point reads and the digest) to each round.

Prints one line per round and a summary of each figure's range per build; writes
``bench/results/compare-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from bench.harness import bench_broker

RESULTS = Path(__file__).parent / "results"


def _newest(directory: Path, prefix: str) -> Path:
    found = sorted((directory / "bench" / "results").glob(f"{prefix}-*.json"))
    if not found:
        raise SystemExit(f"no {prefix} results in {directory}/bench/results")
    return found[-1]


def _run(checkout: Path, module: str, arguments: list[str]) -> None:
    python = checkout / ".venv" / "bin" / "python"
    subprocess.run([str(python), "-m", module, *arguments], cwd=checkout, check=True)


def projector_round(checkout: Path, bootstrap: str, events: int) -> dict[str, float]:
    """events/s of raw consume and of the projector, from one bench_projector run."""
    _run(checkout, "bench.bench_projector", ["--bootstrap", bootstrap, "--events", str(events)])
    rows = {row["pass"]: row for row in json.loads(_newest(checkout, "projector").read_text())["rows"]}
    return {
        "raw_consume_events_per_s": float(rows["raw consume"]["events_per_s"]),
        "projector_events_per_s": float(rows["projector"]["events_per_s"]),
        "projector_events_per_cpu_s": float(rows["projector"]["events_per_cpu_s"]),
    }


def recovery_round(checkout: Path, bootstrap: str, events: int, tail: int) -> dict[str, object]:
    """The recovery part (a) of bench_recovery: the command's recoveries beside a cold full replay."""
    arguments = ["--bootstrap", bootstrap, "--events", str(events), "--tail", str(tail), "--only", "a"]
    _run(checkout, "bench.bench_recovery", arguments)
    return dict(json.loads(_newest(checkout, "recovery").read_text()))


def reads_round(checkout: Path, events: int) -> dict[str, float]:
    """The figures of one bench_reads run."""
    _run(checkout, "bench.bench_reads", ["--events", str(events)])
    return {k: float(v) for k, v in json.loads(_newest(checkout, "reads").read_text()).items()}


def _builds(args: argparse.Namespace) -> dict[str, Path]:
    if args.build:
        builds = {}
        for spec in args.build:
            name, _, path = spec.partition("=")
            if not name or not path:
                raise SystemExit(f"--build {spec!r}: expected NAME=PATH")
            builds[name] = Path(path).resolve()
        return builds
    if args.before is None or args.after is None:
        raise SystemExit("give --before and --after, or --build NAME=PATH for each build")
    return {"before": args.before.resolve(), "after": args.after.resolve()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, help="checkout of the earlier build")
    parser.add_argument("--after", type=Path, help="checkout of the later build")
    parser.add_argument("--build", action="append", metavar="NAME=PATH", help="a build to compare (repeat)")
    parser.add_argument("--reads", action="store_true", help="also run bench.bench_reads each round")
    parser.add_argument("--reads-events", type=int, default=300_000)
    parser.add_argument("--bootstrap", help="existing broker (default: start a local one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--projector-events", type=int, default=500_000)
    parser.add_argument("--recovery-events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=100_000)
    parser.add_argument("--skip-recovery", action="store_true")
    args = parser.parse_args()
    builds = _builds(args)
    results: dict[str, dict[str, list[object]]] = {
        name: {"projector": [], "recovery": [], "reads": []} for name in builds
    }
    names = list(builds)
    with bench_broker(args.bootstrap) as (bootstrap, _scratch):
        for round_number in range(args.rounds):
            start = round_number % len(names)
            order = names[start:] + names[:start]
            for name in order:
                row = projector_round(builds[name], bootstrap, args.projector_events)
                results[name]["projector"].append(row)
                print(f"round {round_number + 1} {name}: projector {row}", flush=True)
            if args.reads:
                for name in order:
                    reads = reads_round(builds[name], args.reads_events)
                    results[name]["reads"].append(reads)
                    print(f"round {round_number + 1} {name}: reads {reads}", flush=True)
            if args.skip_recovery:
                continue
            for name in order:
                report = recovery_round(builds[name], bootstrap, args.recovery_events, args.tail)
                results[name]["recovery"].append(report)
                print(f"round {round_number + 1} {name}: recovery written", flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"compare-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(
        json.dumps({"builds": {k: str(v) for k, v in builds.items()}, "results": results}, indent=2)
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
