"""rewind beside its peers, Kafka Streams and Faust: the same fold of the same events, one run.

One topic is produced once with rewind's simulator; then, for each system in turn (never two at
once, so none competes with another for the cores):

(a) projection: a fresh application folds the whole topic; wall time from process start until every
    partition reaches the log end, and events per CPU-second of the process (JVM start and JIT
    included for Kafka Streams; interpreter start and imports for rewind and Faust);
(b) recovery: a fresh application is SIGKILLed when ``--tail`` events remain, then started again on
    its own state; the time from the restart until it has caught up and serves the final state.
    Kafka Streams' restores are logged (store, changelog offsets, records, seconds): under
    exactly-once a task that was not closed cleanly has its store wiped and rebuilt from the
    changelog;
(c) state on disk (local directories after (a); changelog records on the broker for the peers) and
    peak resident memory (of the (a) process);
(d) the state as of an hour ago (event time: ``occurred_at`` of the last event minus ``--ago``):
    rewind builds it with time travel (``replayer.timetravel``) from snapshots taken at the
    service's cadence during a separate projection; the peers have no time travel, so the figure
    for them is the replay it would take (their (a) start-up, then the events up to the point at
    their steady (a) rate), an estimate, not a run.

A peer may be given a time budget per pass (``--peer-seconds``): a pass it has not finished by then
is stopped there. Its throughput is then its rate over what it did (events applied over elapsed
time, from its own report), and its state is cross-checked against rewind's state at exactly the
offsets it had applied, which rewind builds with its own time travel. For (b) the kill lands at the
planned point or at the budget, whichever comes first, and the restart has the same budget. Every
figure from a stopped pass is marked ``bounded`` in the JSON and with a dagger in the table.

After every run the system's final orders, positions and balances must equal rewind's
(bench/peers/crosscheck.py), or the benchmark stops. Results: bench/results/peers-<time>.json and a
markdown table beside it. Commands: bench/peers/README.md.

    .venv/bin/python -m bench.peers.run_peers --bootstrap 127.0.0.1:9092
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.harness import bench_broker, bench_topics, produce
from bench.peers.crosscheck import (
    Export,
    differences,
    load_export,
    points_at_offsets,
    rewind_export,
    rewind_export_at,
    summary,
)
from projector.state_directory import StateDirectory
from projector.store import CONFIG_DIR_NAME, partition_dir_name
from replayer.timetravel import build_state_at
from rewind.ground.settings import Settings
from rewind.service import REWIND
from schemas.codec import default_codec
from snapshotter.snapshot import take_snapshot

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = ROOT / "bench" / "results"
STREAMS_DIR = HERE / "streams"
FAUST_DIR = HERE / "faust"
FAUST_PYTHON = FAUST_DIR / ".venv" / "bin" / "python"
FAUST_TABLES = ("orders", "fills", "positions", "balances")
JSON_LINE = re.compile(r"(\{\".*\})\s*$")
SYSTEMS = ("rewind", "kafka_streams", "faust")
DEFAULT_PEER_SECONDS = "faust=120"


@dataclasses.dataclass
class Run:
    """One process of one system: what the runner saw of it."""

    system: str
    events: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_kb: int = 0
    lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    killed_at: int | None = None
    budget_s: float | None = None
    bounded: bool = False
    serving: bool | None = None
    offsets: dict[int, int] | None = None

    def row(self) -> dict[str, Any]:
        progress = [line for line in self.lines if "progress" in line]
        if self.bounded and progress:
            progress.append({"progress": self.events, "t": round(self.wall_s, 3)})
        steady = None
        if len(progress) >= 2 and progress[-1]["t"] > progress[0]["t"]:
            first, last = progress[0], progress[-1]
            steady = round((last["progress"] - first["progress"]) / (last["t"] - first["t"]))
        return {
            "first_progress_s": progress[0]["t"] if progress else None,
            "steady_events_per_s": steady,
            "events": self.events,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "events_per_s": round(self.events / self.wall_s) if self.wall_s else None,
            "events_per_cpu_s": round(self.events / self.cpu_s) if self.cpu_s else None,
            "peak_rss_mb": round(self.peak_rss_kb / 1024, 1),
            "bounded": self.bounded,
            **({"peer_seconds": self.budget_s} if self.budget_s else {}),
        }


def log(text: str) -> None:
    print(text, flush=True)


def du_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def wait_child(process: subprocess.Popen[str]) -> tuple[int, float, int]:
    """(exit status, CPU seconds, peak RSS KB) of a finished child, from the kernel's accounting."""
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


# -- building -------------------------------------------------------------------------------------


