"""Standby replicas: warm copies of other members' partitions, so a takeover replays almost nothing.

Which member is standby for which partition follows from the group's description alone: with the
members in member-id order, a partition owned by the i-th member has the next
``cluster.standby_replicas`` members as standbys (never its owner; none when the member is alone).
Every member computes the same answer from the same description; no member decides for another.

A standby folds its partitions with the projector's own fold into its own stores under
``$REWIND_HOME/standby``: the same exactly-once rule (state and offset in one LMDB transaction,
starting at the stored offset + 1), a reader that never commits to a group. On takeover the member
asks for the partition back (:meth:`StandbyFollower.hand_over`); the follower releases it between
batches, and the member copies the standby store in when it is fresher than its own.

``rewind_standby_lag_messages{partition}`` is each standby partition's distance from the log end
(the log end as last fetched), ``rewind_standby_lag_seconds{partition}`` how long its standby has
been behind (0 while it is at the log end).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry, Gauge

from projector.runner import Projector, close_consumer
from projector.store import DATA_FILE, partition_dir_name
from rewind.ground.kafka_reader import reader_config
from rewind.ground.settings import Settings

log = logging.getLogger("rewind.cluster.standby")

STANDBY_DIR_NAME: Final = "standby"
HAND_OVER_SECONDS: Final = 5.0
"""The longest a takeover waits for the standby to let go of a partition before starting without it."""


def standby_partitions(
    owners: dict[str, tuple[int, ...]], me: str, replicas: int, partition_count: int
) -> list[int]:
    """The partitions member ``me`` is standby for, given each member's owned partitions."""
    members = sorted(owners)
    if me not in members or len(members) < 2 or replicas < 1:
        return []
    mine: list[int] = []
    for index, member in enumerate(members):
        followers = {members[(index + step) % len(members)] for step in range(1, replicas + 1)}
        followers.discard(member)
        if me in followers:
            mine += [p for p in owners[member] if p < partition_count]
    return sorted(mine)


