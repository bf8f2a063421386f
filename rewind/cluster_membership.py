"""rewind as a cluster: the members of one Kafka consumer group share the events partitions.

Kafka is the engine: every ``rewind serve`` with ``cluster.enabled`` joins the consumer group
``cluster.group`` on the events topic with the cooperative-sticky assignor, and the group coordinator's
assignment is the only truth about who projects which partition. Nothing here elects, votes or keeps
a membership list of its own.

Guarantees:
- **Exactly-once per partition, across moves.** A member folds an assigned partition into its own
  store, starting at that store's offset + 1 (the projector's rule); a revoked partition is released
  between batches, its store left as of its last committed batch. Each member's store of a partition
  is therefore always the fold of an exact prefix of the log, whoever owned it before.
- **The freshest start a member has.** When a partition arrives and this member has no store for it,
  the newest verified snapshot (local or in the remote snapshot store) is put in place first; with
  neither, the fold starts at the log start. The tail after it is replayed by the projector itself.
- **Every member follows the config partition**, with a reader of its own (all of them need config).
- **A session timeout the broker accepts.** ``cluster.session_timeout_ms`` below the broker's
  ``group.min.session.timeout.ms`` (or above its maximum) is refused at start with the broker's
  bounds, rather than failing at the first join.

Each member advertises the URL other members send queries to in its Kafka ``client.id``
(``rewind@<url>``), so the group's description (:func:`describe_group`) says who owns what and where
to ask; :mod:`rewind.cluster_routing` answers queries with it.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from prometheus_client import CollectorRegistry

from projector.runner import ProjectionProgress, Projector
from projector.store import (
    CONFIG_DIR_NAME,
    DATA_FILE,
    fsync_directory,
    partition_dir_name,
    partition_of_dir_name,
)
from rewind.cluster_standby import StandbyFollower, standby_partitions
from rewind.ground.errors import ConfigError, InvariantViolation, RewindError
from rewind.ground.kafka_reader import READER_DEFAULTS
from rewind.ground.settings import Settings
from rewind.ground.topics import events_partition_count
from rewind.ground.watermarks import watermark_offsets
from snapshotter.snapshot import copy_in_kernel, sync_store_files
from snapshotter.snapshot_store import newest_valid_anywhere, restore_chosen

log = logging.getLogger("rewind.cluster")

CLIENT_ID_PREFIX: Final = "rewind@"
"""A member's ``client.id`` is this prefix and the URL it answers queries on."""
FENCE_COMMIT_SECONDS: Final = 10.0
"""How long the fence waits for its generation check (a commit made on the projector's thread between
two batches) before it refuses the round; the next round asks again."""
DESCRIBE_EVERY_SECONDS: Final = 0.25
"""How often a member reads the group's description (members, assignment) for routing and status."""
DESCRIBE_MOVING_SECONDS: Final = 0.05
"""How often while partitions move (the group is not ``STABLE``, or a partition has no owner), so that
queries find a moved partition's new owner soon after the coordinator assigns it."""
BROKER_SESSION_BOUNDS: Final = ("group.min.session.timeout.ms", "group.max.session.timeout.ms")


