"""What HTTP reads cost the projector of a running ``rewind serve``, side by side in one run.

Each round starts a real ``rewind serve`` (its own REWIND_HOME, fresh topics, HTTP on a free
loopback port, snapshots off) once per arm: each setting of ``http.readers`` with the HTTP server
in the service's process (``--readers``, default ``0,2``: 0 builds state answers on a thread of the
service, 2 in two reader processes; ``http.front = false``), and "front", the HTTP front process
(``http.front = true``, left out with ``--no-front``). Each arm runs twice: with no reads ("idle",
the baseline) and under a steady ``--rate`` requests per second ("load") of
``/state/positions?account=A``, ``/state/orders/<id>``, ``/lag`` and ``/metrics`` in equal shares,
sent by a load generator in a process of its own on a fixed schedule, 16 keep-alive connections:
``--generator go`` (the default: ``bench/loadgen``, standard library only, built here with ``go
build`` into the git-ignored ``bench/loadgen/bin``) or ``--generator python`` (``http.client`` on
threads). The generator's own CPU seconds are reported per run (it competes for the same cores as
the service). ``--before CHECKOUT`` adds the arm
"before": ``rewind serve`` run from another checkout (its native modules built or copied in), so
code without these changes is measured in the same run. Settings and loads alternate within each
round (ABAB...).

Once the service has recovered (an empty log), reports lag (``/lag`` answers 200) and the load has
run for a second, the same
``--events`` simulated events, encoded once at the start, are produced into its topics as fast as a
bare producer goes, and the catch-up is the time from the first event sent to the last store's
commit of the last event (read from the stores' own offsets and commit times, not over HTTP). The
producer runs for the first part of every catch-up alike. Reported per run: catch-up seconds,
events/s, the requests answered per second during the catch-up and their p50/p99 latency;
per arm, the median load/idle ratio. Writes ``bench/results/read-load-<time>.json``.
``BENCH_READ_LOAD_ONLY=<path>`` sends only that path (``/live``: the HTTP server's own share).

    .venv/bin/python -m bench.bench_read_load --events 250000 --rate 500 --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import lmdb
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.harness import bench_broker, bench_topics, produce
from projector.runner import store_source
from projector.state_directory import StateDirectory
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from schemas.codec import default_codec

RESULTS = Path(__file__).parent / "results"
REWIND = str(Path(sys.executable).with_name("rewind"))
WARMUP_SECONDS = 1.0
LOAD_THREADS = 16

Record = tuple[str, int, bytes | None, bytes, Any]
"""(topic role "events" or "config", partition, key, value, headers) of one produced record."""


# The load generator (its own process)


def generate(base: str, rate: float, accounts: list[str], orders: list[str], seed: int) -> None:
    """Send ``rate`` requests per second to ``base`` until stdin closes; then print one JSON object:
    ``requests``, every request's [start (epoch s), seconds, status], and ``cpu_seconds``, this
    process's CPU time."""
    host, _, port = base.removeprefix("http://").partition(":")
    rng = random.Random(seed)
    due: queue.Queue[str | None] = queue.Queue()
    done: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        while (path := due.get()) is not None:
            started, clock = time.time(), time.perf_counter()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                status = 0
            with lock:
                done.append((started, time.perf_counter() - clock, status))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()

    only = os.environ.get("BENCH_READ_LOAD_ONLY")

    def path(number: int) -> str:
        if only:
            return only
        kind = number % 4
        if kind == 0:
            return f"/state/positions?account={rng.choice(accounts)}"
        if kind == 1:
            return f"/state/orders/{rng.choice(orders)}"
        return "/lag" if kind == 2 else "/metrics"

    start = time.perf_counter()
    sent = 0
    while not stop.is_set():
        ahead = start + sent / rate - time.perf_counter()
        if ahead > 0:
            stop.wait(ahead)
            continue
        due.put(path(sent))
        sent += 1
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join(5)
    with lock:
        print(json.dumps({"requests": done, "cpu_seconds": time.process_time()}), flush=True)


# The events, encoded once


