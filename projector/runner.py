"""The projector's consume loop: Kafka -> decode -> fold -> one LMDB commit per partition per batch.

Guarantees:
- **Exactly-once state.** A batch's state changes and its last offset are one LMDB transaction. On
  start, each partition is assigned at its stored offset + 1, never at a group offset or a guess.
- **Nothing lost silently.** Undecodable records go to the dead-letter topic (acknowledged before the
  commit that moves past them); events that cannot apply are recorded as anomalies, or stop the
  projector under the ``halt`` policy before they are applied; a gap in the log (retention deleted
  events this state never saw) stops the projector with a data-loss error.
- After each LMDB commit the same offsets are committed to the consumer group, so external lag tools
  see progress; the group offsets are informational and never read back.
- **Closing never hangs on the brokers.** The consumer is closed with a deadline
  (:data:`CONSUMER_CLOSE_SECONDS`); one that the brokers keep from closing is left behind, which
  loses nothing, as the state and its offsets are committed per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from projector.broker_watch import KAFKA_LOG
from projector.crashpoints import crashpoint
from projector.deadletter import DeadLetters
from projector.encoding import NO_OFFSET
from projector.fold import CONFIG_TOPIC_PARTITION
from projector.lmdb_state import EntityCache, LmdbConfigState, LmdbPartitionState
from projector.metrics import ProjectorMetrics
from projector.policy import HALTED, RECORDED, REFUSED, UNDECODABLE, ConfigStep, EventsStep, PolicyStep
from projector.state_directory import StateDirectory
from projector.store import CONFIG_DIR_NAME, partition_dir_name, partition_of_dir_name
from rewind.ground.errors import DataLossError, InvariantViolation, RewindError
from rewind.ground.kafka_reader import consume_error, reader_config
from rewind.ground.settings import Settings
from rewind.ground.watermarks import watermark_offsets
from schemas.codec import default_codec

log = logging.getLogger("rewind.projector")

CONSUMER_CLOSE_SECONDS: Final = 3.0
"""The longest a projector waits for its Kafka consumer to close. A healthy close takes milliseconds;
with the brokers gone, librdkafka can wait minutes for requests in flight (an offset commit)."""


def close_consumer(consumer: Consumer, seconds: float = CONSUMER_CLOSE_SECONDS) -> bool:
    """Close ``consumer`` on a thread of its own and wait at most ``seconds``; True if it closed.

    A consumer still closing after that is left to finish (or not) on its daemon thread: nothing the
    projector owns depends on it, and it never keeps the process from exiting.
    """

    def close() -> None:
        try:
            consumer.close()
        except Exception as exc:  # a close that fails leaves nothing to undo
            log.warning("closing the Kafka consumer failed: %s", exc)

    closer = threading.Thread(target=close, name="kafka-consumer-close", daemon=True)
    closer.start()
    closer.join(seconds)
    if not closer.is_alive():
        return True
    log.warning(
        "the Kafka consumer did not close within %.0f s (the brokers do not answer); going on without "
        "waiting for it: the state and its offsets are committed per batch, so nothing is lost",
        seconds,
    )
    return False


def store_source(settings: Settings, store: str) -> tuple[str, int]:
    """The (topic, partition) a store folds: ``config`` -> (the config topic, its partition),
    ``events-p0003`` -> (the events topic, 3). Stores are named as on disk
    (:func:`projector.store.partition_dir_name`, :data:`projector.store.CONFIG_DIR_NAME`)."""
    topic = settings.config_topic if store == CONFIG_DIR_NAME else settings.events_topic
    return topic, store_partition(store)


def store_partition(store: str) -> int:
    """The partition (of its topic) a store folds; ValueError for a name that is not a store's."""
    if store == CONFIG_DIR_NAME:
        return CONFIG_TOPIC_PARTITION
    partition = partition_of_dir_name(store)
    if partition is None:
        raise ValueError(f"{store!r} is not the name of a store")
    return partition


CONFIG_LABEL: Final = "config"
"""The config store as a person names it (``--to 3:1200,config:40``); an events store is its partition."""


def store_label(store: str) -> str:
    """``events-p0003`` -> ``"3"``, ``config`` -> ``"config"``."""
    return CONFIG_LABEL if store == CONFIG_DIR_NAME else str(store_partition(store))