def build(force: bool) -> None:
    """The Kafka Streams jar (Maven) and the Faust virtualenv, unless they are there already."""
    if force or not (STREAMS_DIR / "target" / "classes").exists():
        log("building the Kafka Streams peer (mvn package) ...")
        subprocess.run(["mvn", "-q", "-B", "package"], cwd=STREAMS_DIR, check=True)
    if force or not FAUST_PYTHON.exists():
        log("creating the Faust peer's virtualenv ...")
        subprocess.run([sys.executable, "-m", "venv", str(FAUST_DIR / ".venv")], check=True)
        subprocess.run(
            [str(FAUST_PYTHON), "-m", "pip", "install", "-q", "-r", str(FAUST_DIR / "requirements.txt")],
            check=True,
        )


# -- the three systems, as commands -----------------------------------------------------------------


@dataclasses.dataclass
class System:
    """How to start one system on one state directory, and how it reports."""

    name: str
    command: list[str]
    environ: dict[str, str]
    state: Path
    export: Path | None
    log_path: Path


def rewind_system(
    settings: Settings, state: Path, scratch: Path, until_caught_up: bool, batch_events: int | None = None
) -> System:
    command = [REWIND, "project", "--json", "--no-progress", "--state", str(state)]
    if until_caught_up:
        command.append("--until-caught-up")
    if batch_events is not None:
        command += ["--batch-events", str(batch_events)]
    return System("rewind", command, settings.child_environ(), state, None, scratch / f"{state.name}.log")


def streams_system(
    bootstrap: str,
    topic: str,
    app_id: str,
    scratch: Path,
    every: int,
    static: bool = False,
    deadline_s: float | None = None,
) -> System:
    state = scratch / app_id
    classpath = f"{STREAMS_DIR / 'target' / 'classes'}:{STREAMS_DIR / 'target' / 'lib'}/*"
    command = [
        "java",
        "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-cp",
        classpath,
        "rewind.peers.PeerMain",
        *("--bootstrap", bootstrap, "--topic", topic, "--app-id", app_id),
        *("--state-dir", str(state), "--schemas", str(ROOT / "schemas")),
        *("--export", str(scratch / f"{app_id}.json"), "--progress-every", str(every)),
        *(("--instance-id", f"{app_id}-instance") if static else ()),
        *(("--deadline-s", str(deadline_s)) if deadline_s else ()),
    ]
    return System(
        "kafka_streams",
        command,
        dict(os.environ),
        state,
        scratch / f"{app_id}.json",
        scratch / f"{app_id}.log",
    )


def faust_system(
    bootstrap: str,
    topic: str,
    partitions: int,
    app_id: str,
    scratch: Path,
    every: int,
    args: argparse.Namespace,
    deadline_s: float | None = None,
) -> System:
    state = scratch / app_id
    state.mkdir(parents=True, exist_ok=True)
    environ = dict(os.environ) | {
        "PEER_BOOTSTRAP": bootstrap,
        "PEER_TOPIC": topic,
        "PEER_PARTITIONS": str(partitions),
        "PEER_APP_ID": app_id,
        "PEER_DATA_DIR": str(state),
        "PEER_SCHEMAS": str(ROOT / "schemas"),
        "PEER_EXPORT": str(scratch / f"{app_id}.json"),
        "PEER_STORE": args.faust_store,
        "PEER_GUARANTEE": args.faust_guarantee,
        "PEER_PROGRESS_EVERY": str(every),
        **({"PEER_DEADLINE_S": str(deadline_s)} if deadline_s else {}),
    }
    command = [str(FAUST_PYTHON), str(FAUST_DIR / "peer_faust.py"), "worker", "--loglevel=warn"]
    return System("faust", command, environ, state, scratch / f"{app_id}.json", scratch / f"{app_id}.log")


def create_faust_changelogs(admin: AdminClient, app_id: str, partitions: int) -> None:
    """Faust's changelog topics, made before its worker starts: a worker that creates them itself
    can read stale metadata and crash its agent on the first table write (PartitionsMismatch)."""
    topics = [
        NewTopic(f"{app_id}-{t}-changelog", partitions, 1, config={"cleanup.policy": "compact"})
        for t in FAUST_TABLES
    ]
    for future in admin.create_topics(topics).values():
        future.result()


def lines_of(stream: IO[str], sink: IO[str]) -> Iterator[dict[str, Any]]:
    """The JSON lines a peer prints (Faust's may arrive inside its log lines), every line logged."""
    for line in stream:
        sink.write(line)
        match = JSON_LINE.search(line)
        if match:
            with suppress(ValueError):
                yield json.loads(match.group(1))


