"""Putting events on Kafka: validated, encoded, routed, and never silently lost.

:class:`EventProducer` wraps one idempotent ``confluent_kafka.Producer`` (``enable.idempotence=true``,
``acks=all``; a caller property contradicting either is refused). Every event is validated against its
type's builder rules and encoded with the current schema *before* it is handed to librdkafka, so nothing
invalid can reach a topic. An event a builder made (a read-only :class:`producers.builders.BuiltEvent`)
was checked when it was built and cannot have changed since, so it is only encoded. An event already in
the builders' normalized form takes one generated pass that checks each field once and writes its bytes
(:meth:`schemas.codec.Codec.compiled_encoder` with :data:`producers.acceptance.ACCEPT`); any other event
goes through :func:`producers.builders.validate_event` (which normalizes it or raises the precise error)
and :meth:`schemas.codec.Codec.encode`. Routing follows ``docs/events.md``: ``ConfigChanged`` to the
config topic keyed by the config key, everything else to the events topic keyed by ``account_id``; every
record carries the header ``event_type``.

Two ways to send:

- :meth:`EventProducer.emit` blocks until the broker acknowledged the record and returns its
  ``(partition, offset)``; it raises if it was not acknowledged. Returned means durable.
- :meth:`EventProducer.emit_async` queues the record and returns at once; :meth:`EventProducer.flush`
  waits for every queued record and raises :class:`DeliveryFailedError` listing every record that
  failed since the last flush. Failures are collected, never dropped.

Counters (``queued``, ``acked``, ``failed``), delivery latency (``latency_count``,
``latency_sum_s``, ``latency_max_s``, an optional per-record ``latency_observer``) and the last
acknowledged offset per ``(topic, partition)`` are plain attributes for metrics and summaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from producers.acceptance import ACCEPT
from producers.builders import BuiltEvent, validate_event
from rewind.ground.errors import RewindError
from schemas.codec import Codec, Encoder, default_codec

CONFIG_EVENT: Final = "ConfigChanged"
REQUIRED_PROPERTIES: Final[Mapping[str, str]] = {"enable.idempotence": "true", "acks": "all"}
_ACKS_ALL = frozenset({"all", "-1"})
POLL_EVERY: Final = 64  # emit_async serves delivery reports every this many records

ClientConfig = Mapping[str, str | int | float | bool]
Headers = list[tuple[str, str | bytes | None]]


class ProduceError(RewindError):
    """An event could not be produced (refused before sending, or not acknowledged by the broker)."""


@dataclass(frozen=True)
class DeliveryFailure:
    """One record the broker did not acknowledge."""

    event_id: str
    event_type: str
    topic: str
    error: str


class DeliveryFailedError(ProduceError):
    """Records queued with ``emit_async`` that failed; ``failures`` lists every one of them."""

    def __init__(self, failures: list[DeliveryFailure]) -> None:
        shown = "; ".join(f"{f.event_type} {f.event_id} -> {f.topic}: {f.error}" for f in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} event(s) were not acknowledged by Kafka: {shown}{more}",
            "check the broker and topics (`rewind topics create`), then re-send these events; their "
            "event_ids are unchanged, so the projector applies each at most once (a partition remembers the "
            "ids it applied for at least 524,288 offsets)",
        )
        self.failures = failures


def _normalized(value: str | int | float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value).strip().lower()


def producer_config(client_config: ClientConfig) -> dict[str, str | int | float | bool]:
    """The librdkafka configuration: the caller's properties plus the two durability guarantees.

    Raises ``ValueError`` if the caller asks for weaker delivery (``acks`` other than all, or
    idempotence off): rewind's exactly-once story depends on both. Topic auto-creation by the
    producer is off unless the caller turns it on: rewind's topics need their own settings
    (``rewind topics create``), a typo in a topic name must fail rather than create a stray topic.
    """
    config = dict(client_config)
    if "bootstrap.servers" not in config:
        raise ValueError("EventProducer needs bootstrap.servers in its client configuration")
    acks = config.get("acks", config.get("request.required.acks"))
    if acks is not None and _normalized(acks) not in _ACKS_ALL:
        raise ValueError(f"EventProducer requires acks=all; remove acks={acks} from the Kafka properties")
    idempotence = config.get("enable.idempotence")
    if idempotence is not None and _normalized(idempotence) not in ("true", "1"):
        raise ValueError(
            "EventProducer requires enable.idempotence=true; "
            "remove enable.idempotence from the Kafka properties"
        )
    config.update(REQUIRED_PROPERTIES)
    config.setdefault("allow.auto.create.topics", "false")
    return config


class EventProducer:
    """Validated, routed, idempotent producing of rewind events (see the module docstring).

    Not thread-safe: delivery reports run inside ``poll``/``flush`` on the calling thread and update
    plain counters. Use one instance per thread.
    """

    def __init__(
        self,
        client_config: ClientConfig,
        *,
        events_topic: str,
        config_topic: str,
        codec: Codec | None = None,
        latency_observer: Callable[[float], None] | None = None,
    ) -> None:
        self.events_topic = events_topic
        self.config_topic = config_topic
        self.codec = codec or default_codec()
        self.latency_observer = latency_observer
        self.queued = 0
        self.acked = 0
        self.failed = 0
        self.latency_count = 0
        self.latency_sum_s = 0.0
        self.latency_max_s = 0.0
        self.last_offsets: dict[tuple[str, int], int] = {}
        self._failures: list[DeliveryFailure] = []
        self._fatal: KafkaError | None = None
        self._known_topics: set[str] = set()
        # Per type, built once: (topic, key field, headers); librdkafka copies the header list per record.
        self._routes: dict[str, tuple[str, str, Headers]] = {}
        for name in self.codec.catalog.type_names():
            topic, key_field = (config_topic, "key") if name == CONFIG_EVENT else (events_topic, "account_id")
            self._routes[name] = (topic, key_field, [("event_type", name.encode())])
        self._encoders: dict[str, Encoder] = {}
        self._built_encoders: dict[str, Encoder] = {}
        for name, accept in ACCEPT.items():
            encoder = self.codec.compiled_encoder(name, accept)
            if encoder is not None:
                self._encoders[name] = encoder
            encoder = self.codec.compiled_encoder(name, None)
            if encoder is not None:
                self._built_encoders[name] = encoder
        config: dict[str, Any] = producer_config(client_config)
        config["error_cb"] = self._on_error
        self._producer = Producer(config)
        self._on_async_delivery = self._delivered_async

    @property
    def in_flight(self) -> int:
        """Records handed to librdkafka and not yet acknowledged or failed."""
        return len(self._producer)

    def check_topics(self) -> None:
        """Fail fast: raise :class:`ProduceError` unless both topics exist (otherwise checked lazily)."""
        for topic in (self.events_topic, self.config_topic):
            if topic not in self._known_topics:
                self._check_topic(topic)

    def emit(self, event: Mapping[str, Any], timeout: float = 30.0) -> tuple[int, int]:
        """Produce one event and wait for the broker's acknowledgement; returns (partition, offset).

        Raises ``ValueError`` for an invalid event (nothing is sent), :class:`ProduceError` if the
        broker refused it or did not acknowledge it within ``timeout`` seconds (it may still arrive
        later; a re-send with the same ``event_id`` is safe). Records queued earlier with
        ``emit_async`` are sent first and waited for too; their failures stay for :meth:`flush`.
        """
        outcome: list[Message | KafkaError] = []

        def delivered(err: KafkaError | None, message: Message) -> None:
            if err is None:
                self._delivered_async(err, message)
            else:
                self.failed += 1  # raised by emit, not collected for flush
            outcome.append(err if err is not None else message)

        self._raise_if_fatal()
        topic, value, key, event_type, headers = self._prepare(event)
        self._send(topic, value, key, headers, delivered)
        event_id = event["event_id"]
        deadline = time.monotonic() + timeout
        while not outcome:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProduceError(
                    f"{event_type} {event_id} was not acknowledged by Kafka within {timeout:g} s",
                    "check that the broker is reachable; the event may still be delivered, and re-sending "
                    "the same event (same event_id) is safe",
                )
            self._producer.flush(min(remaining, 1.0))
            self._raise_if_fatal()
        result = outcome[0]
        if isinstance(result, KafkaError):
            raise ProduceError(
                f"{event_type} {event_id} was not acknowledged by Kafka ({topic}): {result.str()}",
                _fix_for(result),
            )
        partition, offset = result.partition(), result.offset()
        assert partition is not None and offset is not None
        return partition, offset

    def emit_async(self, event: Mapping[str, Any]) -> None:
        """Validate, encode and queue one event; delivery is confirmed by :meth:`flush`.

        Raises ``ValueError`` for an invalid event (nothing is queued). Blocks only while librdkafka's
        local queue is full (back-pressure).
        """
        if self._fatal is not None:
            self._raise_if_fatal()
        topic, value, key, _, headers = self._prepare(event)
        try:
            self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_async_delivery)
        except BufferError:
            self._send(topic, value, key, headers, self._on_async_delivery, count=False)
        self.queued += 1
        if not self.queued % POLL_EVERY:
            self._producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued record is acknowledged or failed.

        Raises :class:`DeliveryFailedError` with every failure since the last flush, or
        :class:`ProduceError` if records are still unacknowledged after ``timeout`` seconds.
        """
        remaining = self._producer.flush(timeout)
        self._raise_if_fatal()
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailedError(failures)
        if remaining:
            raise ProduceError(
                f"{remaining} event(s) still unacknowledged after {timeout:g} s",
                "check that the broker is reachable and call flush() again; nothing was dropped",
            )

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports (counters, latency, failures) without waiting for all of them."""
        self._producer.poll(timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Flush; raises like :meth:`flush` if anything was not delivered."""
        self.flush(timeout)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._producer.flush(5.0)

    def route(self, event: Mapping[str, Any]) -> tuple[str, str]:
        """(topic, key) of an event: config changes by key to the config topic, the rest by account."""
        if event["event_type"] == CONFIG_EVENT:
            return self.config_topic, str(event["key"])
        return self.events_topic, str(event["account_id"])

    def _prepare(self, event: Mapping[str, Any]) -> tuple[str, bytes, str, str, Headers]:
        """(topic, value, key, event_type, headers) of a valid event; ``ValueError`` for an invalid one."""
        try:
            event_type = event["event_type"]
            encoders = self._built_encoders if type(event) is BuiltEvent else self._encoders
            value = encoders[event_type](event)
        except Exception:  # not a normalized event of a known type: validate_event decides below
            value = None
        if value is None:
            checked = validate_event(event)
            value = self.codec.encode(checked)
            event, event_type = checked, checked["event_type"]
        topic, key_field, headers = self._routes[event_type]
        if topic not in self._known_topics:
            self._check_topic(topic)
        return topic, value, event[key_field], event_type, headers

    def _send(
        self,
        topic: str,
        value: bytes,
        key: str,
        headers: Headers,
        on_delivery: Callable[[KafkaError | None, Message], None],
        *,
        count: bool = True,
    ) -> None:
        """Hand one record to librdkafka, serving delivery reports while its queue is full."""
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        if count:
            self.queued += 1
            if not self.queued % POLL_EVERY:
                self._producer.poll(0)

    def _delivered_async(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            self.failed += 1
            self._failures.append(self._failure(err, message))
            return
        latency = message.latency() or 0.0
        self.acked += 1
        self.latency_count += 1
        self.latency_sum_s += latency
        if latency > self.latency_max_s:
            self.latency_max_s = latency
        # topic, partition and offset are set on every delivered record
        self.last_offsets[(message.topic(), message.partition())] = message.offset()  # type: ignore[index,assignment]
        if self.latency_observer is not None:
            self.latency_observer(latency)

    def _failure(self, err: KafkaError, message: Message) -> DeliveryFailure:
        try:
            event = self.codec.decode(message.value())
            event_id, event_type = str(event["event_id"]), str(event["event_type"])
        except Exception:
            event_id, event_type = "?", "?"
        return DeliveryFailure(event_id, event_type, str(message.topic()), err.str())

    def _check_topic(self, topic: str) -> None:
        try:
            metadata = self._producer.list_topics(topic, timeout=15)
        except KafkaException as exc:
            raise ProduceError(
                f"cannot reach Kafka to look up topic {topic}: {exc}", "check the bootstrap address"
            ) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise ProduceError(
                f"topic {topic} does not exist on the cluster",
                "create rewind's topics with `rewind topics create` (or point topics.events / "
                "topics.config at existing topics)",
            )
        self._known_topics.add(topic)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise ProduceError(
                f"the Kafka producer hit a fatal error and cannot continue: {self._fatal.str()}",
                "create a new EventProducer; events not acknowledged so far must be re-sent",
            )


def _fix_for(error: KafkaError) -> str:
    if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return "create rewind's topics with `rewind topics create`"
    if error.code() == KafkaError._MSG_TIMED_OUT:
        return "the broker was unreachable for message.timeout.ms; check it and re-send (same event_id)"
    return "check the broker's log; re-sending the same event (same event_id) is safe"
