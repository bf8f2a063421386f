"""rewind as a cluster on the real broker: members of one consumer group share the partitions, lose
and duplicate nothing when killed, and any member answers any query.

The members use a 3 s session timeout where the broker allows it (the local broker of ``rewind kafka
start`` allows 1 s), else the broker's ``group.min.session.timeout.ms`` (Kafka's default: 6 s).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from projector.runner import Projector
from projector.state_directory import StateDirectory, tables_for
from projector.store import PartitionStore, partition_dir_name
from rewind.cluster_membership import ClusterMember
from rewind.ground.errors import RewindError
from rewind.ground.partitioner import partition_for_key
from rewind.ground.settings import load_settings
from schemas.codec import decode
from tests.cli_runner import REWIND, run_rewind
from tests.http_helpers import free_port, get
from tests.kafka_helpers import read_partition
from tests.make_run import make_run, nothing_left_behind
from tests.pipeline import Pipeline
from tests.s3_server import remote_env

pytestmark = pytest.mark.kafka

SESSION_MS = 3000
PARTITIONS = 12


@functools.cache
def _session_ms(bootstrap: str) -> int:
    """:data:`SESSION_MS`, or the broker's shortest session timeout if that is longer."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource("broker", str(min(admin.list_topics(timeout=10).brokers)))
    found = admin.describe_configs([resource], request_timeout=10)[resource].result()
    return max(SESSION_MS, int(found["group.min.session.timeout.ms"].value))


@functools.cache
def _consumer_protocol_timing(bootstrap: str) -> tuple[int, int]:
    """The session timeout and heartbeat for a consumer-protocol group: :data:`SESSION_MS` and 500 ms,
    or the broker's floors if higher (Kafka's defaults: 45 s and 5 s)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource("broker", str(min(admin.list_topics(timeout=10).brokers)))
    found = admin.describe_configs([resource], request_timeout=10)[resource].result()
    return (
        max(SESSION_MS, int(found["group.consumer.min.session.timeout.ms"].value)),
        max(500, int(found["group.consumer.min.heartbeat.interval.ms"].value)),
    )


def _env(pipeline: Pipeline, home: Path, group: str) -> dict[str, str]:
    return (
        os.environ
        | pipeline.env
        | {
            "REWIND_HOME": str(home),
            "REWIND_CLUSTER_ENABLED": "1",
            "REWIND_CLUSTER_GROUP": group,
            "REWIND_CLUSTER_SESSION_TIMEOUT_MS": str(_session_ms(pipeline.bootstrap)),
            "REWIND_CLUSTER_HEARTBEAT_MS": "500",
            "REWIND_PROJECTOR_DURABLE": "0",
            "REWIND_SNAPSHOTS_EVERY_EVENTS": "0",
            "REWIND_SNAPSHOTS_EVERY_SECONDS": "0",
            "REWIND_HTTP_READERS": "0",
        }
    )


class Instance:
    """One ``rewind serve`` member with its own REWIND_HOME and port, restartable."""

    def __init__(self, pipeline: Pipeline, root: Path, index: int, group: str) -> None:
        self.home = root / f"member-{index}"
        self.port = free_port()
        self.env = _env(pipeline, self.home, group)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / f"member-{index}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [REWIND, "serve", "--port", str(self.port)], env=self.env, stdout=log, stderr=log
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)

    def status(self) -> dict[str, Any] | None:
        try:
            code, body = get(f"{self.url}/cluster")
        except OSError:
            return None
        return body if code == 200 else None


def _wait(what: str, predicate: Any, limit: float) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {limit:.0f} s")


def _all_assigned(instances: list[Instance], alive: int) -> bool:
    """Every partition owned by exactly one member, by ``alive`` members, each agreeing with itself."""
    owned: list[int] = []
    for instance in instances:
        if instance.process is None or instance.process.poll() is not None:
            continue
        status = instance.status()
        if status is None:
            return False
        owned += status["owned_partitions"]
        group = status["group"]
        if group is None or len(group["members"]) != alive or group["unassigned_partitions"]:
            return False
        described = [m["partitions"] for m in group["members"] if m["url"] == instance.url]
        if group["state"] != "STABLE" or described != [status["owned_partitions"]]:
            return False  # the coordinator and the member itself agree, and nothing is moving
    return sorted(owned) == list(range(PARTITIONS))


def _answer(url: str) -> tuple[int, Any]:
    """``url``'s answer once it is not 503 (a partition in motion answers 503 and is asked again)."""
    deadline = time.monotonic() + 30
    while True:
        code, body = get(url)
        if code != 503 or time.monotonic() > deadline:
            return code, body
        time.sleep(0.3)