def run_peer(
    system: System,
    kill_at: int | None = None,
    kill_after_s: float | None = None,
    budget_s: float | None = None,
) -> Run:
    """Start a peer, follow its JSON lines until "done" or "bounded" (its own stop at the time
    budget ``budget_s`` it was started with), or SIGKILL it once its progress reaches ``kill_at``
    or ``kill_after_s`` seconds have passed; let it export and exit."""
    run = Run(system.name, budget_s=budget_s)
    started = time.perf_counter()
    with system.log_path.open("a") as sink:
        process = subprocess.Popen(
            system.command,
            env=system.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        assert process.stdout is not None
        seen = {"progress": 0}
        timer = None
        if kill_after_s is not None:

            def kill_on_time() -> None:
                if process.poll() is None and run.killed_at is None:
                    run.killed_at = seen["progress"]
                    run.wall_s = time.perf_counter() - started
                    process.send_signal(signal.SIGKILL)

            timer = threading.Timer(kill_after_s, kill_on_time)
            timer.start()
        for line in lines_of(process.stdout, sink):
            line["t"] = round(time.perf_counter() - started, 3)
            run.lines.append(line)
            seen["progress"] = max(seen["progress"], int(line.get("progress", 0)))
            if run.killed_at is not None:
                break
            if kill_at is not None and line.get("progress", 0) >= kill_at:
                process.send_signal(signal.SIGKILL)
                run.killed_at = int(line["progress"])
                run.wall_s = time.perf_counter() - started
                break
            if line.get("bounded"):
                run.wall_s = time.perf_counter() - started
                run.events = int(line["processed"])
                run.cpu_s = float(line["cpu_s"])
                run.bounded = True
                run.serving = bool(line["serving"])
                run.offsets = {int(p): int(n) for p, n in line["offsets"].items()}
            if line.get("done"):
                run.wall_s = time.perf_counter() - started
                run.events = int(line["processed"])
                run.cpu_s = float(line["cpu_s"])
            if "error" in line:
                process.kill()
        for line in lines_of(process.stdout, sink):
            run.lines.append(line)
        code, cpu, peak = wait_child(process)
        if timer is not None:
            timer.cancel()
    run.peak_rss_kb = peak
    if run.killed_at is None and (code != 0 or not run.wall_s):
        raise SystemExit(f"{system.name} failed (exit {code}); its log: {system.log_path}")
    if run.killed_at is not None:
        run.cpu_s = cpu
    return run


def rewind_progress(state: Path, partitions: int) -> int:
    """Events applied so far to the events partitions of a state directory another process writes."""
    try:
        with StateDirectory.open_readonly(state) as directory:
            present = set(directory.partitions())
            return sum(directory.partition(p).offset() + 1 for p in range(partitions) if p in present)
    except Exception:  # the projector has not laid the directory out yet
        return 0


def run_rewind(system: System, partitions: int, kill_at: int | None = None) -> Run:
    """``rewind project`` as a command: to the end (``--until-caught-up``), or SIGKILLed once its
    committed state holds ``kill_at`` events."""
    run = Run(system.name)
    started = time.perf_counter()
    with system.log_path.open("a") as sink:
        process = subprocess.Popen(
            system.command, env=system.environ, stdout=subprocess.PIPE, stderr=sink, text=True, cwd=ROOT
        )
        if kill_at is not None:
            while process.poll() is None:
                done = rewind_progress(system.state, partitions)
                if done >= kill_at:
                    process.send_signal(signal.SIGKILL)
                    run.killed_at = done
                    break
                time.sleep(0.02)
        assert process.stdout is not None
        out = process.stdout.read()
        code, cpu, peak = wait_child(process)
    run.wall_s = time.perf_counter() - started
    run.cpu_s, run.peak_rss_kb = cpu, peak
    if run.killed_at is None:
        if code != 0:
            raise SystemExit(f"rewind project failed (exit {code}); its log: {system.log_path}")
        report = json.loads(out)
        run.events = int(report["applied"]) + int(report["dead_letters"])
        run.lines.append(report)
    return run


# -- measurements ---------------------------------------------------------------------------------


def check_equal(label: str, expected: Export, got: Export) -> None:
    found = differences(expected, got)
    if found:
        raise SystemExit(f"cross-check FAILED for {label}:\n  " + "\n  ".join(found))
    log(f"  cross-check {label}: equal to rewind {summary(got)}")


def log_ends(state: Path) -> dict[int, int]:
    """Per partition of the events topic, the events rewind applied: the log end after (a)."""
    with StateDirectory.open_readonly(state) as directory:
        return {p: directory.partition(p).offset() + 1 for p in directory.partitions()}


def check_at_offsets(
    label: str, settings: Settings, scratch: Path, run: Run, ends: dict[int, int], export: Path
) -> tuple[list[str], int]:
    """A bounded pass's export against rewind's state at exactly the offsets it had applied (built
    by time travel); the differences (empty: equal) and the events those offsets cover."""
    if run.offsets is None:
        raise SystemExit(f"{label}: a bounded pass reported no offsets")
    points = points_at_offsets(run.offsets, ends)
    out = scratch / ("rewind-at-" + re.sub(r"[^a-z0-9]+", "-", label).strip("-"))
    expected = rewind_export_at(settings, out, points)
    return differences(expected, load_export(export), limit=5), sum(points.values())


def changelog_records(admin: AdminClient, bootstrap: str, prefix: str) -> int:
    """Records held by the changelog topics whose names start with ``prefix``."""
    names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix) and "changelog" in n]
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "peers-watermarks", "enable.auto.commit": False}
    )
    total = 0
    try:
        for name in names:
            metadata = admin.list_topics(name, timeout=10).topics[name]
            for p in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                total += high - low
    finally:
        consumer.close()
    return total


