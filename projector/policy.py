"""The anomaly policy: one record decoded, folded, and its outcome named.

Every consumer of the log takes the same step per record: decode its value, apply the event with the
fold, record an anomaly (or stop before it), and move past the offset. :class:`EventsStep` (an
events-topic partition) and :class:`ConfigStep` (the config topic) are that step, bound to one
state and one policy:

- ``quarantine``: an event that cannot apply is recorded in ``anomalies`` and the step moves on.
- ``halt``: the same, except that a non-benign anomaly stops the step *before* the event:
  nothing is recorded and the offset does not move. Benign duplicates are recorded under both.
- An event whose ``event_id`` the partition applied within its window
  (:mod:`projector.event_window`) is not applied again, whatever its type: it is recorded as a
  benign ``DUPLICATE_EVENT`` under both policies, so a re-send never changes state or halts.
- A value that cannot be decoded changes no state; the step moves past it (the projector sends it
  to the dead-letter topic before it commits).
- A record that decodes but does not fit the contract is refused the same way, with the reason: an
  event that belongs on the other topic, an enum symbol the fold does not know, or a record key that
  is not the one the contract prescribes (``account_id`` on the events topic, the config ``key`` on
  the config topic). A refused record never reaches the state, so one bad record never stops the
  partition or any other.

Guarantees:

- **Pure**: no Kafka, no LMDB, no metrics. Only the bound state is changed; sending dead letters,
  counting and committing are the caller's.
- **Offsets only move forward**: a record at or before the last offset stepped past raises
  :class:`~rewind.ground.errors.InvariantViolation` (checked explicitly, so under ``python -O`` too)
  before anything changes.
- **No per-record allocation of its own**: a step answers with one of the int codes below and keeps
  what the caller may need (the event, the anomaly, the decode error) on itself until the next step.
- :class:`~projector.fold.InvariantError` (a bug of the fold, never data) passes through unchanged:
  the batch must be discarded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from projector.encoding import NO_OFFSET
from projector.event_window import EventWindow
from projector.fold import CONFIG_TOPIC_PARTITION, Event, EventContractError, apply_config, apply_event
from projector.model import Anomaly, AnomalyKind
from projector.state import ConfigState, PartitionState
from rewind.ground.errors import InvariantViolation
from rewind.ground.settings import ANOMALY_POLICIES
from schemas.codec import default_codec
from schemas.errors import EventDecodeError

QUARANTINE: Final = "quarantine"
"""Record an event that cannot apply, and go on (the default)."""
HALT: Final = "halt"
"""Stop before an event that cannot apply, unless its anomaly is benign."""

APPLIED: Final = 0
"""The event was applied; ``step.event`` is it."""
RECORDED: Final = 1
"""The event could not apply; ``step.anomaly`` was recorded and the state is otherwise unchanged."""
HALTED: Final = 2
"""``halt`` stopped before the event: nothing changed, the offset did not move; ``step.anomaly`` says why."""
UNDECODABLE: Final = 3
"""The value could not be decoded; ``step.error`` says why. The state is unchanged, the offset moved."""
REFUSED: Final = 4
"""The event does not fit the contract (topic, enum symbol or record key); ``step.error`` says why.
The state is unchanged, the offset moved: it goes where undecodable records go."""

KEY_NOT_CHECKED: Final = b"\x00key not checked\x00"
"""Passed as ``key`` by callers that feed events without Kafka records (tests, benchmarks)."""


class RefusedRecord(EventDecodeError):
    """A record that decodes but does not fit the event contract; the message says what and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, fingerprint=None, offset=0)


Decoder = Callable[[bytes | None], Mapping[str, Any]]

_NO_EVENT: Final[Mapping[str, Any]] = {}
_NO_ERROR: Final = EventDecodeError("no record was undecodable", fingerprint=None, offset=0)


class PolicyStep:
    """The step over one store's records; see the module docstring. Use a subclass.

    ``offset`` is the last offset stepped past (applied, recorded or undecodable), starting at the
    store's offset. After each step, ``event`` is the decoded event (empty when undecodable),
    ``anomaly`` the anomaly (None when the event applied), ``error`` the decode error (meaningful
    only after :data:`UNDECODABLE`).
    """

    def __init__(
        self,
        where: str,
        partition: int,
        window: EventWindow,
        policy: str,
        offset: int,
        decode: Decoder | None,
        key_field: str,
    ) -> None:
        if policy not in ANOMALY_POLICIES:
            raise ValueError(f"anomaly policy {policy!r} is not one of {', '.join(ANOMALY_POLICIES)}")
        self.where = where
        self.partition = partition
        # Bound once: the window is asked for every event, and a bound method is called without a
        # lookup by name.
        self._claim: Callable[[str, int], int] = window.claim
        self._release: Callable[[str, int], None] = window.release
        self._key_field = key_field
        self.halting = policy == HALT
        self.offset = offset
        self.event: Mapping[str, Any] = _NO_EVENT
        self.anomaly: Anomaly | None = None
        self.error: EventDecodeError = _NO_ERROR
        self._decode: Decoder = default_codec().decode if decode is None else decode

    def record(self, value: bytes | None, offset: int, key: bytes | None = KEY_NOT_CHECKED) -> int:
        """Decode ``value`` and :meth:`apply` it at ``offset``: :data:`UNDECODABLE` if it cannot be,
        :data:`REFUSED` if its record ``key`` is not the one the contract prescribes for it."""
        try:
            event = self._decode(value)
        except EventDecodeError as exc:
            return self._pass_over(offset, exc, UNDECODABLE)
        if key is not KEY_NOT_CHECKED:
            expected = self._expected_key(event)
            if expected is not None and key != expected:
                shown = "no key" if key is None else f"key {key!r}"
                return self._pass_over(
                    offset,
                    RefusedRecord(
                        f"{event['event_type']} {event['event_id']} at {self.where} offset {offset} has "
                        f"{shown}; the contract prescribes key {expected!r} ({self._key_field}), so it "
                        "may sit in a partition that does not own its entity: fix the producer's key"
                    ),
                    REFUSED,
                )
        return self.apply(event, offset)

    def _pass_over(self, offset: int, error: EventDecodeError, outcome: int) -> int:
        self._check_order(offset)
        self.event = _NO_EVENT
        self.anomaly = None
        self.error = error
        self.offset = offset
        return outcome

    def apply(self, event: Event, offset: int) -> int:
        """Apply a decoded ``event`` at ``offset`` under the policy: :data:`APPLIED`,
        :data:`RECORDED`, :data:`HALTED` or :data:`REFUSED`."""
        self._check_order(offset)
        event_id = event["event_id"]
        earlier = self._claim(event_id, offset)
        if earlier != NO_OFFSET:
            return self._repeat(event, offset, earlier)
        try:
            anomaly = self._fold(event, offset)
        except EventContractError as exc:
            self._release(event_id, offset)
            return self._pass_over(offset, RefusedRecord(f"{self.where} offset {offset}: {exc}"), REFUSED)
        self.event = event
        self.anomaly = anomaly
        if anomaly is None:
            self.offset = offset
            return APPLIED
        self._release(event_id, offset)
        if self.halting and not anomaly.benign:
            return HALTED
        self._put_anomaly(anomaly)
        self.offset = offset
        return RECORDED

    def _repeat(self, event: Event, offset: int, earlier: int) -> int:
        """Record ``event`` as a repeat of the one applied at ``earlier`` (benign under every policy)."""
        anomaly = Anomaly(
            self.partition,
            offset,
            event["event_id"],
            event["event_type"],
            AnomalyKind.DUPLICATE_EVENT,
            f"event_id {event['event_id']} was applied at offset {earlier}",
        )
        self.event = event
        self.anomaly = anomaly
        self._put_anomaly(anomaly)
        self.offset = offset
        return RECORDED

    def _check_order(self, offset: int) -> None:
        if offset <= self.offset:
            raise InvariantViolation(
                f"{self.where}: offset {offset} after {self.offset}: offsets must only move forward",
                "a bug or a second writer; report it with the partition and offsets",
            )

    def _expected_key(self, event: Event) -> bytes | None:
        """The record key the contract prescribes for ``event``; None for an event of the other topic
        (it has no such field, and :meth:`apply` refuses it)."""
        value = event.get(self._key_field)
        return None if value is None else str(value).encode()

    def _fold(self, event: Event, offset: int) -> Anomaly | None:
        raise NotImplementedError

    def _put_anomaly(self, anomaly: Anomaly) -> None:
        raise NotImplementedError


class EventsStep(PolicyStep):
    """The step over one events-topic partition's state (:func:`projector.fold.apply_event`)."""

    def __init__(
        self,
        state: PartitionState,
        partition: int,
        policy: str = QUARANTINE,
        offset: int = NO_OFFSET,
        decode: Decoder | None = None,
    ) -> None:
        super().__init__(
            f"partition {partition}", partition, state.event_window(), policy, offset, decode, "account_id"
        )
        self.state = state

    def _fold(self, event: Event, offset: int) -> Anomaly | None:
        return apply_event(self.state, event, self.partition, offset)

    def _put_anomaly(self, anomaly: Anomaly) -> None:
        self.state.put_anomaly(anomaly)


class ConfigStep(PolicyStep):
    """The step over the config topic's state (:func:`projector.fold.apply_config`)."""

    def __init__(
        self,
        state: ConfigState,
        policy: str = QUARANTINE,
        offset: int = NO_OFFSET,
        decode: Decoder | None = None,
    ) -> None:
        super().__init__(
            f"config partition {CONFIG_TOPIC_PARTITION}",
            CONFIG_TOPIC_PARTITION,
            state.event_window(),
            policy,
            offset,
            decode,
            "key",
        )
        self.state = state

    def _fold(self, event: Event, offset: int) -> Anomaly | None:
        return apply_config(self.state, event, offset)

    def _put_anomaly(self, anomaly: Anomaly) -> None:
        self.state.put_anomaly(anomaly)