@dataclass(frozen=True)
class Member:
    """One member of the group as the coordinator describes it."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[int, ...]

    @property
    def url(self) -> str | None:
        """The URL the member answers queries on, from its ``client.id``; None for a foreign client."""
        if not self.client_id.startswith(CLIENT_ID_PREFIX):
            return None
        return self.client_id.removeprefix(CLIENT_ID_PREFIX)

    def as_dict(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "client_id": self.client_id,
            "host": self.host,
            "url": self.url,
            "partitions": list(self.partitions),
        }


@dataclass(frozen=True)
class GroupView:
    """The group at one instant: its state (``STABLE`` while nothing moves) and its members."""

    group: str
    state: str
    members: tuple[Member, ...]
    partition_count: int
    described_at: float
    protocol: str = ""
    """The group protocol the coordinator runs the group with: ``classic`` or ``consumer`` (KIP-848)."""

    def owner(self, partition: int) -> Member | None:
        """The member assigned ``partition``, or None while it is in motion (revoked, not yet assigned)."""
        for member in self.members:
            if partition in member.partitions:
                return member
        return None

    def unowned(self) -> list[int]:
        owned = {p for m in self.members for p in m.partitions}
        return [p for p in range(self.partition_count) if p not in owned]

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "members": [m.as_dict() for m in sorted(self.members, key=lambda m: m.member_id)],
            "protocol": self.protocol,
            "partition_count": self.partition_count,
            "unassigned_partitions": self.unowned(),
            "described_at": self.described_at,
        }


CONSUMER_BOUNDS: Final = {
    "session": ("group.consumer.min.session.timeout.ms", "group.consumer.max.session.timeout.ms"),
    "heartbeat": ("group.consumer.min.heartbeat.interval.ms", "group.consumer.max.heartbeat.interval.ms"),
}
"""The broker's bounds on a ``consumer``-protocol group's session timeout and heartbeat interval."""
CONSUMER_ASSIGNMENT_FLOOR: Final = "group.consumer.min.assignment.interval.ms"


def _broker_configs(admin: AdminClient) -> dict[str, str]:
    try:
        brokers = admin.list_topics(timeout=10).brokers
        resource = ConfigResource("broker", str(min(brokers)))
        found = admin.describe_configs([resource], request_timeout=10)[resource].result()
    except (KafkaException, ValueError) as exc:
        raise RewindError(
            f"could not read the broker's group timeout bounds: {exc}",
            "check that the brokers answer (`rewind kafka status`)",
        ) from exc
    return {key: str(entry.value) for key, entry in found.items()}


def check_session_timeout(settings: Settings, admin: AdminClient) -> None:
    """Refuse a ``cluster.session_timeout_ms`` (and heartbeat) outside what the broker allows, naming
    its bounds. With ``cluster.group_protocol = consumer`` the coordinator, not the member, holds both:
    they are set as the group's own configuration (``consumer.session.timeout.ms``,
    ``consumer.heartbeat.interval.ms``, and the broker's shortest ``consumer.assignment.interval.ms``)."""
    wanted = int(settings["cluster.session_timeout_ms"])
    heartbeat = int(settings["cluster.heartbeat_ms"])
    if heartbeat >= wanted:
        raise ConfigError(
            f"cluster.heartbeat_ms={heartbeat} is not below cluster.session_timeout_ms={wanted}",
            "set the heartbeat to about a third of the session timeout or less",
        )
    stall = int(settings["cluster.max_stall_ms"])
    if stall < wanted:
        raise ConfigError(
            f"cluster.max_stall_ms={stall} is below cluster.session_timeout_ms={wanted}",
            "set cluster.max_stall_ms to the session timeout or more (Kafka requires it)",
        )
    found = _broker_configs(admin)
    if str(settings["cluster.group_protocol"]) != "consumer":
        low, high = (int(found[key]) for key in BROKER_SESSION_BOUNDS)
        if not low <= wanted <= high:
            raise ConfigError(
                f"cluster.session_timeout_ms={wanted} is outside what the broker allows "
                f"(group.min.session.timeout.ms={low}, group.max.session.timeout.ms={high})",
                f"set cluster.session_timeout_ms between {low} and {high}, or lower the broker's "
                "group.min.session.timeout.ms (the local broker of `rewind kafka start` allows 1000)",
            )
        return
    for setting, value, (low_key, high_key) in (
        ("cluster.session_timeout_ms", wanted, CONSUMER_BOUNDS["session"]),
        ("cluster.heartbeat_ms", heartbeat, CONSUMER_BOUNDS["heartbeat"]),
    ):
        if low_key not in found:
            raise ConfigError(
                "cluster.group_protocol=consumer: the broker does not support the consumer group "
                f"protocol (it has no {low_key})",
                "use cluster.group_protocol=classic, or brokers of Apache Kafka 4.0 or later",
            )
        low, high = int(found[low_key]), int(found[high_key])
        if not low <= value <= high:
            raise ConfigError(
                f"{setting}={value} is outside what the broker allows for the consumer group protocol "
                f"({low_key}={low}, {high_key}={high})",
                f"set {setting} between {low} and {high}, or lower the broker's {low_key} (the local "
                "broker of `rewind kafka start` allows 1000 ms sessions and 100 ms heartbeats)",
            )
    group_settings = {
        "consumer.session.timeout.ms": str(wanted),
        "consumer.heartbeat.interval.ms": str(heartbeat),
    }
    if CONSUMER_ASSIGNMENT_FLOOR in found:
        group_settings["consumer.assignment.interval.ms"] = found[CONSUMER_ASSIGNMENT_FLOOR]
    group = str(settings["cluster.group"])
    resource = ConfigResource(
        ResourceType.GROUP,
        group,
        incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in group_settings.items()
        ],
    )
    try:
        admin.incremental_alter_configs([resource], request_timeout=10)[resource].result()
    except KafkaException as exc:
        raise RewindError(
            f"could not set the session timeout and heartbeat of consumer group {group!r}: {exc}",
            "check that the brokers answer and that rewind may alter the group's configuration "
            "(ALTER_CONFIGS on the group)",
        ) from exc