def occurred_at(consumer: Consumer, topic: str, partition: int, offset: int) -> int:
    decode = default_codec().decode
    consumer.assign([TopicPartition(topic, partition, offset)])
    while True:
        message = consumer.poll(10.0)
        if message is None:
            raise SystemExit(f"{topic}[{partition}] offset {offset}: no record within 10 s")
        if message.error() is None:
            return int(decode(message.value())["occurred_at"])


def events_before(consumer: Consumer, topic: str, partition: int, end: int, moment: int) -> int:
    """How many of a partition's first records have ``occurred_at <= moment`` (binary search: the
    simulator's clock only moves forward, so each partition's times ascend)."""
    low, high = 0, end
    while low < high:
        middle = (low + high) // 2
        if occurred_at(consumer, topic, partition, middle) <= moment:
            low = middle + 1
        else:
            high = middle
    return low


def hour_ago_points(settings: Settings, ends: dict[str, int], ago_s: int) -> tuple[dict[str, int], int]:
    """Per store, the events logged up to ``ago_s`` (event time) before the last event; and their sum."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.client_config()["bootstrap.servers"],
            "group.id": "peers-points",
            "enable.auto.commit": False,
        }
    )
    try:
        last = max(
            occurred_at(consumer, *source, end - 1) for source, end in topics_of(settings, ends) if end > 0
        )
        moment = last - ago_s * 1_000_000
        points = {
            store: events_before(consumer, *source, end, moment)
            for (source, end), store in zip(topics_of(settings, ends), ends, strict=True)
        }
    finally:
        consumer.close()
    return points, sum(v for k, v in points.items() if k != CONFIG_DIR_NAME)


def topics_of(settings: Settings, ends: dict[str, int]) -> list[tuple[tuple[str, int], int]]:
    found = []
    for store, end in ends.items():
        if store == CONFIG_DIR_NAME:
            found.append(((settings.config_topic, 0), end))
        else:
            found.append(((settings.events_topic, int(store.rsplit("p", 1)[1])), end))
    return found


def project_with_snapshots(settings: Settings, state: Path, partitions: int, every: int) -> None:
    """rewind's projection with a snapshot of every store each ``every`` events, as the service does."""
    from projector.runner import Projector

    projector = Projector(settings, range(partitions), state_dir=state, commit_group=False)
    done = {"since": 0}

    def on_batch(_progress: object) -> None:
        if projector.progress.applied - done["since"] >= every:
            done["since"] = projector.progress.applied
            for name in projector.directory.store_names():
                take_snapshot(projector.directory.store(name), settings.snapshot_dir, name)

    try:
        projector.run(until_caught_up=True, on_batch=on_batch)
    finally:
        projector.close()


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"