def labelled_store(label: str) -> str:
    """``"3"`` -> ``events-p0003``, ``"config"`` -> ``config``; ValueError for anything else."""
    if label == CONFIG_LABEL:
        return CONFIG_DIR_NAME
    partition = int(label)
    if partition < 0:
        raise ValueError(f"partition {partition} is negative")
    return partition_dir_name(partition)


class AnomalyHalt(RewindError):
    """The ``halt`` policy stopped the projector before an event that cannot apply."""


@dataclass
class ProjectionProgress:
    """Where the projector stands: what it applied, and how far each store is from its target.

    ``offsets`` (the last offset applied), ``targets`` (the offset to stop before) and
    ``commit_times`` are keyed by store name (:func:`store_source` gives its topic and partition).
    """

    applied: int = 0
    dead_letters: int = 0
    anomalies: int = 0
    batches: int = 0
    offsets: dict[str, int] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    commit_times: dict[str, float] = field(default_factory=dict)

    def remaining(self) -> int:
        return sum(max(0, self.targets[s] - 1 - self.offsets.get(s, NO_OFFSET)) for s in self.targets)


def parse_partitions(text: str | None, count: int) -> list[int]:
    """``"0-5,8"`` -> [0, 1, 2, 3, 4, 5, 8]; ``None`` -> every partition. Refuses unknown partitions."""
    if not text:
        return list(range(count))
    chosen: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last) if sep else int(first)
        except ValueError as exc:
            raise RewindError(
                f"--partitions: '{part}' is not a partition or range", "write e.g. 0-5,8"
            ) from exc
        if low > high or low < 0 or high >= count:
            raise RewindError(
                f"--partitions: '{part}' is outside the topic's partitions 0-{count - 1}",
                "choose partitions the events topic has",
            )
        chosen.update(range(low, high + 1))
    return sorted(chosen)