def capture(bootstrap: str, settings: Settings, partitions: int, expected: int) -> list[Record]:
    """Every record the simulator produced into ``settings``' topics, as produced."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}"})
    roles = {settings.events_topic: "events", settings.config_topic: "config"}
    assignment = [TopicPartition(settings.events_topic, p, 0) for p in range(partitions)]
    assignment.append(TopicPartition(settings.config_topic, 0, 0))
    consumer.assign(assignment)
    records: list[Record] = []
    while len(records) < expected:
        for message in consumer.consume(5000, 1.0):
            if message.error() is None:
                value = message.value()
                assert value is not None
                topic, partition = message.topic(), message.partition()
                assert topic is not None and partition is not None
                records.append((roles[topic], partition, message.key(), value, message.headers()))
    consumer.close()
    return records


def replay_records(
    bootstrap: str, settings: Settings, partitions: int, records: list[Record]
) -> dict[str, int]:
    """Produce ``records`` into ``settings``' topics; the last offset of each store."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    topics = {"events": settings.events_topic, "config": settings.config_topic}
    last: dict[tuple[str, int], int] = {}

    def delivered(error: object, message: Any) -> None:
        assert error is None, error
        key = (message.topic(), message.partition())
        last[key] = max(last.get(key, -1), message.offset())

    for role, partition, key, value, headers in records:
        while True:
            try:
                producer.produce(
                    topics[role], value, key, partition=partition, headers=headers, on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush()
    stores = {}
    for name in [f"events-p{p:04d}" for p in range(partitions)] + ["config"]:
        source = store_source(settings, name)
        if source in last:
            stores[name] = last[source]
    return stores


def sample_ids(records: list[Record], count: int, seed: int) -> tuple[list[str], list[str]]:
    """Some accounts and order ids of the events, for the load's requests."""
    decode = default_codec().decode
    accounts: set[str] = set()
    orders: list[str] = []
    for role, _, _, value, _ in records:
        if role != "events":
            continue
        event = decode(value)
        accounts.add(str(event["account_id"]))
        if event["event_type"] == "OrderSubmitted" and len(orders) < count * 20:
            orders.append(str(event["order_id"]))
    rng = random.Random(seed)
    return sorted(accounts), rng.sample(orders, min(count, len(orders)))


# One run


def _offsets(state: Path, holder: dict[str, StateDirectory]) -> dict[str, tuple[int, float | None]]:
    """Each store's (offset, commit time), read read-only from the state directory."""
    try:
        directory = holder.get("dir") or StateDirectory.open_readonly(state)
        holder["dir"] = directory
        found = {}
        for name in directory.store_names():
            store = directory.store(name)
            found[name] = (store.offset(), store.committed_at())
        return found
    except lmdb.MapResizedError:
        holder.pop("dir").close()
        return {}
    except (RewindError, lmdb.Error, OSError):
        return {}


def run_once(
    args: argparse.Namespace,
    bootstrap: str,
    scratch: Path,
    records: list[Record],
    arm: str,
    load: bool,
    ids: tuple[list[str], list[str]],
) -> dict[str, Any]:
    extra = {"REWIND_SNAPSHOTS_EVERY_EVENTS": "0", "REWIND_SNAPSHOTS_EVERY_SECONDS": "0"}
    with bench_topics(bootstrap, scratch, args.partitions, **extra) as settings:
        port = _free_port()
        environ = os.environ | {
            "REWIND_BOOTSTRAP": bootstrap,
            "REWIND_HOME": str(settings.home),
            "REWIND_TOPICS_EVENTS": settings.events_topic,
            "REWIND_TOPICS_CONFIG": settings.config_topic,
            "REWIND_TOPICS_DEADLETTER": settings.deadletter_topic,
            "REWIND_TOPICS_PARTITIONS": str(args.partitions),
            **_arm_environ(arm),
            "REWIND_PROJECTOR_GROUP": f"bench-{uuid.uuid4().hex[:8]}",
            **extra,
        }
        before = arm == "before"
        service = subprocess.Popen(
            [*(_before_command() if before else [REWIND]), "serve", "--port", str(port)],
            env=environ | ({"PYTHONPATH": str(args.before)} if before else {}),
            cwd=args.before if before else None,
            stdout=subprocess.PIPE,
            stderr=(scratch / f"serve-{port}.log").open("w"),
            text=True,
        )
        generator: subprocess.Popen[str] | None = None
        try:
            assert service.stdout is not None
            for line in service.stdout:
                if line.startswith("recovered in"):
                    break
            else:
                log = (scratch / f"serve-{port}.log").read_text()[-2000:]
                raise RuntimeError(f"rewind serve exited ({service.wait()}) before recovering:\n{log}")
            threading.Thread(target=service.stdout.read, daemon=True).start()
            base = f"http://127.0.0.1:{port}"
            _wait_for_lag(base, service)
            if load:
                generator = subprocess.Popen(
                    _generator_command(args, base, ids, scratch),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            time.sleep(WARMUP_SECONDS)
            state = settings.state_dir
            started = time.time()
            targets = replay_records(bootstrap, settings, args.partitions, records)
            holder: dict[str, StateDirectory] = {}
            while True:
                found = _offsets(state, holder)
                if all(name in found and found[name][0] >= offset for name, offset in targets.items()):
                    break
                if service.poll() is not None:
                    raise RuntimeError(f"rewind serve exited ({service.returncode}) during the catch-up")
                time.sleep(0.02)
            ended = max(float(found[name][1] or 0.0) for name in targets)
            if "dir" in holder:
                holder["dir"].close()
            requests: list[tuple[float, float, int]] = []
            generator_cpu = 0.0
            if generator is not None:
                out, _ = generator.communicate("", timeout=60)
                generated = json.loads(out)
                requests = [(float(a), float(b), int(c)) for a, b, c in generated["requests"]]
                generator_cpu = float(generated["cpu_seconds"])
        finally:
            if generator is not None and generator.poll() is None:
                generator.kill()
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
    seconds = ended - started
    row: dict[str, Any] = {
        "arm": arm,
        "load": "load" if load else "idle",
        "events": len(records),
        "catch_up_seconds": round(seconds, 3),
        "events_per_s": round(len(records) / seconds),
    }
    if load:
        during = [r for r in requests if started <= r[0] <= ended]
        answered = [r for r in during if r[2] in (200, 404)]
        latencies = sorted(r[1] for r in answered) or [0.0]
        row |= {
            "requests_per_s": round(len(answered) / seconds, 1),
            "statuses": {str(s): sum(1 for r in during if r[2] == s) for s in sorted({r[2] for r in during})},
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
            "generator_cpu_seconds": round(generator_cpu, 3),
            "generator": args.generator,
        }
    text = f"{arm:<9} {row['load']:<4} {seconds:6.2f} s {row['events_per_s']:>8,} ev/s" + (
        f"  {row['requests_per_s']:6.1f} req/s p50 {row['p50_ms']:.1f} ms p99 {row['p99_ms']:.1f} ms "
        f"{row['statuses']} generator {row['generator_cpu_seconds']:.2f} CPU-s"
        if load
        else ""
    )
    print(text, flush=True)
    return row


def _wait_for_lag(base: str, service: subprocess.Popen[str]) -> None:
    """Until ``/lag`` answers 200: the service has a lag report, as a running one has."""
    host, _, port = base.removeprefix("http://").partition(":")
    while service.poll() is None:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", "/lag")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise RuntimeError(f"rewind serve exited ({service.returncode}) before reporting lag")


def _arm_environ(arm: str) -> dict[str, str]:
    """The environment of an arm: ``readers=N`` sets ``http.readers`` and serves from the service's
    process; ``front`` serves from the front process; ``before`` sets nothing."""
    if arm.startswith("readers="):
        return {"REWIND_HTTP_READERS": arm.removeprefix("readers="), "REWIND_HTTP_FRONT": "false"}
    return {"REWIND_HTTP_FRONT": "true"} if arm == "front" else {}


LOADGEN = Path(__file__).parent / "loadgen"


def build_loadgen() -> Path:
    """``bench/loadgen`` built with ``go build`` into ``bench/loadgen/bin`` (git-ignored)."""
    binary = LOADGEN / "bin" / "loadgen"
    try:
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=LOADGEN, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"error: cannot build bench/loadgen with go: {exc}\n  fix: install Go, or pass --generator python"
        ) from exc
    return binary


def _generator_command(
    args: argparse.Namespace, base: str, ids: tuple[list[str], list[str]], scratch: Path
) -> list[str]:
    """The load generator's command line (see the module's description)."""
    if args.generator == "python":
        python = [sys.executable, "-m", "bench.bench_read_load", "--generate", base]
        return [*python, "--rate", str(args.rate), "--ids", json.dumps(ids)]
    path = scratch / "load-ids.json"
    path.write_text(json.dumps({"accounts": ids[0], "orders": ids[1]}))
    only = os.environ.get("BENCH_READ_LOAD_ONLY", "")
    command = [str(args.loadgen), "-base", base, "-rate", str(args.rate), "-ids", str(path)]
    command += ["-workers", str(LOAD_THREADS), "-seed", str(os.getpid())]
    return command + (["-only", only] if only else [])


def _before_command() -> list[str]:
    """``rewind`` from the checkout on PYTHONPATH (the arm ``before``)."""
    return [sys.executable, "-c", "import sys; from rewind.cli import main; sys.exit(main())"]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="existing broker (default: start a local one in a temp dir)")
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second under load")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--readers",
        default="0,2",
        help="the http.readers settings compared, served from the service's process",
    )
    parser.add_argument(
        "--front", action=argparse.BooleanOptionalAction, default=True, help="the arm 'front' (http.front)"
    )
    parser.add_argument(
        "--generator", choices=("go", "python"), default="go", help="the load generator (go: bench/loadgen)"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="also run `rewind serve` from this checkout (its native modules built) as the arm 'before'",
    )
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        accounts, orders = json.loads(args.ids)
        generate(args.generate, args.rate, accounts, orders, seed=os.getpid())
        return
    args.loadgen = build_loadgen() if args.generator == "go" else None
    with bench_broker(args.bootstrap) as (bootstrap, scratch):
        run(args, bootstrap, scratch)