def group_consumer_config(settings: Settings, url: str) -> dict[str, str | int | float | bool]:
    """The librdkafka configuration of a member's group consumer: never commits or resets by itself
    (offsets come from the stores), cooperative rebalancing, and its URL as its client id.

    The ``classic`` protocol assigns with the cooperative-sticky assignor in join and sync rounds, and
    the member sets its session timeout and heartbeat; the ``consumer`` protocol (KIP-848) leaves
    assignment, session timeout and heartbeat to the coordinator (:func:`check_session_timeout`)."""
    config: dict[str, str | int | float | bool] = {
        **settings.client_config(),
        **READER_DEFAULTS,
        "group.id": str(settings["cluster.group"]),
        "client.id": CLIENT_ID_PREFIX + url,
        "fetch.min.bytes": 1,
        "queued.max.messages.kbytes": 262144,
        "max.poll.interval.ms": int(settings["cluster.max_stall_ms"]),
    }
    if str(settings["cluster.group_protocol"]) == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config["partition.assignment.strategy"] = "cooperative-sticky"
        config["session.timeout.ms"] = int(settings["cluster.session_timeout_ms"])
        config["heartbeat.interval.ms"] = int(settings["cluster.heartbeat_ms"])
    return config


def describe_group(admin: AdminClient, group: str, topic: str, partition_count: int) -> GroupView:
    """The coordinator's description of ``group``: its members and their events partitions."""
    try:
        found = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException as exc:
        raise RewindError(
            f"could not describe consumer group {group!r}: {exc}",
            "check that the brokers answer (`rewind kafka status`)",
        ) from exc
    members = tuple(
        Member(
            str(m.member_id),
            str(m.client_id),
            str(m.host),
            tuple(
                sorted(
                    tp.partition
                    for tp in (m.assignment.topic_partitions if m.assignment else [])
                    if tp.topic == topic
                )
            ),
        )
        for m in found.members
    )
    state = getattr(found.state, "name", str(found.state))
    protocol = str(getattr(getattr(found, "type", None), "name", "")).lower()
    return GroupView(group, state, members, partition_count, time.time(), protocol)


def _raise(error: BaseException) -> NoReturn:
    raise error


