"""The dead-letter topic: where records that cannot be decoded go, with everything needed to retry them.

A dead letter keeps the original key, value and headers, and adds headers naming the error, the
source topic, partition and offset (and the schema fingerprint when one was read). The projector
sends a batch's dead letters and waits for the broker's acknowledgement *before* it commits the
LMDB transaction that moves past them, so a crash can at worst send one twice, never lose one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import Message, Producer

from rewind.ground.errors import RewindError
from rewind.ground.settings import ClientConfig

HEADER_ERROR = "rewind.error"
HEADER_ERROR_CLASS = "rewind.error.class"
HEADER_TOPIC = "rewind.source.topic"
HEADER_PARTITION = "rewind.source.partition"
HEADER_OFFSET = "rewind.source.offset"
HEADER_FINGERPRINT = "rewind.fingerprint"


@dataclass
class DeadLetters:
    """Sends poison records to the dead-letter topic and confirms every one was acknowledged."""

    client_config: ClientConfig
    topic: str
    sent: int = 0
    failed: int = 0
    _producer: Producer | None = None
    _failures: list[str] = field(default_factory=list)

    def send(self, message: Message, error: Exception, fingerprint: str | None) -> None:
        if self._producer is None:
            self._producer = Producer(
                {**self.client_config, "enable.idempotence": True, "acks": "all", "linger.ms": 0}
            )
        original = message.headers() or []
        headers: list[tuple[str, str | bytes | None]] = [(h[0], h[1]) for h in original]
        headers += [
            (HEADER_ERROR, str(error).encode()),
            (HEADER_ERROR_CLASS, type(error).__name__.encode()),
            (HEADER_TOPIC, str(message.topic()).encode()),
            (HEADER_PARTITION, str(message.partition()).encode()),
            (HEADER_OFFSET, str(message.offset()).encode()),
        ]
        if fingerprint:
            headers.append((HEADER_FINGERPRINT, fingerprint.encode()))
        self._producer.produce(
            self.topic, key=message.key(), value=message.value(), headers=headers, on_delivery=self._delivered
        )

    def _delivered(self, error: object, _message: Message) -> None:
        if error is not None:
            self.failed += 1
            self._failures.append(str(error))
        else:
            self.sent += 1

    def confirm(self, timeout: float = 30.0) -> None:
        """Wait until every dead letter sent so far is acknowledged; raise if any was not."""
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout)
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise RewindError(
                f"could not write {remaining + len(failures)} record(s) to the dead-letter topic "
                f"{self.topic}: {'; '.join(failures[:3]) or 'not acknowledged in time'}",
                "check that the topic exists (`rewind topics create`) and the broker is healthy; the "
                "projector stopped before moving past those records, so nothing is lost",
            )