def run(args: argparse.Namespace, bootstrap: str, scratch: Path) -> None:
    with bench_topics(bootstrap, scratch, args.partitions) as source:
        print(f"producing {args.events:,} simulated events once, to replay into each run ...", flush=True)
        summary = produce(source, args.events, seed=1, accounts=args.accounts)
        records = capture(bootstrap, source, args.partitions, summary.events)
    ids = sample_ids(records, 2000, seed=1)
    arms = [f"readers={n}" for n in args.readers.split(",") if n]
    arms += (["front"] if args.front else []) + (["before"] if args.before else [])
    rows = []
    for round_number in range(args.rounds):
        print(f"round {round_number + 1} of {args.rounds}", flush=True)
        for arm in arms:
            for load in (False, True):
                rows.append(run_once(args, bootstrap, scratch, records, arm, load, ids))
    summaries = {}
    for arm in arms:
        idle = [r["catch_up_seconds"] for r in rows if r["arm"] == arm and r["load"] == "idle"]
        loaded = [r for r in rows if r["arm"] == arm and r["load"] == "load"]
        ratios = [
            r["catch_up_seconds"] / i["catch_up_seconds"]
            for r, i in zip(loaded, [r for r in rows if r["arm"] == arm and r["load"] == "idle"], strict=True)
        ]
        summaries[arm] = {
            "idle_seconds_median": round(statistics.median(idle), 3),
            "load_seconds_median": round(statistics.median(r["catch_up_seconds"] for r in loaded), 3),
            "load_over_idle_median": round(statistics.median(ratios), 3),
            "requests_per_s_median": statistics.median(r["requests_per_s"] for r in loaded),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in loaded),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in loaded),
            "generator_cpu_seconds_median": statistics.median(r["generator_cpu_seconds"] for r in loaded),
        }
        s = summaries[arm]
        print(
            f"{arm}: idle {s['idle_seconds_median']} s, under {args.rate:g} req/s "
            f"{s['load_seconds_median']} s: the catch-up takes {s['load_over_idle_median']:.2f}x "
            f"(median of paired rounds)",
            flush=True,
        )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"read-load-{time.strftime('%Y%m%dT%H%M%S')}.json"
    result = {
        "events": len(records),
        "partitions": args.partitions,
        "rate": args.rate,
        "generator": args.generator,
        "rows": rows,
        "summary": summaries,
    }
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
