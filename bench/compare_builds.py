"""Two builds of rewind side by side: the projector and recovery benchmarks, alternating, one broker.

A change that should not cost speed (a restructuring, say) is measured by running the same
benchmarks from two checkouts, each with its own ``make setup``, in ABAB order against the same
broker, so that a slow moment of the machine slows both. Each round's figures come from the
``bench/results`` file the benchmark writes in its own checkout.

    git worktree add /tmp/before <commit>; (cd /tmp/before && make setup)
    .venv/bin/python -m bench.compare_builds --before /tmp/before --after . --rounds 2

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, required=True, help="checkout of the earlier build")
    parser.add_argument("--after", type=Path, required=True, help="checkout of the later build")
    parser.add_argument("--bootstrap", help="existing broker (default: start a local one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--projector-events", type=int, default=500_000)
    parser.add_argument("--recovery-events", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=100_000)
    parser.add_argument("--skip-recovery", action="store_true")
    args = parser.parse_args()
    builds = {"before": args.before.resolve(), "after": args.after.resolve()}
    results: dict[str, dict[str, list[object]]] = {name: {"projector": [], "recovery": []} for name in builds}
    with bench_broker(args.bootstrap) as (bootstrap, _scratch):
        for round_number in range(args.rounds):
            order = list(builds) if round_number % 2 == 0 else list(reversed(builds))
            for name in order:
                row = projector_round(builds[name], bootstrap, args.projector_events)
                results[name]["projector"].append(row)
                print(f"round {round_number + 1} {name}: projector {row}", flush=True)
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