@dataclass
class ClusterMember:
    """This instance as a member of the cluster: restores partitions as they arrive, follows the
    group, keeps the group's description fresh for routing and ``GET /cluster``."""

    settings: Settings
    url: str = ""
    view: GroupView | None = None
    partition_count: int = 0
    member_id: str = ""
    _projector: Projector | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Event = field(default_factory=threading.Event)
    changes: int = 0
    standby: StandbyFollower | None = None
    _consumer: Consumer | None = None
    """The group consumer while this member follows the group (for the fence's generation check)."""
    _consumer_calls: queue.SimpleQueue[tuple[Callable[[Consumer], Any], Future[Any]]] = field(
        default_factory=queue.SimpleQueue
    )
    """Calls on the group consumer asked by other threads, made by the projector's thread between
    two batches (:meth:`_on_consumer_thread`)."""
    restored: dict[int, str] = field(default_factory=dict)
    """How each partition's store was last put in place on assignment (``local``, ``snapshot ...``,
    ``log start``)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ClusterMember | None:
        return cls(settings) if bool(settings["cluster.enabled"]) else None

    def start(self, url: str, registry: CollectorRegistry) -> None:
        """Check the session timeout against the broker, begin describing the group and, with
        ``cluster.standby_replicas``, following this member's standby partitions."""
        self.url = str(self.settings["cluster.advertised_url"]) or url
        admin = AdminClient(self.settings.client_config())
        check_session_timeout(self.settings, admin)
        if int(self.settings["cluster.standby_replicas"]):
            self.standby = StandbyFollower(self.settings, registry, self.owned)
            self.standby.start()
        threading.Thread(target=self._describe_loop, name="cluster-describe", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self.standby is not None:
            self.standby.stop()

    def ownership(self) -> tuple[int, list[int]]:
        """(how many assignment changes this member has seen, the partitions it serves now)."""
        return self.changes, self.serving()

    def serving(self) -> list[int]:
        """The owned partitions this member answers queries for: those whose store has applied all
        the log held when the partition was assigned. A partition that arrived behind (restored from
        an older copy, or from the log start) is not served until its replay reaches that point, so
        a query never reads a state older than the moment the partition moved."""
        projector = self._projector
        if projector is None:
            return []
        offsets = dict(projector.progress.offsets)
        targets = dict(projector.progress.targets)
        serving = []
        for partition in projector.owned_partitions():
            name = partition_dir_name(partition)
            if name in targets and offsets.get(name, -1) >= targets[name] - 1:
                serving.append(partition)
        return serving

    def owned(self) -> list[int]:
        """The partitions this member projects now (its own consumer's assignment: authoritative)."""
        projector = self._projector
        return [] if projector is None else projector.owned_partitions()

    def follow(
        self,
        projector: Projector,
        stop: threading.Event,
        on_batch: Callable[[ProjectionProgress], None] | None,
    ) -> None:
        """Run ``projector`` as a member of the group until ``stop`` is set."""
        admin = AdminClient(self.settings.client_config())
        self.partition_count = events_partition_count(admin, self.settings.events_topic)
        self._projector = projector
        try:
            projector.run_in_group(
                group_consumer_config(self.settings, self.url),
                stop,
                on_batch=on_batch,
                before_assign=self.prepare,
                after_change=self._after_change,
                between_batches=self._serve_consumer_calls,
            )
            log.info("left the group (its consumer is closed)")
        finally:
            self._projector = None
            self._consumer = None
            self._changed.set()
            self._fail_consumer_calls()

    def _serve_consumer_calls(self, consumer: Consumer) -> None:
        self._drain_consumer_calls(lambda call: call(consumer))

    def _fail_consumer_calls(self) -> None:
        self._drain_consumer_calls(lambda _call: _raise(RuntimeError("this member left the group")))

    def _drain_consumer_calls(self, run: Callable[[Callable[[Consumer], Any]], Any]) -> None:
        """Answer every queued consumer call with ``run(call)``'s result or exception."""
        while True:
            try:
                call, answer = self._consumer_calls.get_nowait()
            except queue.Empty:
                return
            if answer.set_running_or_notify_cancel():
                try:
                    answer.set_result(run(call))
                except BaseException as exc:  # handed to the asking thread
                    answer.set_exception(exc)

    def _on_consumer_thread(self, call: Callable[[Consumer], Any], timeout: float) -> Any:
        """``call(consumer)`` made by the projector's thread between two batches; its result, or its
        exception. A call from this thread would have to win the consumer from the ``consume`` loop,
        which can take tens of seconds; this waits at most ``timeout`` (TimeoutError)."""
        answer: Future[Any] = Future()
        self._consumer_calls.put((call, answer))
        try:
            return answer.result(timeout)
        except FutureTimeout:
            answer.cancel()
            raise TimeoutError(
                f"the projector's thread did not make the call within {timeout:.0f} s"
            ) from None

    def _after_change(self, consumer: Consumer) -> None:
        self.changes += 1
        self.member_id = consumer.memberid() or self.member_id
        self._consumer = consumer
        self._changed.set()

    def prepare(self, partitions: list[int]) -> None:
        """Put the freshest copy this member can get of each arriving partition's store in place: its
        standby copy when that is ahead of its own store, else its own store, else the newest verified
        snapshot, else nothing (the log start).

        The partitions are prepared side by side (copying and syncing a standby store, or fetching a
        snapshot, waits on the disk and the network, not on this process), then put in place one by
        one."""
        copies = {} if self.standby is None else self.standby.hand_over(partitions)
        own: dict[int, int | None] = {}
        for partition in partitions:
            name = partition_dir_name(partition)
            has_store = (self.settings.state_dir / name / DATA_FILE).is_file()
            own[partition] = self._own_offset(name) if has_store else None
        warm: dict[int, tuple[Path, int]] = {}
        for partition, (store, offset) in copies.items():
            mine = own.get(partition)
            if partition in own and (mine is None or offset > mine):
                warm[partition] = (store, offset)

        def prepared(partition: int) -> tuple[Path | None, str]:
            name = partition_dir_name(partition)
            if partition in warm:
                store, offset = warm[partition]
                return self._stage_standby(name, store), f"standby at offset {offset}"
            if own[partition] is not None:
                return None, f"local at offset {own[partition]}"
            return None, self._restore_snapshot(partition, name)

        with ThreadPoolExecutor(max_workers=max(1, len(partitions)), thread_name_prefix="takeover") as pool:
            futures = [pool.submit(prepared, partition) for partition in partitions]
        for future in futures:
            error = future.exception()
            if error is not None:  # nothing is put in place: the staged copies go
                for other in futures:
                    staged = None if other.exception() is not None else other.result()[0]
                    if staged is not None:
                        shutil.rmtree(staged, ignore_errors=True)
                raise error
        results = [future.result() for future in futures]
        for partition, (staging, source) in zip(partitions, results, strict=True):
            if staging is not None:
                self._install_staged(partition_dir_name(partition), staging)
            self.restored[partition] = source
            log.info("partition %d: starting from %s", partition, source)
        if self.standby is not None:
            self.standby.taken_over(partitions)

    def fence(self, paths: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
        """Which snapshot directories of a round this member may still ship to the shared store, and
        why the others may not: only the current owner of a partition writes its snapshots (the
        config store's: the owner of events partition 0).

        Owner means all three, checked in this order:

        1. this member's consumer holds the partition now;
        2. the group coordinator accepts an offset commit for the partitions from this member's
           consumer: Kafka itself refuses one from a member of an earlier generation (``classic``)
           or with a stale member epoch (``consumer`` protocol), and from a member it has removed;
        3. the group coordinator, asked now, assigns the partition to this member id.

        A zombie (a member the coordinator has already replaced, whose partitions were given to others
        while it was stalled or cut off) fails the second check, and ships nothing."""
        owned = set(self.owned())
        wanted: dict[str, int] = {}
        refused: list[str] = []
        for path in paths:
            store = Path(path).parent.name
            partition = 0 if store == CONFIG_DIR_NAME else partition_of_dir_name(store)
            if partition is None or partition not in owned:
                refused.append(f"{store}: not owned by this member (its consumer does not hold it)")
            else:
                wanted[path] = partition
        if not wanted:
            return (), refused
        rejected = self._commit_under_generation(sorted(set(wanted.values())))
        if rejected is not None:
            refused += [
                f"{Path(path).parent.name}: the group coordinator refused this member's generation: "
                f"{rejected}"
                for path in wanted
            ]
            return (), refused
        try:
            view = describe_group(
                AdminClient(self.settings.client_config()),
                str(self.settings["cluster.group"]),
                self.settings.events_topic,
                self.partition_count,
            )
        except RewindError as exc:
            refused.append(
                f"{len(wanted)} snapshots: the group coordinator could not confirm the owners: {exc}"
            )
            return (), refused
        confirmed = {p for m in view.members if m.member_id == self.member_id for p in m.partitions}
        allowed: list[str] = []
        for path, partition in wanted.items():
            if partition in confirmed:
                allowed.append(path)
            else:
                refused.append(
                    f"{Path(path).parent.name}: not owned by this member (the group coordinator says so now)"
                )
        return tuple(allowed), refused

    def _commit_under_generation(self, partitions: list[int]) -> str | None:
        """Commit the partitions' applied offsets through this member's group consumer, synchronously;
        None when the coordinator accepted it, else why not. (Group offsets are for lag tools only;
        this commit writes the same offsets the projector commits after every batch.)"""
        consumer, projector = self._consumer, self._projector
        if consumer is None or projector is None:
            return "this member follows no group"
        applied = dict(projector.progress.offsets)
        topic = self.settings.events_topic
        offsets = [TopicPartition(topic, p, applied.get(partition_dir_name(p), -1) + 1) for p in partitions]
        try:
            committed = self._on_consumer_thread(
                lambda own: own.commit(offsets=offsets, asynchronous=False), FENCE_COMMIT_SECONDS
            )
        except TimeoutError as exc:
            return str(exc)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            return error.str() if isinstance(error, KafkaError) else str(exc)
        except RuntimeError as exc:  # the consumer closed meanwhile
            return str(exc)
        failed = [f"partition {tp.partition}: {tp.error.str()}" for tp in committed or [] if tp.error]
        return "; ".join(failed) if failed else None

    def _own_offset(self, name: str) -> int:
        projector = self._projector
        if projector is None:
            raise InvariantViolation("a partition was assigned to a member that follows no group")
        return projector.directory.store(name).offset()

    def _stage_standby(self, name: str, standby: Path) -> Path:
        """A synced copy of the standby store ``name`` (which nothing writes now: the follower let go
        of it), in a staging directory beside the state directory; :meth:`_install_staged` puts it
        in place."""
        state_dir = self.settings.state_dir
        staging = state_dir.with_name(f"{state_dir.name}.standby-{uuid.uuid4().hex}")
        (staging / name).mkdir(parents=True)
        try:
            copy_in_kernel(standby / DATA_FILE, staging / name / DATA_FILE)
            sync_store_files(staging / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _install_staged(self, name: str, staging: Path) -> None:
        """Replace this member's store ``name`` with the staged copy, renamed into place whole."""
        projector = self._projector
        if projector is None:
            raise InvariantViolation("a partition was assigned to a member that follows no group")
        state_dir = self.settings.state_dir
        aside = state_dir.with_name(f"{state_dir.name}.replaced-{uuid.uuid4().hex}")
        try:
            projector.directory.release(name)
            live = state_dir / name
            if live.exists():
                aside.mkdir()
                os.rename(live, aside / name)
            os.rename(staging / name, live)
            fsync_directory(state_dir)
            projector.directory.replaced(name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(aside, ignore_errors=True)

    def _restore_snapshot(self, partition: int, name: str) -> str:
        scratch = self.settings.home / f".cluster-{uuid.uuid4().hex}"
        try:
            consumer = Consumer({**self.settings.client_config(), "group.id": "rewind-cluster-probe"})
            try:
                _low, high = watermark_offsets(
                    consumer, TopicPartition(self.settings.events_topic, partition), 10
                )
            finally:
                consumer.close()
            chosen, rejected = newest_valid_anywhere(self.settings, name, scratch, high - 1, deep=True)
            for reason in rejected:
                log.warning("partition %d: snapshot passed over: %s", partition, reason)
            if chosen is None:
                return "log start"
            restore_chosen(chosen, self.settings.state_dir / name)
            return f"snapshot at offset {chosen.snapshot.offset} ({chosen.location})"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _describe_loop(self) -> None:
        admin = AdminClient(self.settings.client_config())
        failing = ""
        while not self._stop.is_set():
            view = self.view
            settled = view is not None and view.state == "STABLE" and not view.unowned()
            self._changed.wait(DESCRIBE_EVERY_SECONDS if settled else DESCRIBE_MOVING_SECONDS)
            self._changed.clear()
            if self._stop.is_set():
                return
            try:
                count = self.partition_count or events_partition_count(admin, self.settings.events_topic)
                view = self.view = describe_group(
                    admin, str(self.settings["cluster.group"]), self.settings.events_topic, count
                )
                if self.standby is not None and self.member_id and view.state == "STABLE":
                    owners = {m.member_id: m.partitions for m in view.members}
                    replicas = int(self.settings["cluster.standby_replicas"])
                    self.standby.wanted = standby_partitions(owners, self.member_id, replicas, count)
                failing = ""
            except RewindError as exc:
                if str(exc) != failing:
                    failing = str(exc)
                    log.warning("describing the cluster's group failed (tried again): %s", exc)

    def status(self) -> dict[str, Any]:
        """What ``GET /cluster`` answers: this member, what it owns and how each arrived, the group."""
        view = self.view
        projector = self._projector
        offsets = {} if projector is None else dict(projector.progress.offsets)
        targets = {} if projector is None else dict(projector.progress.targets)
        owned = self.owned()
        return {
            "enabled": True,
            "self": {
                "url": self.url,
                "member_id": self.member_id,
            },
            "owned_partitions": owned,
            "restored_from": {str(p): self.restored.get(p) for p in owned},
            "offsets": {str(p): offsets.get(partition_dir_name(p)) for p in owned},
            "log_ends_at_assignment": {str(p): targets.get(partition_dir_name(p)) for p in owned},
            "standby": {} if self.standby is None else self.standby.status(),
            "group": None if view is None else view.as_dict(),
        }


def group_lag(
    settings: Settings, admin: AdminClient, partition_count: int
) -> dict[int, dict[str, int | None]]:
    """Per events partition: the log end, the cluster's committed offset (written by each owner after
    every batch, for lag tools only) and the lag between them; None where nothing was committed yet."""
    group = str(settings["cluster.group"])
    topic = settings.events_topic
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partition_count)])
    try:
        listed = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result()
    except KafkaException as exc:
        raise RewindError(
            f"could not read the committed offsets of {group!r}: {exc}",
            "check that the brokers answer (`rewind kafka status`)",
        ) from exc
    committed = {tp.partition: tp.offset for tp in listed.topic_partitions if tp.offset >= 0}
    consumer = Consumer({**settings.client_config(), "group.id": "rewind-cluster-probe"})
    try:
        lag: dict[int, dict[str, int | None]] = {}
        for partition in range(partition_count):
            _low, high = watermark_offsets(consumer, TopicPartition(topic, partition), 10)
            done = committed.get(partition)
            lag[partition] = {
                "log_end": high,
                "committed": done,
                "lag_messages": None if done is None else max(0, high - done),
            }
        return lag
    finally:
        consumer.close()


def cluster_report(settings: Settings) -> dict[str, Any]:
    """What ``rewind cluster status`` shows, from the brokers alone (no member needs to answer)."""
    admin = AdminClient(settings.client_config())
    count = events_partition_count(admin, settings.events_topic)
    view = describe_group(admin, str(settings["cluster.group"]), settings.events_topic, count)
    lag = group_lag(settings, admin, count)
    return view.as_dict() | {"lag": {str(p): row for p, row in lag.items()}}