def table(result: dict[str, Any]) -> str:
    """The markdown table of one run, with rewind's ratio to each peer."""
    a, b, c, d = result["a"], result["b"], result["c"], result["d"]
    names = {"rewind": "rewind", "kafka_streams": "Kafka Streams", "faust": "Faust"}
    head = "| | " + " | ".join(names[s] for s in SYSTEMS) + " | rewind vs Kafka Streams | rewind vs Faust |"
    rows = [head, "|---|---:|---:|---:|---:|---:|"]

    bounded_a = {s for s in SYSTEMS if a.get(s, {}).get("bounded")}
    bounded_b = {s for s in SYSTEMS if b.get(s, {}).get("bounded")}

    def add(
        label: str,
        values: dict[str, Any],
        fmt: Callable[[Any], str],
        better: str,
        marked: set[str] = bounded_a,
    ) -> None:
        cells = [fmt(values.get(s)) + (" †" if s in marked else "") for s in SYSTEMS]
        r = values.get("rewind")
        ratios = []
        for peer in ("kafka_streams", "faust"):
            p = values.get(peer)
            ratios.append(ratio(r, p) if better == "higher" else ratio(p, r))
        rows.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")

    def num(v: Any) -> str:
        return "n/a" if v is None else f"{v:,}"

    def sec(v: Any) -> str:
        return "n/a" if v is None else f"{v:.2f} s"

    def mb(v: Any) -> str:
        return "n/a" if v is None else f"{v:,.1f} MB"

    add("(a) events/s (wall)", {s: a.get(s, {}).get("events_per_s") for s in SYSTEMS}, num, "higher")
    add(
        "(a) events per CPU-second", {s: a.get(s, {}).get("events_per_cpu_s") for s in SYSTEMS}, num, "higher"
    )
    add(
        "(b) restart after SIGKILL -> correct state",
        {s: b.get(s, {}).get("restart_s") for s in SYSTEMS},
        sec,
        "lower",
        bounded_b,
    )
    add("(c) state on disk (local)", {s: c.get(s, {}).get("disk_mb") for s in SYSTEMS}, mb, "lower")
    add("(c) peak RSS of the (a) process", {s: a.get(s, {}).get("peak_rss_mb") for s in SYSTEMS}, mb, "lower")
    add(
        f"(d) state as of {d.get('ago_s')} s ago",
        {s: d.get(s, {}).get("seconds") for s in SYSTEMS},
        sec,
        "lower",
    )
    rows.append("")
    rewind_restart = b.get("rewind", {}).get("restart_s")
    for name, label in (("kafka_streams", "default"), ("kafka_streams_static", "static membership")):
        row = b.get(name)
        if row and not row.get("bounded"):
            rows.append(
                f"(b) Kafka Streams ({label}): restart {row['restart_to_done_s']} s "
                f"({ratio(row['restart_s'], rewind_restart)} rewind's), first restore at "
                f"{row.get('first_restore_s')} s, {row.get('restored_records')} changelog records restored, "
                f"{row.get('stores_restored_from_offset_0')} stores rebuilt from changelog offset 0, "
                f"state {row['state_after_restart']}."
            )
    for name, row in b.items():
        if row.get("bounded"):
            who = names[name.removesuffix("_static")] + (" (static membership)" if "static" in name else "")
            first = (
                "" if row["first_progress_s"] is None else f", first progress at {row['first_progress_s']} s"
            )
            if row.get("correct_again_s") is not None:
                first += f": serving state correct at its offsets from {row['correct_again_s']} s"
            rows.append(
                f"(b) {who} †: "
                f"killed at {row['killed_at_events']:,} events ({row['killed_by']}); the restart did not "
                f"catch up within its {row.get('peer_seconds')} s budget ({row['applied_after_restart']:,} "
                f"events applied after it{first}); state when stopped: {row['state_after_restart']}."
            )
    faust = b.get("faust")
    if faust and not faust.get("bounded"):
        rows.append(
            f"(b) Faust: restart {faust['restart_to_done_s']} s, state {faust['state_after_restart']}."
        )
    for name in sorted(bounded_a):
        row = a[name]
        rows.append(
            f"† {names[name]}: (a) stopped at its {row.get('peer_seconds')} s budget after "
            f"{row['events']:,} of {result['events_topic_records']:,} events "
            f"(steady {num(row['steady_events_per_s'])}/s); its rates are over what it applied, (c) is "
            f"its state at that point, (d) is extrapolated from its rate; cross-check: "
            f"{result['cross_check'][name]}."
        )
    rows.append(
        "(d) rewind: time travel from snapshots; Kafka Streams and Faust have no time travel: their "
        "figure is the replay it would take (start-up, then the events up to the point at their "
        "steady (a) rate), an estimate, not a run. "
        "Ratios: how many times rewind is faster (or smaller). (b) n/a for a peer whose state after "
        "the restart differed from rewind's (see the JSON: state_after_restart, differences_sample)."
    )
    return "\n".join(rows)


