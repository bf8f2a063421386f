"""The policy step (projector/policy.py): the outcome of each record, and what it changed."""

from __future__ import annotations

import pytest

from projector.digest import state_digest
from projector.model import AnomalyKind
from projector.policy import (
    APPLIED,
    HALT,
    HALTED,
    QUARANTINE,
    RECORDED,
    REFUSED,
    UNDECODABLE,
    ConfigStep,
    EventsStep,
    RefusedRecord,
)
from projector.state import MemoryConfigState, MemoryState
from rewind.ground.errors import InvariantViolation
from schemas.codec import encode
from schemas.errors import UndecodableEventError
from tests.fold_events import accepted, config, fill, submitted


def _filled_order(policy: str) -> tuple[MemoryState, EventsStep]:
    state = MemoryState()
    step = EventsStep(state, 4, policy)
    for event in (submitted("o", "10", "5"), fill("e1", "o", "10", "5")):
        assert step.apply(event, step.offset + 1) == APPLIED
    return state, step


def test_quarantine_records_an_anomaly_and_moves_on() -> None:
    state, step = _filled_order(QUARANTINE)
    assert step.apply(accepted("o"), 2) == RECORDED
    assert step.anomaly is not None and step.anomaly.kind == AnomalyKind.TERMINAL_ORDER
    assert step.anomaly.partition == 4
    assert state.anomalies == {2: step.anomaly} and step.offset == 2


def test_halt_stops_before_a_non_benign_anomaly_and_changes_nothing() -> None:
    state, step = _filled_order(HALT)
    before = state_digest(state.records())
    event = accepted("o")
    assert step.apply(event, 2) == HALTED
    assert step.event is event and step.anomaly is not None
    assert step.anomaly.kind == AnomalyKind.TERMINAL_ORDER
    assert step.offset == 1 and state.anomalies == {}
    assert state_digest(state.records()) == before


def test_halt_records_a_benign_duplicate_and_moves_on() -> None:
    state, step = _filled_order(HALT)
    assert step.apply(fill("e1", "o", "10", "5"), 2) == RECORDED
    assert step.anomaly is not None and step.anomaly.benign
    assert list(state.anomalies) == [2] and step.offset == 2


def test_an_undecodable_value_changes_no_state_and_moves_past_its_offset() -> None:
    state, step = _filled_order(QUARANTINE)
    before = state_digest(state.records())
    assert step.record(b"\x00not avro", 7) == UNDECODABLE
    assert isinstance(step.error, UndecodableEventError) and step.anomaly is None
    assert step.offset == 7 and state_digest(state.records()) == before
    assert step.record(encode(submitted("p", "1", "5")), 8) == APPLIED
    assert step.event["order_id"] == "p" and state.order("p") is not None


@pytest.mark.parametrize("offset", [0, 1])
def test_an_offset_at_or_before_the_last_one_is_refused_before_anything_changes(offset: int) -> None:
    state, step = _filled_order(QUARANTINE)
    before = state_digest(state.records())
    with pytest.raises(InvariantViolation, match=f"partition 4: offset {offset} after 1"):
        step.apply(submitted("p", "1", "5"), offset)
    with pytest.raises(InvariantViolation):
        step.record(b"\x00not avro", offset)
    assert step.offset == 1 and state_digest(state.records()) == before


def test_the_config_step_folds_config_and_records_its_anomalies() -> None:
    state = MemoryConfigState()
    step = ConfigStep(state, QUARANTINE, 9)
    assert step.apply(config("risk.halt", True, 2), 10) == APPLIED
    assert step.apply(config("risk.halt", False, 1), 11) == RECORDED
    assert step.anomaly is not None and step.anomaly.kind == AnomalyKind.STALE_CONFIG_VERSION
    assert list(state.anomalies) == [11] and step.offset == 11


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="anomaly policy 'ignore'"):
        EventsStep(MemoryState(), 0, "ignore")


def test_an_event_of_the_other_topic_is_refused_and_changes_nothing() -> None:
    state, step = _filled_order(QUARANTINE)
    before = state_digest(state.records())
    assert step.apply(config("risk.max_gross_exposure", 3, 1), 2) == REFUSED
    assert isinstance(step.error, RefusedRecord) and "config topic" in str(step.error)
    assert step.offset == 2 and state.anomalies == {}
    assert state_digest(state.records()) == before
    config_step = ConfigStep(MemoryConfigState(), HALT)
    assert config_step.apply(submitted("o2", "1", "5"), 0) == REFUSED
    assert "only ConfigChanged" in str(config_step.error) and config_step.offset == 0


@pytest.mark.parametrize(
    ("key", "shown"),
    [(None, "no key"), (b"\xff\xfe", "key b'\\xff\\xfe'"), (b"ACC-OTHER", "key b'ACC-OTHER'")],
    ids=["null", "not-utf8", "another-account"],
)
def test_a_record_keyed_other_than_its_account_is_refused(key: bytes | None, shown: str) -> None:
    state = MemoryState()
    step = EventsStep(state, 0, HALT)
    event = submitted("o", "10", "5")
    assert step.record(encode(event), 0, key) == REFUSED
    message = str(step.error)
    assert shown in message and repr(event["account_id"].encode()) in message
    assert step.offset == 0 and state_digest(state.records()) == state_digest(MemoryState().records())
    assert step.record(encode(event), 1, event["account_id"].encode()) == APPLIED


def test_a_config_record_keyed_other_than_its_key_is_refused() -> None:
    step = ConfigStep(MemoryConfigState(), QUARANTINE)
    event = config("risk.max_gross_exposure", 3, 1)
    assert step.record(encode(event), 0, b"risk.other") == REFUSED
    assert step.record(encode(event), 1, b"risk.max_gross_exposure") == APPLIED