class StandbyMetrics:
    """``rewind_standby_lag_messages`` and ``rewind_standby_lag_seconds``, one series per partition."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lag = Gauge(
            "rewind_standby_lag_messages",
            "Events a standby partition has not yet applied (log end as last fetched)",
            ["partition"],
            registry=registry,
        )
        self._lag_seconds = Gauge(
            "rewind_standby_lag_seconds",
            "How long a standby partition has been behind the log end (0: at the end)",
            ["partition"],
            registry=registry,
        )

    def observe(self, partition: int, messages: int, seconds: float) -> None:
        self._lag.labels(str(partition)).set(messages)
        self._lag_seconds.labels(str(partition)).set(seconds)

    def forget(self, partition: int) -> None:
        """A partition no longer followed: its series end."""
        for gauge in (self._lag, self._lag_seconds):
            with contextlib.suppress(KeyError):  # never measured
                gauge.remove(str(partition))


class StandbyFollower:
    """Follows the partitions this member is standby for, in its own thread and stores."""

    def __init__(
        self, settings: Settings, registry: CollectorRegistry, owned: Callable[[], list[int]]
    ) -> None:
        """``owned`` says which partitions the member itself projects now: never followed as standby."""
        self.settings = settings
        self._owned = owned
        self.root = settings.home / STANDBY_DIR_NAME
        self.wanted: list[int] = []
        """The partitions to follow now; the member sets it from the group's description."""
        self._lock = threading.Lock()
        self._handing_over: set[int] = set()
        self._released = threading.Condition(self._lock)
        self._following: set[int] = set()
        self._offsets: dict[int, int] = {}
        self._behind_since: dict[int, float] = {}
        self._stop = threading.Event()
        self.metrics = StandbyMetrics(registry)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_retrying, name="cluster-standby", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, dict[str, float | int | None]]:
        with self._lock:
            following = sorted(self._following)
            offsets = dict(self._offsets)
            behind = dict(self._behind_since)
        now = time.monotonic()
        return {
            str(p): {
                "offset": offsets.get(p),
                "behind_seconds": None if p not in behind else round(now - behind[p], 3),
            }
            for p in following
        }

    def hand_over(self, partitions: list[int]) -> dict[int, tuple[Path, int]]:
        """Stop following ``partitions`` (all at once, between two batches) and return the standby store
        and offset of each one that has a copy; a partition is left out when there is none or the
        follower did not let go of it within :data:`HAND_OVER_SECONDS`."""
        started = time.monotonic()
        deadline = started + HAND_OVER_SECONDS
        with self._lock:
            self._handing_over.update(partitions)
            while self._following & set(partitions) and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._released.wait(left)
            held = self._following & set(partitions)
            offsets = {p: self._offsets.get(p) for p in partitions if p not in held}
        if held:
            log.warning("partitions %s: the standby did not let go in time; not used", sorted(held))
        copies: dict[int, tuple[Path, int]] = {}
        for partition, offset in offsets.items():
            store = self.root / partition_dir_name(partition)
            if offset is not None and (store / DATA_FILE).is_file():
                copies[partition] = (store, offset)
        if copies:
            log.info(
                "partitions %s handed over by the standby in %.3f s",
                sorted(copies),
                time.monotonic() - started,
            )
        return copies

    def taken_over(self, partitions: list[int]) -> None:
        """The member owns ``partitions`` now: a standby may follow them again once they move away."""
        with self._lock:
            self._handing_over.difference_update(partitions)

    def _run_retrying(self) -> None:
        while not self._stop.is_set():
            try:
                self._run()
            except Exception as exc:  # a standby is best effort; the owner's state is unaffected
                log.error("the standby follower stopped; starting it again in 1 s: %s", exc)
                with self._lock:
                    self._following.clear()
                    self._released.notify_all()
                self._stop.wait(1.0)

    def _run(self) -> None:
        projector = Projector(
            self.settings,
            [],
            state_dir=self.root,
            include_config=False,
            commit_group=False,
            durable=False,
        )
        consumer = Consumer(
            reader_config(self.settings.client_config(), str(self.settings["cluster.group"]) + ".standby")
        )
        topic = self.settings.events_topic
        try:
            while not self._stop.is_set():
                self._follow_changes(projector, consumer)
                messages = consumer.consume(projector.batch_events, projector.batch_seconds)
                mine = [m for m in messages if m.error() is not None or m.partition() in self._following]
                if mine:
                    projector.apply_batch(mine, None)
                self._observe(projector, consumer, topic)
        finally:
            with self._lock:
                self._following.clear()
                self._released.notify_all()
            close_consumer(consumer)
            projector.close()

    def _follow_changes(self, projector: Projector, consumer: Consumer) -> None:
        with self._lock:
            wanted = set(self.wanted) - self._handing_over - set(self._owned())
            gone = sorted(self._following - wanted)
            new = sorted(wanted - self._following)
        if gone:
            topic = self.settings.events_topic
            consumer.incremental_unassign([TopicPartition(topic, p) for p in gone])
            projector.release(gone)
            for partition in gone:
                self.metrics.forget(partition)
            with self._lock:  # a takeover waiting for these goes on now, not after the adoptions below
                self._following -= set(gone)
                for partition in gone:  # its last offset stays known: the store is exact as left
                    self._behind_since.pop(partition, None)
                self._released.notify_all()
        if new:
            consumer.incremental_assign(projector.adopt(consumer, new))
            with self._lock:
                self._following |= set(new)
        if gone or new:
            log.info("standby for partitions %s", sorted(self._following))

    def _observe(self, projector: Projector, consumer: Consumer, topic: str) -> None:
        offsets = dict(projector.progress.offsets)
        now = time.monotonic()
        with self._lock:
            following = set(self._following)
        for partition in following:
            offset = offsets.get(partition_dir_name(partition))
            if offset is None:
                continue
            with self._lock:
                self._offsets[partition] = offset
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except Exception:  # no fetch answered yet: nothing known about the log end
                continue
            if high < 0:
                continue
            behind = max(0, high - 1 - offset)
            with self._lock:
                if behind == 0:
                    self._behind_since.pop(partition, None)
                else:
                    self._behind_since.setdefault(partition, now)
                since = self._behind_since.get(partition)
            self.metrics.observe(partition, behind, 0.0 if since is None else now - since)