def _log_ends(pipeline: Pipeline) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": pipeline.bootstrap, "group.id": "rewind-tests"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(pipeline.events, p), timeout=30)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def _caught_up(instances: list[Instance], ends: dict[int, int]) -> bool:
    offsets: dict[int, int] = {}
    for instance in instances:
        status = instance.status()
        if status is None:
            return False
        for partition, offset in status["offsets"].items():
            offsets[int(partition)] = offset
    return all(offsets.get(p, -2) == ends[p] - 1 for p in range(PARTITIONS))


def _owner_stores(instances: list[Instance]) -> dict[str, tuple[str, int, int]]:
    """Each partition's (digest, offset, events applied) from its owner's own store, the members stopped."""
    owners = {}
    for instance in instances:
        status = instance.status()
        assert status is not None
        for partition in status["owned_partitions"]:
            owners[partition] = instance
    for instance in instances:
        instance.kill(signal.SIGTERM)
    found: dict[str, tuple[str, int, int]] = {}
    for partition, instance in owners.items():
        name = partition_dir_name(partition)
        with PartitionStore(instance.home / "state" / name, tables_for(name), readonly=True) as store:
            found[name] = (store.digest(), store.offset(), store.events_applied())
    return found


def test_three_members_share_the_partitions_and_lose_nothing_under_kills(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "seed-home", partitions=PARTITIONS)
    pipeline.create_topics()
    pipeline.simulate(events=3_000, seed=19, accounts=48)
    group = f"{unique_name}.cluster"
    instances = [Instance(pipeline, tmp_path, i, group) for i in range(3)]
    flow = subprocess.Popen(
        [REWIND, "simulate", "--events", "24000", "--rate", "800", "--seed", "23", "--accounts", "48"],
        env=os.environ | pipeline.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for instance in instances:
            instance.start()
        _wait("three members sharing 12 partitions", lambda: _all_assigned(instances, 3), 90)
        chance = random.Random(1919)
        for round_ in range(3):
            victim = instances[chance.randrange(3)]
            time.sleep(chance.uniform(0.5, 3.0))
            victim.kill()
            _wait(f"round {round_}: two members own everything", lambda: _all_assigned(instances, 2), 60)
            victim.start()
            _wait(f"round {round_}: the member rejoined", lambda: _all_assigned(instances, 3), 90)
        assert flow.wait(120) == 0
        ends = _log_ends(pipeline)
        _wait("every partition projected to the log end", lambda: _caught_up(instances, ends), 90)
        _check_queries(instances, pipeline)
        stores = _owner_stores(instances)
    finally:
        flow.kill()
        for instance in instances:
            instance.kill()
    expected = pipeline.reference_digests()
    for name, (digest, offset, applied) in sorted(stores.items()):
        partition = int(name.removeprefix("events-p"))
        assert digest == expected[name], f"{name}: the owner's state differs from a full replay"
        assert offset == ends[partition] - 1
        assert applied == offset + 1, f"{name}: {applied} events applied for offsets 0-{offset}"
    replay = tmp_path / "replay"
    run_rewind(
        "project",
        "--until-caught-up",
        "--no-progress",
        "--state",
        str(replay),
        env=pipeline.env | {"REWIND_HOME": str(tmp_path / "single")},
        check=True,
    )
    with StateDirectory.open_readonly(replay) as single:
        replayed = single.digests()
    assert {name: stores[name][0] for name in stores} == {
        name: digest for name, digest in replayed.items() if name != "config"
    }


def _check_queries(instances: list[Instance], pipeline: Pipeline) -> None:
    """Every member answers for any account the same as the account's owner (redirects followed); a
    partition in motion may answer 503 for a moment, never anything else."""
    accounts = [f"ACC-{n:04d}" for n in range(1, 49)]
    for account in accounts[:12]:
        partition = partition_for_key(account, PARTITIONS)
        answers = []
        for instance in instances:
            code, body = _answer(f"{instance.url}/state/accounts/{account}")
            assert code == 200, f"{instance.url}: {account}: {code} {body}"
            answers.append(body)
        assert len({repr(a) for a in answers}) == 1, f"{account} (partition {partition}): {answers}"
    everything = [_answer(f"{instance.url}/state/positions") for instance in instances]
    assert all(code == 200 for code, _ in everything), everything
    assert len({repr(body) for _, body in everything}) == 1
    accounts_seen = {row["account_id"] for row in everything[0][1]["positions"]}
    assert len(accounts_seen) > 12
    order_id = _some_order(pipeline)
    orders = [_answer(f"{instance.url}/state/orders/{order_id}") for instance in instances]
    assert all(code == 200 and body["order_id"] == order_id for code, body in orders), orders
    assert len({repr(body) for _, body in orders}) == 1
    code, missing = _answer(f"{instances[0].url}/state/orders/no-such-order")
    assert code == 404, missing
    listed = run_rewind("cluster", "status", "--json", env=instances[0].env, check=True)
    report = json.loads(listed.stdout)
    assert len(report["members"]) == 3
    assert sorted(p for m in report["members"] for p in m["partitions"]) == list(range(PARTITIONS))
    assert all(m["url"].startswith("http://127.0.0.1:") for m in report["members"])
    assert set(report["lag"]) == {str(p) for p in range(PARTITIONS)}


def _some_order(pipeline: Pipeline) -> str:
    for message in read_partition(pipeline.bootstrap, pipeline.events, 0):
        event = decode(message.value())
        if event["event_type"] == "OrderSubmitted":
            return str(event["order_id"])
    raise AssertionError("no order in partition 0")


def test_standby_copy_is_warm_and_takeover_starts_from_it(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "seed-home", partitions=PARTITIONS)
    pipeline.create_topics()
    pipeline.simulate(events=4_000, seed=29, accounts=48)
    instances = [Instance(pipeline, tmp_path, i, f"{unique_name}.cluster") for i in range(2)]
    try:
        for instance in instances:
            instance.start()
        _wait("two members sharing 12 partitions", lambda: _all_assigned(instances, 2), 90)
        pipeline.simulate(events=4_000, seed=31, accounts=48)  # the members' own old copies fall behind
        ends = _log_ends(pipeline)

        def warm() -> bool:
            for instance, other in ((instances[0], instances[1]), (instances[1], instances[0])):
                mine, theirs = instance.status(), other.status()
                if mine is None or theirs is None:
                    return False
                standby = mine["standby"]
                if sorted(map(int, standby)) != theirs["owned_partitions"]:
                    return False
                if any(standby[str(p)]["offset"] != ends[p] - 1 for p in theirs["owned_partitions"]):
                    return False
            return True

        _wait("each member a warm standby of the other's partitions", warm, 60)

        def lag_exported() -> bool:
            code, metrics = get(f"{instances[0].url}/metrics")
            return code == 200 and 'rewind_standby_lag_messages{partition="' in metrics

        _wait("the standby lag exported", lag_exported, 30)
        survivor, victim = instances
        moved = (victim.status() or {})["owned_partitions"]
        victim.kill()
        _wait("the survivor owns everything", lambda: _all_assigned([survivor], 1), 60)
        status = survivor.status()
        assert status is not None
        starts = {p: status["restored_from"][str(p)] for p in moved}
        # nothing left to replay: the standby copy, or the survivor's own copy when no event came since
        assert all(start.endswith(f" at offset {ends[p] - 1}") for p, start in starts.items()), starts
        assert any(start.startswith("standby at offset") for start in starts.values()), starts
        _wait("every partition at the log end", lambda: _caught_up([survivor], ends), 30)
        stores = _owner_stores([survivor])
    finally:
        for instance in instances:
            instance.kill()
    expected = pipeline.reference_digests()
    for name, (digest, offset, applied) in stores.items():
        assert digest == expected[name], name
        assert applied == offset + 1, name


def test_make_run_starts_a_cluster_of_three_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    environ = {"REWIND_HTTP_PORT": str(port), "REWIND_RUN_RATE": "100", "REWIND_RUN_INSTANCES": "3"}
    with make_run(tmp_path, home, environ, 180) as run:
        urls = [f"http://127.0.0.1:{port + i}" for i in range(3)]

        def three_members() -> bool:
            owned: list[int] = []
            for url in urls:
                code, status = get(f"{url}/cluster")
                if code != 200 or status["group"] is None or len(status["group"]["members"]) != 3:
                    return False
                owned += status["owned_partitions"]
            return sorted(owned) == list(range(12))

        _wait("three members sharing the partitions", three_members, 60)
    assert run.returncode == 0, run.output
    assert "cluster of 3 members" in run.output
    assert "stopped: nothing left running" in run.output
    assert nothing_left_behind(home), "make run left processes behind"


def test_owners_ship_their_partitions_snapshots_to_the_shared_store(
    bootstrap: str, unique_name: str, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "seed-home", partitions=PARTITIONS)
    pipeline.create_topics()
    pipeline.simulate(events=3_000, seed=37, accounts=48)
    instances = [Instance(pipeline, tmp_path, i, f"{unique_name}.cluster") for i in range(2)]
    for instance in instances:
        instance.env = (
            instance.env | remote_env(s3_endpoint, s3_bucket) | {"REWIND_SNAPSHOTS_EVERY_SECONDS": "4"}
        )
    first, second = instances
    try:
        first.start()
        _wait("the first member owns everything", lambda: _all_assigned([first], 1), 120)
        second.start()
        _wait("two members sharing 12 partitions", lambda: _all_assigned(instances, 2), 120)
        pipeline.simulate(events=2_000, seed=41, accounts=48)
        ends = _log_ends(pipeline)
        _wait("every partition at the log end", lambda: _caught_up(instances, ends), 120)

        def shipped_by_owners() -> bool:
            listed = run_rewind("snapshots", "list", "--json", env=second.env, check=True)
            newest: dict[str, int] = {}
            for row in json.loads(listed.stdout):
                if row.get("location") == "remote":
                    newest[row["store"]] = max(newest.get(row["store"], -1), int(row["offset"]))
            return all(newest.get(partition_dir_name(p)) == ends[p] - 1 for p in range(PARTITIONS))

        _wait("each partition's newest remote snapshot at the log end", shipped_by_owners, 90)
    finally:
        for instance in instances:
            instance.kill()


def test_the_fence_lets_only_the_coordinators_owner_ship(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "seed-home", partitions=PARTITIONS)
    pipeline.create_topics()
    pipeline.simulate(events=1_000, seed=43, accounts=48)
    group = f"{unique_name}.cluster"
    here = Instance(pipeline, tmp_path, 0, group)
    settings = load_settings(environ=here.env)
    member = ClusterMember(settings, url="http://127.0.0.1:1")
    projector = Projector(settings, [], include_config=True)
    stop = threading.Event()
    follower = threading.Thread(target=member.follow, args=(projector, stop, None), daemon=True)
    follower.start()
    other = Instance(pipeline, tmp_path, 1, group)
    try:
        _wait("this member owns everything", lambda: member.owned() == list(range(PARTITIONS)), 60)
        paths = tuple(str(tmp_path / "snapshots" / partition_dir_name(p) / "x") for p in range(PARTITIONS))
        allowed, refused = member.fence(paths)
        assert allowed == paths and refused == []
        other.start()
        _wait("the other member took half", lambda: len(member.owned()) == PARTITIONS // 2, 60)
        _wait("the coordinator agrees", lambda: len(member.fence(paths)[0]) == PARTITIONS // 2, 30)
        allowed, refused = member.fence(paths)
        mine = {partition_dir_name(p) for p in member.owned()}
        assert {Path(p).parent.name for p in allowed} == mine
        assert len(refused) == PARTITIONS // 2
        assert all("not owned by this member" in reason for reason in refused)
        config = str(tmp_path / "snapshots" / "config" / "x")
        assert bool(member.fence((config,))[0]) == (0 in member.owned())
    finally:
        stop.set()
        follower.join(30)
        projector.close()
        other.kill()


class InProcessMember:
    """A cluster member followed on a thread of this process, so a test can stall it and ask its fence."""

    def __init__(
        self, pipeline: Pipeline, root: Path, index: int, group: str, extra: dict[str, str] | None = None
    ) -> None:
        env = Instance(pipeline, root, index, group).env | {
            "REWIND_CLUSTER_MAX_STALL_MS": str(_session_ms(pipeline.bootstrap)),
            "REWIND_CLUSTER_STANDBY_REPLICAS": "0",
            **(extra or {}),
        }
        settings = load_settings(environ=env)
        self.member = ClusterMember(settings, url=f"http://127.0.0.1:{index + 1}")
        self.projector = Projector(settings, [], include_config=True)
        self.stop = threading.Event()
        self.stall = threading.Event()
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def _on_batch(self, _progress: Any) -> None:
        if self.stall.is_set():
            self.stalled.set()
            self.release.wait(120)

    def _follow(self) -> None:
        with contextlib.suppress(RewindError):  # one that stalled out of the group reads an error on waking
            self.member.follow(self.projector, self.stop, self._on_batch)

    def close(self) -> None:
        self.release.set()
        self.stop.set()
        self.thread.join(30)
        self.projector.close()


def test_a_zombie_is_refused_by_the_group_coordinator_and_the_owner_ships(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "seed-home", partitions=PARTITIONS)
    pipeline.create_topics()
    pipeline.simulate(events=1_000, seed=59, accounts=48)
    group = f"{unique_name}.cluster"
    zombie, owner = (InProcessMember(pipeline, tmp_path, i, group) for i in range(2))
    try:
        zombie.thread.start()
        _wait(
            "the first member owns everything", lambda: zombie.member.owned() == list(range(PARTITIONS)), 60
        )
        owner.thread.start()
        _wait("the second member took half", lambda: len(owner.member.owned()) == PARTITIONS // 2, 60)
        zombie.stall.set()
        pipeline.simulate(events=500, seed=61, accounts=48)
        _wait("the first member stalled in a batch", zombie.stalled.is_set, 30)
        # past cluster.max_stall_ms the coordinator gives its partitions to the live member, while the
        # stalled one still holds them as far as it knows: a zombie
        _wait("the live member owns everything", lambda: owner.member.owned() == list(range(PARTITIONS)), 60)
        held = zombie.member.owned()
        assert held, "the zombie does not believe it holds anything; nothing to show"
        paths = tuple(str(tmp_path / "snapshots" / partition_dir_name(p) / "x") for p in held)
        # the fence's generation check is made by the member's own projector thread between two
        # batches: asked while that thread is stalled, it is made as soon as the thread goes on
        with ThreadPoolExecutor(1) as pool:
            asked = pool.submit(zombie.member.fence, paths)
            _wait("the fence's check queued", lambda: not zombie.member._consumer_calls.empty(), 10)
            zombie.release.set()
            allowed, refused = asked.result(60)
        assert allowed == ()
        assert len(refused) == len(paths)
        assert all("the group coordinator refused this member's generation" in why for why in refused), (
            refused
        )
        allowed, refused = owner.member.fence(paths)
        assert allowed == paths and refused == []
    finally:
        zombie.close()
        owner.close()


def test_a_partition_that_arrives_behind_is_served_only_once_caught_up(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "seed-home", partitions=PARTITIONS)
    pipeline.create_topics()
    pipeline.simulate(events=1_200, seed=67, accounts=48)
    ends = _log_ends(pipeline)
    member = InProcessMember(
        pipeline,
        tmp_path,
        0,
        f"{unique_name}.cluster",
        {"REWIND_PROJECTOR_BATCH_EVENTS": "10", "REWIND_CLUSTER_MAX_STALL_MS": "120000"},
    )
    member.stall.set()  # stops after its first batch of 10 events: the partitions arrived from the log start
    try:
        member.thread.start()
        _wait("the member stalled after its first batch", member.stalled.is_set, 60)
        owned = member.member.owned()
        assert owned == list(range(PARTITIONS))
        serving = member.member.serving()
        offsets = member.projector.progress.offsets
        behind = [p for p in owned if offsets[partition_dir_name(p)] < ends[p] - 1]
        assert behind, "every partition caught up in one batch of 10 events; nothing to show"
        assert serving == [p for p in owned if p not in behind]
        assert member.member.ownership()[1] == serving
        member.stall.clear()
        member.release.set()
        _wait("every partition served", lambda: member.member.serving() == list(range(PARTITIONS)), 60)
    finally:
        member.close()


def test_a_session_timeout_the_broker_refuses_is_a_clear_error(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home", partitions=PARTITIONS)
    env = pipeline.env | {
        "REWIND_CLUSTER_ENABLED": "1",
        "REWIND_CLUSTER_SESSION_TIMEOUT_MS": "10",
        "REWIND_CLUSTER_HEARTBEAT_MS": "5",
        "REWIND_HTTP_PORT": "0",
    }
    result = run_rewind("serve", env=env, timeout=60)
    assert result.returncode == 1
    assert "cluster.session_timeout_ms=10 is outside what the broker allows" in result.stderr
    assert "group.min.session.timeout.ms=" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_members_on_the_consumer_group_protocol_hand_over_exactly_on_sigterm(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "seed-home", partitions=PARTITIONS)
    pipeline.create_topics()
    pipeline.simulate(events=3_000, seed=47, accounts=48)
    session, heartbeat = _consumer_protocol_timing(bootstrap)
    instances = [Instance(pipeline, tmp_path, i, f"{unique_name}.cluster") for i in range(2)]
    for instance in instances:
        instance.env = instance.env | {
            "REWIND_CLUSTER_GROUP_PROTOCOL": "consumer",
            "REWIND_CLUSTER_SESSION_TIMEOUT_MS": str(session),
            "REWIND_CLUSTER_HEARTBEAT_MS": str(heartbeat),
        }
    survivor, leaving = instances
    try:
        for instance in instances:
            instance.start()
        _wait("two members sharing 12 partitions", lambda: _all_assigned(instances, 2), 120)
        status = survivor.status()
        assert status is not None and status["group"]["protocol"] == "consumer"
        pipeline.simulate(events=3_000, seed=53, accounts=48)
        ends = _log_ends(pipeline)

        def standby_warm() -> bool:
            mine, theirs = survivor.status(), leaving.status()
            if mine is None or theirs is None:
                return False
            standby = mine["standby"]
            return sorted(map(int, standby)) == theirs["owned_partitions"] and all(
                standby[str(p)]["offset"] == ends[p] - 1 for p in theirs["owned_partitions"]
            )

        _wait("the survivor a warm standby of the other's partitions", standby_warm, 60)
        moved = (leaving.status() or {})["owned_partitions"]
        leaving.kill(signal.SIGTERM)
        _wait("the survivor owns everything", lambda: _all_assigned([survivor], 1), 120)
        status = survivor.status()
        assert status is not None
        starts = {p: status["restored_from"][str(p)] for p in moved}
        assert all(start == f"standby at offset {ends[p] - 1}" for p, start in starts.items()), starts
        _wait("every partition at the log end", lambda: _caught_up([survivor], ends), 60)
        stores = _owner_stores([survivor])
    finally:
        for instance in instances:
            instance.kill()
    expected = pipeline.reference_digests()
    assert sorted(stores) == sorted(expected_name for expected_name in expected if expected_name != "config")
    for name, (digest, offset, applied) in stores.items():
        assert digest == expected[name], name
        assert applied == offset + 1, name


def test_a_consumer_protocol_timing_the_broker_refuses_is_a_clear_error(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home", partitions=PARTITIONS)
    env = pipeline.env | {
        "REWIND_CLUSTER_ENABLED": "1",
        "REWIND_CLUSTER_GROUP_PROTOCOL": "consumer",
        "REWIND_CLUSTER_SESSION_TIMEOUT_MS": "10",
        "REWIND_CLUSTER_HEARTBEAT_MS": "5",
        "REWIND_HTTP_PORT": "0",
    }
    result = run_rewind("serve", env=env, timeout=60)
    assert result.returncode == 1
    assert (
        "cluster.session_timeout_ms=10 is outside what the broker allows for the consumer group protocol"
        in result.stderr
    )
    assert "group.consumer.min.session.timeout.ms=" in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr
