"""Whether the Kafka brokers answer: one probe thread per process, one log line per change.

A running projector or service asks the cluster for the events topic's metadata about once a second,
on an admin client of its own. An answer is contact. Without contact for ``broker.lost_after_seconds``
the brokers are *lost*: that is logged once (with the fix), the service's ``/health`` answers 503 and
``rewind_broker_reachable`` is 0. Nothing stops meanwhile: the Kafka clients keep reconnecting, the
probe keeps asking, and the first answer after the loss is logged once too.

Connection failures are what librdkafka reports through ``error_cb``; the last one is kept to say why
in the log line and in ``/health``. The probe's client logs nothing itself, and the projector's
consumer logs through :data:`KAFKA_LOG`, which lets each of librdkafka's messages through once per
:data:`KAFKA_LOG_REPEAT_SECONDS` (a consumer without brokers reconnects, and would log, many times a
second): an outage is a few lines, not one per reconnect.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from rewind.ground.settings import Settings

log = logging.getLogger("rewind.broker")

KAFKA_LOG_REPEAT_SECONDS: Final = 300.0
_NUMBERS = re.compile(r"\d+")
_SUMMARY = re.compile(r"\d+/\d+ brokers are down")


class _OncePerWhile(logging.Filter):
    """Lets a message through once per :data:`KAFKA_LOG_REPEAT_SECONDS`; messages that differ only
    in their numbers (a timing, a port, a client's sequence number) count as the same."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = _NUMBERS.sub("#", record.getMessage())
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < KAFKA_LOG_REPEAT_SECONDS:
                return False
            if len(self._seen) > 1000:
                self._seen = {k: t for k, t in self._seen.items() if now - t < KAFKA_LOG_REPEAT_SECONDS}
            self._seen[key] = now
        return True


KAFKA_LOG: Final = logging.getLogger("rewind.kafka")
"""librdkafka's log of the projector's consumer (``logger`` in its configuration), repeats held back."""
KAFKA_LOG.addFilter(_OncePerWhile())

PROBE_INTERVAL_SECONDS: Final = 1.0
"""Pause between two probes (a probe that waits for an answer adds its own wait)."""
PROBE_RECONNECT_MS: Final = 1000
"""The probe's client reconnects at least this often, so a broker that is back is noticed soon."""


def broker_fix(settings: Settings) -> str:
    """What a person does about brokers that do not answer."""
    return (
        f"check that the brokers in kafka.bootstrap ({settings.bootstrap}; REWIND_BOOTSTRAP) are "
        "running and reachable from here; for the local broker, `rewind kafka status` and "
        "`rewind kafka start`"
    )


class BrokerWatch:
    """Contact with the brokers, kept by a probe thread (:meth:`start`); readable from any thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_answer: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_answer`` is called (on the probe thread) whenever the brokers answer after a probe
        that got no answer, lost or not: a caller waiting for them can go on at once."""
        self.bootstrap = settings.bootstrap
        self.lost_after = float(settings["broker.lost_after_seconds"])
        self.fix = broker_fix(settings)
        self._topic = settings.events_topic
        self._probe_timeout = min(float(settings["broker.wait_seconds"]), max(1.0, self.lost_after / 3))
        self._on_answer = on_answer
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_contact: float | None = None
        self._answering = False
        self._probed = threading.Event()
        self._reported_lost = False
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        config: dict[str, Any] = {
            **settings.client_config(),
            "log_level": 0,
            "reconnect.backoff.max.ms": PROBE_RECONNECT_MS,
            "allow.auto.create.topics": False,  # asking about the topic never creates it
            "error_cb": self._on_error,
        }
        self._admin = AdminClient(config)

    # The probe

    def start(self) -> BrokerWatch:
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop probing (the thread ends after its current probe; nobody waits for it)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe()
            self._stop.wait(PROBE_INTERVAL_SECONDS)

    def probe(self) -> bool:
        """Ask for the events topic's metadata once; True when the brokers answered."""
        try:
            metadata = self._admin.list_topics(topic=self._topic, timeout=self._probe_timeout)
            answered = bool(metadata.brokers)
            if not answered:
                self._note_error("the cluster's metadata names no broker")
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            self._note_error(error.str() if isinstance(error, KafkaError) else str(exc))
            answered = False
        self._admin.poll(0)  # serves error_cb
        if answered:
            self.contact()
        else:
            self._no_answer()
        return answered

    def _on_error(self, error: KafkaError) -> None:
        self._note_error(error.str())

    def _note_error(self, text: str) -> None:
        """Keep the latest error since the last contact; librdkafka's summary ("1/1 brokers are down")
        does not replace a specific one (a refused connection, a failed name lookup)."""
        with self._lock:
            if self._last_error is None or not _SUMMARY.fullmatch(text):
                self._last_error = text

    # Contact, from the probe or from any other client that got an answer

    def contact(self) -> None:
        """The brokers answered just now."""
        with self._lock:
            now = self._clock()
            was_answering, was_lost = self._answering, self._reported_lost
            silent = now - (self._last_contact if self._last_contact is not None else self._started)
            self._last_contact = now
            self._answering = True
            self._reported_lost = False
            self._last_error = None
        self._probed.set()
        if was_lost:
            log.info(
                "the Kafka brokers at %s answer again after %.0f s without an answer; resuming",
                self.bootstrap,
                silent,
            )
        if not was_answering and self._on_answer is not None:
            self._on_answer()

    def _no_answer(self) -> None:
        with self._lock:
            self._answering = False
        self._probed.set()
        self.lost()

    # Reading it

    def wait_for_first_probe(self, timeout: float) -> bool:
        """Wait until the first probe has ended (at most ``timeout``); True when the brokers answered."""
        self._probed.wait(timeout)
        return self.answering()

    def answering(self) -> bool:
        """True when the last probe (or other contact) got an answer."""
        with self._lock:
            return self._answering

    def contact_age(self) -> float:
        """Seconds since the brokers last answered (since the watch started, if they never did)."""
        with self._lock:
            since = self._last_contact if self._last_contact is not None else self._started
            return max(0.0, self._clock() - since)

    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    def lost(self) -> bool:
        """No answer for longer than ``broker.lost_after_seconds``; the first time it is seen, it is
        logged with the fix (once per loss, whichever thread sees it first)."""
        with self._lock:
            since = self._last_contact if self._last_contact is not None else self._started
            silent = self._clock() - since
            lost = not self._answering and silent > self.lost_after
            first = lost and not self._reported_lost
            if first:
                self._reported_lost = True
            error = self._last_error
        if first:
            log.error(
                "lost the Kafka brokers at %s: no answer for %.0f s (broker.lost_after_seconds=%g)%s; "
                "rewind keeps retrying and resumes by itself when they answer; fix: %s",
                self.bootstrap,
                silent,
                self.lost_after,
                f", last error: {error}" if error else "",
                self.fix,
            )
        return lost

    def check(self) -> dict[str, Any]:
        """The ``broker`` check of ``/health``."""
        lost = self.lost()
        age = self.contact_age()
        check: dict[str, Any] = {
            "ok": not lost,
            "bootstrap": self.bootstrap,
            "last_contact_seconds_ago": round(age, 3),
            "lost_after_seconds": self.lost_after,
        }
        if lost:
            error = self.last_error()
            check["error"] = f"the Kafka brokers at {self.bootstrap} have not answered for {age:.0f} s" + (
                f" (last error: {error})" if error else ""
            )
            check["fix"] = self.fix
        return check