def peer_budgets(text: str) -> dict[str, float | None]:
    """``"60"`` -> every peer 60 s; ``"faust=60,kafka_streams=0"`` -> per peer (0: no budget)."""
    found: dict[str, float | None] = {}
    for part in text.split(","):
        name, sep, value = part.strip().rpartition("=")
        names = [name] if sep else ["kafka_streams", "faust"]
        if sep and name not in ("kafka_streams", "faust"):
            raise argparse.ArgumentTypeError(f"'{name}' is not a peer (kafka_streams, faust)")
        try:
            seconds = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{part}' is not N or PEER=N (seconds)") from None
        if seconds < 0:
            raise argparse.ArgumentTypeError(f"'{part}': a budget cannot be negative")
        for one in names:
            found[one] = seconds or None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="existing broker (default: start a local one in a temp dir)")
    parser.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="~290k orders at the default, which fits a 15-minute run (3,800,000: ~1M orders)",
    )
    parser.add_argument("--tail", type=int, default=100_000, help="(b): events left when the kill lands")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--snapshot-every", type=int, default=100_000, help="(d): rewind's cadence")
    parser.add_argument(
        "--ago", type=int, default=3600, help="(d): seconds of event time before the last event"
    )
    parser.add_argument("--progress-every", type=int, default=10_000, help="peers' progress lines")
    parser.add_argument("--faust-store", default="rocksdb://", choices=["rocksdb://", "memory://"])
    parser.add_argument(
        "--faust-guarantee", default="exactly_once", choices=["exactly_once", "at_least_once"]
    )
    parser.add_argument(
        "--peers", default="kafka_streams,faust", help="peers to run (default: kafka_streams,faust)"
    )
    parser.add_argument(
        "--recovery-peers", help="(b): peers whose recovery is measured (default: those of --peers)"
    )
    parser.add_argument(
        "--no-streams-static",
        dest="streams_static",
        action="store_false",
        help="(b): skip the second Kafka Streams recovery, with static membership (group.instance.id)",
    )
    parser.add_argument(
        "--peer-seconds",
        type=peer_budgets,
        default=peer_budgets(DEFAULT_PEER_SECONDS),
        metavar="N|PEER=N,...",
        help="time budget of each peer pass in seconds, for every peer (N) or per peer "
        f"(faust=60,kafka_streams=0; 0: no budget); default {DEFAULT_PEER_SECONDS}",
    )
    parser.add_argument("--only", default="abcd", help="parts to run, e.g. 'ac' ((c) comes with (a))")
    parser.add_argument("--build", action="store_true", help="rebuild the jar and the Faust venv first")
    args = parser.parse_args()
    if args.tail >= args.events:
        parser.error("--tail must be smaller than --events")
    build(args.build)
    with bench_broker(args.bootstrap) as (bootstrap, scratch):
        run(args, bootstrap, scratch)


def run(args: argparse.Namespace, bootstrap: str, scratch: Path) -> None:
    with bench_topics(bootstrap, scratch, args.partitions) as settings:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        prefix = f"peers-{uuid.uuid4().hex[:6]}"
        try:
            measure(args, settings, bootstrap, scratch, prefix, admin)
        finally:
            internal = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
            if internal:
                admin.delete_topics(internal)
            listed = admin.list_consumer_groups().result(timeout=30).valid
            groups = [g.group_id for g in listed if g.group_id.startswith(prefix)]
            if groups:
                for group, future in admin.delete_consumer_groups(groups).items():
                    try:
                        future.result()
                    except Exception as exc:
                        log(f"consumer group {group} left on the broker: {exc}")


