"""rewind as a cluster, measured from outside: failover, graceful handoff, scale-out, in one run.

(a) failover on SIGKILL: 3 members (``rewind serve`` processes, own homes) follow a live flow; one
    account's owner is killed, and another member is asked for the account every 20 ms (redirects
    followed) until it is answered again by a live member other than the stopped owner (which, after a
    SIGTERM, still answers until it lets go). Reported: seconds until the first answer,
    and until the new owner has also applied everything the log held at the kill. The group's
    session timeout bounds the first (``--session-ms``; the broker's group.min.session.timeout.ms is
    its floor: 6000 on a stock broker, 1000 on the local broker of ``rewind kafka start``).
(b) graceful handoff on SIGTERM: the same, the owner stopped with SIGTERM (it leaves the group at once).
    The clock runs from the signal, not from the process's exit: a stopping member hands its partitions
    over first, and its final snapshot and closing happen while the others already serve them (how long
    the exit took is reported beside).

Each failover also prints a timeline: the members' log lines about the handoff (the signal, the leaving
member's release and leave, the new owners' assignment and restores), in ms after the signal.
(a2) the same as (a) without standbys: the new owner starts from its own older store, or the log start
    (or a snapshot in the remote store when one is configured).
(c) scale-out: ``--events`` preloaded events projected by 1, 2 and 3 members of a fresh group each,
    from the moment every partition is assigned until every partition is at the log end: the events
    applied in between per second (events applied while the members were still joining left out).

Without ``--bootstrap`` a broker of its own is started (session timeouts down to 1 s):

    .venv/bin/python -m bench.bench_cluster --events 2000000 --session-ms 3000
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import bench_broker, bench_topics, produce
from rewind.ground.partitioner import partition_for_key
from rewind.ground.settings import SETTINGS, Settings
from rewind.service import REWIND

RESULTS = Path(__file__).parent / "results"


def get(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    status, body, _answered_by = get_from(url, timeout)
    return status, body


def get_from(url: str, timeout: float = 2.0) -> tuple[int, Any, str]:
    """(status, body, the URL that answered after redirects were followed)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read()), str(response.geturl())
    except urllib.error.HTTPError as error:
        return error.code, None, str(error.geturl())
    except (OSError, ValueError):
        return 0, None, ""


class Member:
    def __init__(
        self,
        settings: Settings,
        scratch: Path,
        name: str,
        group: str,
        args: argparse.Namespace,
        standbys: int = 1,
    ) -> None:
        self.home = scratch / name
        self.name = name
        self.log = scratch / f"{name}.log"
        self.env = settings.child_environ() | {
            "REWIND_HOME": str(self.home),
            "REWIND_CLUSTER_ENABLED": "1",
            "REWIND_CLUSTER_GROUP": group,
            "REWIND_CLUSTER_SESSION_TIMEOUT_MS": str(args.session_ms),
            "REWIND_CLUSTER_HEARTBEAT_MS": str(args.heartbeat_ms),
            "REWIND_CLUSTER_GROUP_PROTOCOL": args.group_protocol,
            "REWIND_SNAPSHOTS_EVERY_SECONDS": "0",
            "REWIND_SNAPSHOTS_EVERY_EVENTS": "0",
            "REWIND_HTTP_PORT": "0",
            "REWIND_CLUSTER_STANDBY_REPLICAS": str(standbys),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [REWIND, "serve"], env=self.env, stdout=subprocess.PIPE, stderr=log
            )
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode()
            if line.startswith("rewind serving on "):
                self.url = line.split()[3]
                break
        else:
            raise SystemExit(f"a member did not start; see {self.log}")

    def stop(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)

    def status(self) -> dict[str, Any] | None:
        code, body = get(f"{self.url}/cluster")
        return body if code == 200 else None


def wait(what: str, predicate: Any, limit: float = 300.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"{what}: not within {limit:.0f} s")


