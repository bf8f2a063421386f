"""Two or more builds do the same work batch by batch, in turn: costs of a few percent, measured.

On a shared machine, a build's throughput moves by 10-20 % from one minute to the next, so two
builds benchmarked one after the other cannot show a difference of 3 %. Here each build runs as a
worker process (its own checkout's ``.venv``), and the driver has the workers do batch k one after
the other, in an order that rotates every batch, so that a slow moment of the machine falls on every
build alike. Each worker reports the CPU seconds of its process for each batch; a build's figure is
its total over all batches, compared as a ratio of totals (and, for ``fold``, the median of the
per-batch ratios too: there batch k is the same events in every build).

``--what fold``: decode, fold and commit a generated trading day (:func:`bench.bench_fold.generate`,
encoded up front) into one LMDB store, through the policy step as the projector's consume loop drives
it (:mod:`bench.bench_reads`' hot path). ``--what projector``: the real projector
(:class:`projector.runner.Projector`: consume from Kafka, decode, fold, durable commit per partition
per batch) over one topic of simulated events that every build reads, each with its own consumer
group and state; a pass ends when a build has caught up.

    .venv/bin/python -m bench.lockstep --what projector --build without=/tmp/b-without --build with=. \\
        --events 300000 --passes 3

Every checkout needs ``bench/lockstep.py`` (the worker is this module). Writes
``bench/results/lockstep-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bench.results_file import write_results

if TYPE_CHECKING:
    from projector.runner import Progress

BATCH = 5_000


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _command() -> str:
    """The driver's next line; empty once it has closed the pipe."""
    return sys.stdin.readline().strip()


def _expect_batch() -> None:
    command = _command()
    if command != "batch":
        raise SystemExit(f"expected batch, got {command!r}")


class _BatchReport:
    """The projector's ``on_batch``: answer the batch's CPU seconds and events, then wait for the
    driver's next ``batch``."""

    def __init__(self) -> None:
        self.cpu = _cpu()
        self.events = 0

    def __call__(self, progress: Progress) -> None:
        events = progress.applied + progress.dead_letters
        print(f"{_cpu() - self.cpu:.6f} {events - self.events}", flush=True)
        _expect_batch()
        self.cpu, self.events = _cpu(), events


def fold_worker(events: int, seed: int, scratch: Path) -> None:
    """``start`` opens a fresh store; each ``batch`` folds the next batch and answers
    ``<CPU seconds> <events>``, or ``end`` when the stream is done."""
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
    print("ready", flush=True)
    with ExitStack() as stack:
        number = 0
        while command := _command():
            if command != "start":
                raise SystemExit(f"expected start, got {command!r}")
            number += 1
            root = scratch / f"pass{number}"
            directory = StateDirectory.open(
                root / "state", load_settings(environ={"REWIND_HOME": str(root)}), durable=False
            )
            stack.callback(directory.close)
            store, cache, offset, position = directory.store("events-p0000"), EntityCache(), -1, 0
            print("ok", flush=True)
            while True:
                _expect_batch()
                batch = values[position : position + BATCH]
                position += len(batch)
                if not batch:
                    print("end", flush=True)
                    break
                started = _cpu()
                state = LmdbPartitionState(store, cache)
                step = EventsStep(state, 0, offset=offset)
                for value in batch:
                    step.record(value, step.offset + 1)
                offset = step.offset
                store.commit(state.changes(), offset, len(batch))
                print(f"{_cpu() - started:.6f} {len(batch)}", flush=True)


def projector_worker(partitions: int, scratch: Path) -> None:
    """``start`` makes a projector with a fresh state and consumer group (topics and broker from the
    REWIND_* environment); each ``batch`` lets it consume and apply one batch and answers
    ``<CPU seconds> <events>``, or ``end`` once it has caught up."""
    from projector.gc_tuning import tune_gc_for_projection
    from projector.runner import Projector
    from rewind.ground.settings import load_settings

    tune_gc_for_projection()
    print("ready", flush=True)
    number = 0
    while command := _command():
        if command != "start":
            raise SystemExit(f"expected start, got {command!r}")
        number += 1
        environ = dict(os.environ) | {"REWIND_PROJECTOR_GROUP": f"lockstep-{os.getpid()}-{number}"}
        settings = load_settings(environ=environ)
        projector = Projector(settings, range(partitions), state_dir=scratch / f"pass{number}")
        print("ok", flush=True)
        _expect_batch()
        report = _BatchReport()
        try:
            projector.run(until_caught_up=True, on_batch=report)
        finally:
            projector.close()
        print("end", flush=True)


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