def measure(
    args: argparse.Namespace,
    settings: Settings,
    bootstrap: str,
    scratch: Path,
    prefix: str,
    admin: AdminClient,
) -> None:
    topic = settings.events_topic
    log(f"producing {args.events:,} simulated events into {topic} ({args.partitions} partitions) ...")
    produced = produce(settings, args.events, seed=1, accounts=args.accounts)
    last = produced.last_offsets.get(topic, {})
    events_total = sum(o + 1 for o in last.values())
    result: dict[str, Any] = {
        "events": produced.events,
        "events_topic_records": events_total,
        "partitions": args.partitions,
        "accounts": args.accounts,
        "tail": args.tail,
        "faust": {"store": args.faust_store, "guarantee": args.faust_guarantee},
        "kafka_streams": {"processing_guarantee": "exactly_once_v2", "stores": "RocksDB, changelogged"},
    }
    every = args.progress_every
    budgets: dict[str, float | None] = args.peer_seconds
    result["peer_seconds"] = {name: budgets.get(name) for name in args.peers.split(",")}

    log("(a) projection: each system folds the whole topic from scratch")
    rewind_a = rewind_system(settings, scratch / "rewind-a", scratch, until_caught_up=True)
    runs: dict[str, Run] = {"rewind": run_rewind(rewind_a, args.partitions)}
    reference = rewind_export(rewind_a.state)
    log(f"  rewind: {runs['rewind'].row()} {summary(reference)}")
    ends = log_ends(rewind_a.state)
    peers_a = {
        "kafka_streams": streams_system(
            bootstrap, topic, f"{prefix}-ks-a", scratch, every, deadline_s=budgets.get("kafka_streams")
        ),
        "faust": faust_system(
            bootstrap,
            topic,
            args.partitions,
            f"{prefix}-fa-a",
            scratch,
            every,
            args,
            deadline_s=budgets.get("faust"),
        ),
    }
    create_faust_changelogs(admin, f"{prefix}-fa-a", args.partitions)
    peers_a = {name: system for name, system in peers_a.items() if name in args.peers.split(",")}
    checked: dict[str, str] = {}
    for name, system in peers_a.items():
        runs[name] = run_peer(system, budget_s=budgets.get(name))
        log(f"  {name}: {runs[name].row()}")
        assert system.export is not None
        if not runs[name].bounded:
            check_equal(f"{name} (a)", reference, load_export(system.export))
            checked[name] = "equal"
            continue
        if not runs[name].serving:
            raise SystemExit(f"{name} (a): stopped at its budget before it served any state")
        wrong, covered = check_at_offsets(f"{name} (a)", settings, scratch, runs[name], ends, system.export)
        if wrong:
            raise SystemExit(f"cross-check FAILED for {name} (a), bounded:\n  " + "\n  ".join(wrong))
        checked[name] = f"equal to rewind at the same offsets ({covered:,} of {sum(ends.values()):,} events)"
        log(f"  cross-check {name} (a): {checked[name]}")
    result["a"] = {name: run.row() for name, run in runs.items()}
    result["c"] = {
        "rewind": {"disk_mb": round(du_bytes(rewind_a.state) / 2**20, 1)},
        **{
            name: {
                "disk_mb": round(du_bytes(system.state) / 2**20, 1),
                "changelog_records": changelog_records(admin, bootstrap, system.state.name),
            }
            for name, system in peers_a.items()
        },
    }
    log(f"(c) {result['c']}")
    result["cross_check"] = checked

    if "b" in args.only:
        result["b"] = measure_recovery(args, settings, bootstrap, scratch, prefix, admin, reference)
    if "d" in args.only:
        result["d"] = measure_hour_ago(args, settings, scratch, result["a"])

    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"peers-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    if {"b", "d"} <= set(args.only):
        markdown = table(result)
        path.with_suffix(".md").write_text(markdown + "\n")
        log(markdown)
    log(f"wrote {path}")