def offsets(members: list[Member]) -> dict[int, int] | None:
    found: dict[int, int] = {}
    for member in members:
        status = member.status()
        if status is None:
            return None
        for partition, offset in status["offsets"].items():
            if offset is not None:
                found[int(partition)] = offset
    return found


def log_ends(settings: Settings, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.client_config(), "group.id": "rewind-bench"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(settings.events_topic, p), timeout=30)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def all_assigned(members: list[Member], partitions: int) -> bool:
    owned: list[int] = []
    for member in members:
        status = member.status()
        if status is None or status["group"] is None:
            return False
        if len(status["group"]["members"]) != len(members) or status["group"]["unassigned_partitions"]:
            return False
        owned += status["owned_partitions"]
    return sorted(owned) == list(range(partitions))


def failover(
    args: argparse.Namespace, settings: Settings, scratch: Path, sig: int, label: str, standbys: int = 1
) -> dict[str, Any]:
    group = f"{settings.events_topic}.{label}"
    members = [Member(settings, scratch, f"{label}-{i}", group, args, standbys) for i in range(3)]
    flow = subprocess.Popen(
        [REWIND, "simulate", "--events", str(args.flow_events), "--rate", str(args.flow_rate), "--seed", "5"],
        env=settings.child_environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for member in members:
            member.start()
        wait("3 members sharing the partitions", lambda: all_assigned(members, args.partitions))
        time.sleep(2.0)
        account = "ACC-0001"
        partition = partition_for_key(account, args.partitions)
        owner = next(m for m in members if partition in (m.status() or {}).get("owned_partitions", []))
        asker = next(m for m in members if m is not owner)
        survivors = [m for m in members if m is not owner]
        end_at_kill = log_ends(settings, args.partitions)[partition]
        signalled_at = time.time()
        killed = time.monotonic()
        exits: list[float] = []
        stopping = owner.process
        if stopping is not None:
            stopping.send_signal(sig)

            def record_exit() -> None:
                stopping.wait(60)
                exits.append(time.monotonic() - killed)

            threading.Thread(target=record_exit, daemon=True).start()

        def served_by_another() -> bool:
            status, _body, by = get_from(f"{asker.url}/state/accounts/{account}", 0.5)
            return status == 200 and not by.startswith(owner.url)

        wait("answered again by a live member", served_by_another, every=0.02)
        answered = time.monotonic() - killed
        wait(
            "the new owner caught up",
            lambda: (offsets(survivors) or {}).get(partition, -1) >= end_at_kill - 1,
            every=0.02,
        )
        caught_up = time.monotonic() - killed
        wait("the stopped member exited", lambda: bool(exits), limit=60)
        exited = exits[0]
    finally:
        flow.kill()
        for member in members:
            member.stop(signal.SIGKILL)
    row: dict[str, Any] = {
        "answered_again_seconds": round(answered, 3),
        "caught_up_seconds": round(caught_up, 3),
        "owner_exited_seconds": round(exited, 3),
        "partition": partition,
        "owner": owner.name,
        "asked": asker.name,
    }
    print(f"  {label}: {row}", flush=True)
    row["timeline"] = timeline(members, signalled_at, answered + 0.5)
    for line in row["timeline"]:
        print(f"    {line}", flush=True)
    return row


TIMELINE_MARKS = (
    "signal ",
    "released events partitions",
    "left the group",
    "assigned events partitions",
    "starting from",
    "standby for partitions",
    "handed over",
)


def timeline(members: list[Member], since: float, seconds: float) -> list[str]:
    """The members' log lines about a handoff, ``seconds`` from the wall-clock instant ``since``, each
    as ``+ms member: message`` (log lines carry local time with milliseconds)."""
    found: list[tuple[float, str]] = []
    for member in members:
        for line in member.log.read_text(errors="replace").splitlines():
            if not any(mark in line for mark in TIMELINE_MARKS):
                continue
            try:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            if since - 0.001 <= stamp <= since + seconds:
                found.append((stamp - since, f"{member.name}: {line[24:].strip()}"))
    return [f"+{offset * 1000:6.0f} ms {text}" for offset, text in sorted(found)]


def scale_out(args: argparse.Namespace, settings: Settings, scratch: Path) -> dict[str, Any]:
    ends = log_ends(settings, args.partitions)
    total = sum(ends.values())
    rows: dict[str, Any] = {}
    for count in (1, 2, 3):
        group = f"{settings.events_topic}.scale{count}"
        members = [Member(settings, scratch, f"scale{count}-{i}", group, args) for i in range(count)]
        seconds, done = time_to_project(args, members, ends)
        rows[str(count)] = {
            "seconds": round(seconds, 2),
            "events": total - done,
            "events_per_second": round((total - done) / seconds),
        }
        print(f"  {count} member(s): {rows[str(count)]}", flush=True)
    return rows


def time_to_project(
    args: argparse.Namespace, members: list[Member], ends: dict[int, int]
) -> tuple[float, int]:
    """Seconds from every partition assigned until every partition is at the log end, and how many
    events were already applied when every partition was assigned (the members start one by one)."""
    try:
        for member in members:
            member.start()
        wait(f"{len(members)} members sharing the partitions", lambda: all_assigned(members, args.partitions))
        started = time.monotonic()
        done = sum(o + 1 for o in (offsets(members) or {}).values())
        wait(
            "every partition at the log end",
            lambda: all((offsets(members) or {}).get(p, -1) >= ends[p] - 1 for p in range(args.partitions)),
            limit=3600,
            every=0.1,
        )
        return time.monotonic() - started, done
    finally:
        for member in members:
            member.stop(signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap")
    parser.add_argument("--events", type=int, default=2_000_000, help="(c): preloaded events")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--session-ms", type=int, default=3000)
    parser.add_argument("--heartbeat-ms", type=int, default=0, help="default: cluster.heartbeat_ms's")
    parser.add_argument(
        "--group-protocol",
        choices=("classic", "consumer"),
        default="classic",
        help="cluster.group_protocol (consumer: KIP-848; needs a broker whose group.consumer.min.* "
        "allow the session and heartbeat, as the broker of its own does)",
    )
    parser.add_argument("--flow-events", type=int, default=200_000, help="(a, b): the live flow's events")
    parser.add_argument(
        "--flow-rate", type=int, default=2000, help="(a, b): the live flow's events per second"
    )
    parser.add_argument("--only", default="abc")
    args = parser.parse_args()
    args.heartbeat_ms = args.heartbeat_ms or next(
        int(str(s.default)) for s in SETTINGS if s.key == "cluster.heartbeat_ms"
    )
    result: dict[str, Any] = {
        "partitions": args.partitions,
        "session_ms": args.session_ms,
        "heartbeat_ms": args.heartbeat_ms,
        "group_protocol": args.group_protocol,
        "events": args.events,
    }
    with bench_broker(args.bootstrap) as (bootstrap, scratch):
        with bench_topics(bootstrap, scratch, args.partitions) as settings:
            produce(settings, 20_000, seed=1)
            if "a" in args.only:
                print("(a) failover on SIGKILL", flush=True)
                result["a_sigkill"] = failover(args, settings, scratch, signal.SIGKILL, "kill")
                print("(a2) failover on SIGKILL without standbys", flush=True)
                result["a_sigkill_no_standby"] = failover(
                    args, settings, scratch, signal.SIGKILL, "kill-nostandby", standbys=0
                )
            if "b" in args.only:
                print("(b) graceful handoff on SIGTERM", flush=True)
                result["b_sigterm"] = failover(args, settings, scratch, signal.SIGTERM, "term")
        if "c" in args.only:
            with bench_topics(bootstrap, scratch, args.partitions) as settings_c:
                print(f"(c) scale-out over {args.events:,} events", flush=True)
                produce(settings_c, args.events, seed=2)
                result["c_scale_out"] = scale_out(args, settings_c, scratch)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