class Projector:
    """Projects the assigned partitions of the events topic (and the config topic) into LMDB."""

    def __init__(
        self,
        settings: Settings,
        partitions: Iterable[int],
        metrics: ProjectorMetrics | None = None,
        anomaly_policy: str | None = None,
        *,
        state_dir: Path | None = None,
        until: Mapping[str, int] | None = None,
        include_config: bool = True,
        commit_group: bool = True,
        durable: bool | None = None,
    ) -> None:
        """``until`` maps a store name (``events-p0003``, ``config``) to the last offset to apply; the
        run then stops there instead of at the log end. ``state_dir`` overrides the configured one (replay
        and recovery build elsewhere); ``commit_group`` is off for them, as they are not the projector.
        ``durable`` overrides ``projector.durable``: recovery builds a staging copy it syncs once at
        the end, so it does not need every commit on disk."""
        self.settings = settings
        self.partitions = list(partitions)
        self.until = dict(until or {})
        self.include_config = include_config
        self.commit_group = commit_group
        self.metrics = metrics
        self.policy = anomaly_policy or str(settings["projector.anomaly_policy"])
        self.batch_events = int(settings["projector.batch_events"])
        self.batch_seconds = int(settings["projector.batch_ms"]) / 1000.0
        names = [partition_dir_name(p) for p in self.partitions]
        if include_config:
            names.append(CONFIG_DIR_NAME)
        self._sources = {name: store_source(settings, name) for name in names}
        """Each store this projector folds, and its (topic, partition)."""
        self._stores_by_source: dict[str, dict[int, str]] = {}
        for name, (topic, partition) in self._sources.items():
            self._stores_by_source.setdefault(topic, {})[partition] = name
        self.directory = StateDirectory.open(
            state_dir or settings.state_dir,
            settings,
            durable=bool(settings["projector.durable"]) if durable is None else durable,
        )
        self.dead_letters = DeadLetters(settings.client_config(), settings.deadletter_topic)
        self.progress = ProjectionProgress()
        self._consumer: Consumer | None = None
        self._config_consumer: Consumer | None = None
        self._caches: dict[str, EntityCache] = {}
        self._decode = default_codec().decode

    def close(self) -> None:
        """Close the consumers (waiting at most :data:`CONSUMER_CLOSE_SECONDS` each) and the stores."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            close_consumer(consumer)
        follower, self._config_consumer = self._config_consumer, None
        if follower is not None:
            close_consumer(follower)
        self.directory.close()

    def owned_partitions(self) -> list[int]:
        """The events partitions this projector folds now (in a group: what the coordinator gave it)."""
        return sorted(p for name, (_, p) in list(self._sources.items()) if name != CONFIG_DIR_NAME)

    def adopt(self, consumer: Consumer, partitions: Iterable[int]) -> list[TopicPartition]:
        """Start folding ``partitions`` into their stores: each at its stored offset + 1, once the log is
        known to still hold it (a gap raises :class:`DataLossError`). Returns what to assign."""
        wanted: list[TopicPartition] = []
        for partition in partitions:
            name = partition_dir_name(partition)
            topic = self.settings.events_topic
            self._sources[name] = (topic, partition)
            self._stores_by_source.setdefault(topic, {})[partition] = name
            tp = TopicPartition(topic, partition, self.directory.store(name).offset() + 1)
            self._check_log_holds(consumer, name, tp)
            wanted.append(tp)
        return wanted

    def release(self, partitions: Iterable[int]) -> None:
        """Stop folding ``partitions`` and close their stores. Called between batches only, so each
        store is left as of its last committed batch: exact, and resumable by anyone."""
        for partition in partitions:
            name = partition_dir_name(partition)
            self._sources.pop(name, None)
            self._stores_by_source.get(self.settings.events_topic, {}).pop(partition, None)
            cache = self._caches.pop(name, None)
            if cache is not None:
                cache.clear()
            self.progress.offsets.pop(name, None)
            self.progress.targets.pop(name, None)
            self.progress.commit_times.pop(name, None)
            self.directory.release(name)

    def run_in_group(
        self,
        group_config: Mapping[str, str | int | float | bool],
        stop: Event,
        on_batch: Callable[[ProjectionProgress], None] | None = None,
        before_assign: Callable[[list[int]], None] | None = None,
        after_change: Callable[[Consumer], None] | None = None,
        between_batches: Callable[[Consumer], None] | None = None,
    ) -> ProjectionProgress:
        """Follow the events partitions the group coordinator assigns, and the config partition, until
        ``stop`` is set.

        ``group_config`` is the group consumer's librdkafka configuration (group, assignment strategy,
        session timeout). Each assigned partition starts at its stored offset + 1 (``before_assign``
        first puts the freshest copy of its store in place); a revoked or lost one is released. The
        callbacks run inside ``consume``, after the previous batch committed, so no batch is cut in
        two. ``between_batches`` runs on this thread after every ``consume`` (every batch, and at
        least every ``batch_seconds``): the one place where others may use the group consumer, which
        a call from another thread would have to win from the ``consume`` loop. The group's committed
        offsets are written for lag tools only and never read.
        """
        consumer = self._consumer = self._consumer_for_config(group_config)
        follower = self._config_consumer = self._consumer_for(str(self.settings["projector.group"]))
        config_tps = self._assignment(follower, bounded=False)
        follower.assign(config_tps)

        def on_assign(kafka: Consumer, assigned: list[TopicPartition]) -> None:
            partitions = sorted(tp.partition for tp in assigned)
            if not partitions:
                return
            if before_assign is not None:
                before_assign(partitions)
            kafka.incremental_assign(self.adopt(kafka, partitions))
            log.info("assigned events partitions %s", partitions)
            if after_change is not None:
                after_change(kafka)

        def on_revoke(kafka: Consumer, revoked: list[TopicPartition]) -> None:
            partitions = sorted(tp.partition for tp in revoked)
            if not partitions:
                return
            kafka.incremental_unassign(revoked)
            self.release(partitions)
            log.info("released events partitions %s", partitions)
            if after_change is not None:
                after_change(kafka)

        consumer.subscribe(
            [self.settings.events_topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke
        )
        while not stop.is_set():
            messages = consumer.consume(self.batch_events, self.batch_seconds)
            if messages:
                owned = self._stores_by_source.get(self.settings.events_topic, {})
                mine = [m for m in messages if m.error() is not None or m.partition() in owned]
                if mine:
                    self.apply_batch(mine, consumer)
            configs = follower.consume(self.batch_events, 0)
            if configs:
                self.apply_batch(configs, None)
            if (messages or configs) and on_batch is not None:
                on_batch(self.progress)
            if between_batches is not None:
                between_batches(consumer)
        self._consumer = None
        close_consumer(consumer)  # leaves the group now: the others take over without a session timeout
        return self.progress

    def _consumer_for(self, group: str) -> Consumer:
        config: dict[str, Any] = reader_config(
            self.settings.client_config(),
            group,
            {"fetch.min.bytes": 1, "queued.max.messages.kbytes": 262144},
        )
        return self._consumer_for_config(config)

    def _consumer_for_config(self, config: Mapping[str, str | int | float | bool]) -> Consumer:
        with_log: dict[str, Any] = dict(config)
        with_log["logger"] = KAFKA_LOG
        return Consumer(with_log)

    def _assignment(self, consumer: Consumer, bounded: bool) -> list[TopicPartition]:
        """Each owned store's partition at its stored offset + 1, once the log is known to still hold it.

        A bounded run leaves out partitions that are already at their target; a follower keeps them.
        """
        wanted: list[TopicPartition] = []
        for key, (topic, partition) in self._sources.items():
            tp = TopicPartition(topic, partition, self.directory.store(key).offset() + 1)
            if self._check_log_holds(consumer, key, tp) or not bounded:
                wanted.append(tp)
        return wanted

    def _check_log_holds(self, consumer: Consumer, key: str, tp: TopicPartition) -> bool:
        """Record the store's target; refuse a gap; True when there is anything to apply."""
        low, high = watermark_offsets(consumer, tp, 30)
        target = high
        if key in self.until:
            target = self.until[key] + 1
            if target > high:
                raise RewindError(
                    f"{tp.topic}[{tp.partition}]: offset {self.until[key]} is beyond "
                    f"the log end ({high - 1})",
                    "choose an offset the log already holds",
                )
            if target < tp.offset:
                raise RewindError(
                    f"{tp.topic}[{tp.partition}]: the state is already at offset {tp.offset - 1}, "
                    f"past the requested {self.until[key]}",
                    "build into an empty directory, or from an older snapshot",
                )
        self.progress.targets[key] = target
        self.progress.offsets[key] = tp.offset - 1
        if tp.offset >= target:
            return False
        if tp.offset < low:
            raise DataLossError(
                f"data loss on {tp.topic}[{tp.partition}]: state needs offset {tp.offset} next, but the log "
                f"now starts at {low} (offsets {tp.offset}-{low - 1} were deleted by retention)",
                "restore a snapshot taken at or after offset "
                f"{low - 1}, or re-ingest the missing events; rewind will not skip them",
            )
        return True

    def run(
        self,
        stop: Event | None = None,
        until_caught_up: bool = False,
        on_batch: Callable[[ProjectionProgress], None] | None = None,
    ) -> ProjectionProgress:
        """Consume and apply until ``stop`` is set or, with ``until_caught_up``, exactly up to the log end
        seen at start (records appended meanwhile are left for the next run)."""
        consumer = self._consumer = self._consumer_for(str(self.settings["projector.group"]))
        consumer.assign(self._assignment(consumer, bounded=until_caught_up or bool(self.until)))
        if until_caught_up:
            for key, target in self.progress.targets.items():
                self.until.setdefault(key, target - 1)
        stop = stop or Event()
        bounded = until_caught_up or bool(self.until)
        while not stop.is_set():
            wanted = self.batch_events
            if bounded:
                remaining = self.progress.remaining()
                if remaining == 0:
                    break
                # the last batch returns once its events are there, not after batch_ms
                wanted = min(wanted, remaining)
            messages = consumer.consume(wanted, self.batch_seconds)
            if messages:
                self.apply_batch(messages, consumer)
                if on_batch is not None:
                    on_batch(self.progress)
        return self.progress

    def apply_batch(self, messages: list[Message], consumer: Consumer | None = None) -> None:
        """Apply one consumed batch: fold per partition, then one LMDB commit per partition."""
        started = time.perf_counter()
        by_store: dict[str, list[Message]] = {}
        stores_by_source = self._stores_by_source
        for message in messages:
            error = message.error()
            if error is not None:
                self._raise_consume_error(message, error)
            topic, partition = message.topic(), message.partition()
            if topic is None or partition is None:
                raise InvariantViolation("a consumed record names no topic or partition")
            key = stores_by_source[topic][partition]
            by_store.setdefault(key, []).append(message)

        pending: list[tuple[str, Callable[[], None]]] = []
        halt: AnomalyHalt | None = None
        committed: list[TopicPartition] = []
        try:
            for key, batch in by_store.items():
                commit, halt = self._fold(key, batch)
                if commit is not None:
                    pending.append((key, commit))
                if halt is not None:
                    break
            crashpoint("after-fold")
            self.dead_letters.confirm()
            crashpoint("after-dead-letters")
            commit_started = time.perf_counter()
            for key, commit in pending:
                commit()
                self.progress.commit_times[key] = time.time()
                self._caches[key].trim()
                topic, partition = self._sources[key]
                committed.append(TopicPartition(topic, partition, self.progress.offsets[key] + 1))
        except BaseException:
            for cache in self._caches.values():
                cache.clear()
            raise
        if consumer is not None and committed and self.commit_group:
            consumer.commit(offsets=committed, asynchronous=True)
        self.progress.batches += 1
        if self.metrics is not None:
            now = time.perf_counter()
            self.metrics.observe_batch(now - started, now - commit_started)
        if halt is not None:
            raise halt

    def _fold(self, key: str, batch: list[Message]) -> tuple[Callable[[], None] | None, AnomalyHalt | None]:
        """Fold one store's messages; return the commit to run and, under ``halt``, why it stopped."""
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = EntityCache()
        last_offset = self.progress.offsets[key]
        state: LmdbConfigState | LmdbPartitionState
        step: PolicyStep
        store = self.directory.store(key)
        if key == CONFIG_DIR_NAME:
            state = LmdbConfigState(store, cache)
            step = ConfigStep(state, self.policy, last_offset, self._decode)
        else:
            state = LmdbPartitionState(store, cache)
            step = EventsStep(state, self._sources[key][1], self.policy, last_offset, self._decode)
        applied = 0
        anomalies = 0
        counts: dict[str, int] = {}
        halt: AnomalyHalt | None = None
        limit = self.until.get(key)
        for message in batch:
            offset = message.offset()
            if offset is None:
                raise InvariantViolation(f"{step.where}: a consumed record has no offset")
            if limit is not None and offset > limit:
                break
            outcome = step.record(message.value(), offset, message.key())
            if outcome in (UNDECODABLE, REFUSED):
                error = step.error
                self.dead_letters.send(message, error, error.fingerprint)
                self.progress.dead_letters += 1
                if self.metrics is not None:
                    self.metrics.dead_letter(type(error).__name__)
                continue
            if outcome == HALTED:
                halt = self._halt(offset, step)
                break
            if outcome == RECORDED:
                anomalies += 1
            event_type = step.event["event_type"]
            counts[event_type] = counts.get(event_type, 0) + 1
            applied += 1
        last_offset = step.offset
        if last_offset == self.progress.offsets[key]:
            return None, halt
        self.progress.offsets[key] = last_offset
        self.progress.applied += applied
        self.progress.anomalies += anomalies
        if self.metrics is not None:
            self.metrics.applied(counts, anomalies)
        changes = state.changes()
        return (lambda: store.commit(changes, last_offset, applied)), halt

    @staticmethod
    def _halt(offset: int, step: PolicyStep) -> AnomalyHalt:
        event, anomaly = step.event, step.anomaly
        why = "" if anomaly is None else f": {anomaly.kind}: {anomaly.detail}"
        return AnomalyHalt(
            f"halted before {step.where} offset {offset} ({event['event_type']} {event['event_id']}){why}",
            "inspect it with `rewind history`/`rewind state anomalies`; fix the source or "
            "restart with --anomaly-policy quarantine to record it and continue",
        )

    def _raise_consume_error(self, message: Message, error: KafkaError) -> None:
        raise consume_error(
            message.topic(),
            message.partition(),
            error,
            "the offsets this state needs next were deleted by retention; restore an older snapshot "
            "or re-ingest the missing events",
        )