def measure_recovery(
    args: argparse.Namespace,
    settings: Settings,
    bootstrap: str,
    scratch: Path,
    prefix: str,
    admin: AdminClient,
    reference: Export,
) -> dict[str, Any]:
    topic = settings.events_topic
    ends = log_ends(scratch / "rewind-a")
    total = sum(ends.values())
    kill_at = total - args.tail
    budgets: dict[str, float | None] = args.peer_seconds
    log(f"(b) recovery: SIGKILL with {args.tail:,} of {total:,} events left, then restart on the same state")
    found: dict[str, Any] = {}

    state = scratch / "rewind-b"
    # Batches of at most a tenth of the tail before the kill, so that it lands inside the log at
    # any scale; the restart runs with the projector's own batch size.
    small = rewind_system(
        settings, state, scratch, until_caught_up=False, batch_events=max(1, args.tail // 10)
    )
    killed = run_rewind(small, args.partitions, kill_at)
    restart = run_rewind(rewind_system(settings, state, scratch, until_caught_up=True), args.partitions)
    check_equal("rewind (b)", reference, rewind_export(state))
    found["rewind"] = {
        "killed_at_events": killed.killed_at,
        "restart_s": round(restart.wall_s, 3),
        "tail_events": restart.events,
    }
    log(f"  rewind: {found['rewind']}")

    peers: dict[str, Callable[[float | None], System]] = {
        "kafka_streams": lambda deadline: streams_system(
            bootstrap, topic, f"{prefix}-ks-b", scratch, args.progress_every, deadline_s=deadline
        ),
        "kafka_streams_static": lambda deadline: streams_system(
            bootstrap,
            topic,
            f"{prefix}-kss-b",
            scratch,
            args.progress_every,
            static=True,
            deadline_s=deadline,
        ),
        "faust": lambda deadline: faust_system(
            bootstrap,
            topic,
            args.partitions,
            f"{prefix}-fa-b",
            scratch,
            args.progress_every,
            args,
            deadline_s=deadline,
        ),
    }
    create_faust_changelogs(admin, f"{prefix}-fa-b", args.partitions)
    chosen = (args.recovery_peers or args.peers).split(",")
    for name, make in peers.items():
        if name.removesuffix("_static") not in chosen or (
            name.endswith("_static") and not args.streams_static
        ):
            continue
        budget = budgets.get(name.removesuffix("_static"))
        first = run_peer(make(None), kill_at=kill_at, kill_after_s=budget)
        system = make(budget)
        again = run_peer(system, budget_s=budget)
        assert system.export is not None
        if again.bounded and not again.serving:
            wrong = [f"still restoring when stopped at its {budget} s budget: served no state"]
        elif again.bounded:
            wrong, covered = check_at_offsets(f"{name} (b)", settings, scratch, again, ends, system.export)
        else:
            wrong = differences(reference, load_export(system.export), limit=5)
        verdict = "equal to rewind" if not wrong else "DIFFERENT: " + "; ".join(wrong)
        if again.bounded and not wrong:
            verdict += f" at the same offsets ({covered:,} of {total:,} events)"
        log(f"  cross-check {name} (b): {verdict}")
        restores = [line for line in again.lines if "restore_end" in line]
        restore_starts = [line for line in again.lines if "restore_start" in line]
        row: dict[str, Any] = {
            "killed_at_events": first.killed_at,
            "killed_by": "budget" if first.killed_at is not None and first.killed_at < kill_at else "tail",
            "bounded": again.bounded,
            **({"peer_seconds": budget} if budget else {}),
            "restart_s": round(again.wall_s, 3) if not wrong and not again.bounded else None,
            "restart_to_done_s": None if again.bounded else round(again.wall_s, 3),
            "stopped_at_budget_s": round(again.wall_s, 3) if again.bounded else None,
            "applied_after_restart": again.events,
            "state_after_restart": "no state served within the budget"
            if again.bounded and not again.serving
            else ("equal to rewind" if not wrong else "DIFFERENT")
            + (" at the same offsets" if again.bounded and not wrong else ""),
            "differences_sample": wrong,
            "tail_events": again.events,
            "first_progress_s": next((line["t"] for line in again.lines if "progress" in line), None),
        }
        # A bounded restart that was cross-checked equal at its offsets served correct state from
        # its first progress line on (it processes nothing before its state is restored).
        row["correct_again_s"] = (
            None if wrong else row["restart_s"] if not again.bounded else row["first_progress_s"]
        )
        if name.startswith("kafka_streams"):
            row["first_restore_s"] = next(
                (line["t"] for line in again.lines if "restore_start" in line), None
            )
            row["restored_records"] = sum(int(line["restored"]) for line in restores)
            row["restore_seconds_max"] = round(
                max((float(line["seconds"]) for line in restores), default=0), 3
            )
            row["stores_restored_from_offset_0"] = sum(
                1 for line in restore_starts if line["from"] == 0 and line["to"] > 0
            )
            row["restore_log"] = restore_starts + restores
            row["wipe_log_lines"] = [
                line.strip()
                for line in system.log_path.read_text(errors="replace").splitlines()
                if re.search(r"wip(e|ing)|corrupt", line, re.IGNORECASE)
            ][:20]
        found[name] = row
        shown = {
            k: v for k, v in row.items() if k not in ("restore_log", "wipe_log_lines", "differences_sample")
        }
        log(f"  {name}: {shown}")
    return found


def measure_hour_ago(
    args: argparse.Namespace, settings: Settings, scratch: Path, projection: dict[str, Any]
) -> dict[str, Any]:
    log(f"(d) the state as of {args.ago} s (event time) before the last event")
    state = scratch / "rewind-d"
    snapshots = scratch / "rewind-d-snapshots"
    in_state = dataclasses.replace(
        settings, values={**settings.values, "state.dir": str(state), "snapshots.dir": str(snapshots)}
    )
    project_with_snapshots(in_state, state, args.partitions, args.snapshot_every)
    with StateDirectory.open_readonly(state) as directory:
        ends = {partition_dir_name(p): directory.partition(p).offset() + 1 for p in directory.partitions()}
        ends[CONFIG_DIR_NAME] = directory.config().offset() + 1
    points, before = hour_ago_points(settings, ends, args.ago)
    started = time.perf_counter()
    build_state_at(in_state, scratch / "rewind-d-hour-ago", points)
    seconds = time.perf_counter() - started
    found: dict[str, Any] = {
        "ago_s": args.ago,
        "events_up_to_the_point": before,
        "points": points,
        "rewind": {"seconds": round(seconds, 3), "how": "time travel from the nearest snapshots"},
    }
    for name in ("kafka_streams", "faust"):
        if name not in projection:
            continue
        row = projection[name]
        start, rate = row["first_progress_s"], row["steady_events_per_s"] or row["events_per_s"]
        found[name] = {
            "seconds": round((start or 0) + before / rate, 3) if rate else None,
            "how": "no time travel: estimated replay into a new application, its (a) start-up "
            "(first_progress_s) plus the events up to the point at its steady (a) rate",
        }
    log(f"  {json.dumps({k: v for k, v in found.items() if k != 'points'})}")
    return found


if __name__ == "__main__":
    main()