def _builds(specs: list[str] | None) -> dict[str, Path]:
    builds: dict[str, Path] = {}
    for spec in specs or []:
        name, _, path = spec.partition("=")
        if not name or not path:
            raise SystemExit(f"--build {spec!r}: expected NAME=PATH")
        builds[name] = Path(path).resolve()
    if len(builds) < 2:
        raise SystemExit("give at least two --build NAME=PATH")
    return builds


def drive(workers: dict[str, subprocess.Popen[str]], passes: int) -> dict[str, list[tuple[float, int]]]:
    """Every pass: start each worker, then batch by batch in rotating order until all have ended."""
    batches: dict[str, list[tuple[float, int]]] = {name: [] for name in workers}
    for process in workers.values():
        assert process.stdout is not None
        _answer(process.stdout)
    names = list(workers)
    turn = 0
    for _ in range(passes):
        for process in workers.values():
            _ask(process, "start")
        running = list(names)
        while running:
            turn += 1
            start = turn % len(running)
            for name in running[start:] + running[:start]:
                answer = _ask(workers[name], "batch")
                if answer == "end":
                    running.remove(name)
                    continue
                seconds, events = answer.split()
                batches[name].append((float(seconds), int(events)))
    for process in workers.values():
        assert process.stdin is not None
        process.stdin.close()
        process.wait(120)
    return batches


def report(what: str, batches: dict[str, list[tuple[float, int]]], passes: int) -> dict[str, object]:
    names = list(batches)
    base = names[0]
    summary: dict[str, object] = {"what": what, "passes": passes, "builds": {}}
    base_seconds = sum(seconds for seconds, _ in batches[base])
    print(f"{what}: {passes} passes; CPU seconds of each build's process over all its batches")
    for name in names:
        seconds = sum(s for s, _ in batches[name])
        events = sum(e for _, e in batches[name])
        entry: dict[str, object] = {
            "seconds": round(seconds, 4),
            "events": events,
            "events_per_cpu_s": round(events / seconds),
            "batches": batches[name],
        }
        line = (
            f"{name:>12}: {seconds:7.2f} s, {events:,} events, {events / seconds:,.0f} events per CPU-second"
        )
        if name != base:
            entry[f"throughput_vs_{base}"] = round(base_seconds / seconds, 4)
            line += f"; throughput / {base}: {base_seconds / seconds:.3f}"
            if what == "fold":
                ratios = [b / a for (a, _), (b, _) in zip(batches[name], batches[base], strict=True)]
                entry[f"median_batch_ratio_vs_{base}"] = round(statistics.median(ratios), 4)
                line += f" (median of batches {statistics.median(ratios):.3f})"
        print(line)
        summary["builds"][name] = entry  # type: ignore[index]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--what", choices=["fold", "projector"], default="fold")
    parser.add_argument("--build", action="append", metavar="NAME=PATH", help="a build to compare (repeat)")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=12, help="projector: partitions of the topic")
    parser.add_argument("--bootstrap", help="projector: an existing broker (default: start a local one)")
    parser.add_argument("--passes", type=int, default=3, help="runs over the whole stream, each from scratch")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        if args.what == "fold":
            fold_worker(args.events, args.seed, args.worker)
        else:
            projector_worker(args.partitions, args.worker)
        return
    builds = _builds(args.build)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rewind-lockstep-")))
        environ = dict(os.environ)
        if args.what == "projector":
            from bench.harness import bench_broker, bench_topics, produce

            bootstrap, _ = stack.enter_context(bench_broker(args.bootstrap))
            settings = stack.enter_context(
                bench_topics(bootstrap, scratch, args.partitions, REWIND_PROJECTOR_BATCH_EVENTS=str(BATCH))
            )
            produce(settings, args.events, seed=args.seed)
            environ |= {
                "REWIND_BOOTSTRAP": bootstrap,
                "REWIND_TOPICS_EVENTS": settings.events_topic,
                "REWIND_TOPICS_CONFIG": settings.config_topic,
                "REWIND_TOPICS_DEADLETTER": settings.deadletter_topic,
                "REWIND_TOPICS_PARTITIONS": str(args.partitions),
                "REWIND_PROJECTOR_BATCH_EVENTS": str(BATCH),
            }
        workers = {}
        for name, path in builds.items():
            home = scratch / name
            command = [str(path / ".venv" / "bin" / "python"), "-m", "bench.lockstep", "--what", args.what]
            command += ["--worker", str(home), "--events", str(args.events), "--seed", str(args.seed)]
            command += ["--partitions", str(args.partitions)]
            workers[name] = stack.enter_context(
                subprocess.Popen(
                    command,
                    cwd=path,
                    env=environ | {"REWIND_HOME": str(home)},
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        batches = drive(workers, args.passes)
    summary = report(args.what, batches, args.passes)
    write_results(f"lockstep-{args.what}", summary)


if __name__ == "__main__":
    main()
