"""Every event applies at most once per event_id (projector/event_window.py, projector/policy.py).

A producer that retried after a timeout writes the same event twice. Whatever its type, the repeat
is recorded as a benign DUPLICATE_EVENT, leaves the state as it was, and never halts; the window
that remembers applied ids is bounded, deterministic and survives a restart from stored rows.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projector import encoding
from projector.digest import state_digest
from projector.event_window import (
    BUCKET_OFFSETS,
    WINDOW_BUCKETS,
    WINDOW_OFFSETS,
    EventWindow,
    _DictIndex,
    _new_index,
)
from projector.model import AnomalyKind
from projector.policy import APPLIED, HALT, QUARANTINE, RECORDED, ConfigStep, EventsStep
from projector.state import MemoryConfigState, MemoryState
from tests.fold_events import (
    Event,
    accepted,
    adjusted,
    balance,
    canceled,
    config,
    expired,
    fill,
    rejected,
    replaced,
    submitted,
)

# Each case: the events that make the last one applicable, the last one being the one sent twice.
CASES: dict[str, Callable[[], list[Event]]] = {
    "OrderSubmitted": lambda: [submitted("o", "10", "5")],
    "OrderAccepted": lambda: [submitted("o", "10", "5"), accepted("o")],
    "OrderRejected": lambda: [submitted("o", "10", "5"), rejected("o")],
    "OrderReplaced": lambda: [submitted("o", "10", "5"), replaced("o", "20")],
    "OrderCanceled": lambda: [submitted("o", "10", "5"), canceled("o")],
    "OrderExpired": lambda: [submitted("o", "10", "5"), expired("o")],
    "Fill": lambda: [submitted("o", "10", "5"), fill("e1", "o", "4", "5")],
    "PositionAdjusted DELTA": lambda: [adjusted("AAPL", "DELTA", "3", "100")],
    "PositionAdjusted SET": lambda: [adjusted("AAPL", "SET", "3", "100")],
    "BalanceChanged": lambda: [balance("CHF", "2665191.03")],
}


def _apply(window: EventWindow, event_id: str, offset: int) -> None:
    assert window.claim(event_id, offset) == encoding.NO_OFFSET
    window.remember(event_id, offset)


@pytest.mark.parametrize("policy", [QUARANTINE, HALT])
@pytest.mark.parametrize("case", sorted(CASES))
def test_an_event_sent_twice_applies_once_and_never_halts(case: str, policy: str) -> None:
    state = MemoryState()
    step = EventsStep(state, 3, policy)
    events = CASES[case]()
    for event in events:
        assert step.apply(event, step.offset + 1) == APPLIED, (event, step.anomaly)
    before = [record for record in state.records() if record[0] != encoding.META]
    repeat = dict(events[-1])
    assert step.apply(repeat, step.offset + 5) == RECORDED
    assert step.anomaly is not None and step.anomaly.kind == AnomalyKind.DUPLICATE_EVENT
    assert step.anomaly.benign and step.anomaly.partition == 3
    assert step.anomaly.detail == f"event_id {repeat['event_id']} was applied at offset {len(events) - 1}"
    after = [record for record in state.records() if record[0] not in (encoding.META, encoding.ANOMALIES)]
    assert after == [record for record in before if record[0] != encoding.ANOMALIES]
    assert step.offset == len(events) - 1 + 5


def test_a_balance_delta_sent_twice_changes_the_balance_once() -> None:
    state = MemoryState()
    step = EventsStep(state, 0)
    deposit = balance("CHF", "2665191.03", account="ACC-0001")
    assert step.apply(deposit, 0) == APPLIED
    assert step.apply(dict(deposit), 1) == RECORDED
    assert state.balances["ACC-0001", "CHF"].amount == 266519103000000


def test_a_config_change_sent_twice_applies_once() -> None:
    state = MemoryConfigState()
    step = ConfigStep(state, HALT)
    change = config("risk.max_gross", "1000", 1)
    assert step.apply(change, 0) == APPLIED
    assert step.apply(dict(change), 1) == RECORDED
    assert step.anomaly is not None and step.anomaly.kind == AnomalyKind.DUPLICATE_EVENT
    assert step.anomaly.partition == 0


def test_an_event_that_was_not_applied_is_not_remembered() -> None:
    """An event recorded as an anomaly changed nothing; the same event sent again is judged afresh."""
    state = MemoryState()
    step = EventsStep(state, 0)
    early_fill = fill("e1", "o", "4", "5")
    assert step.apply(early_fill, 0) == RECORDED
    assert step.anomaly is not None and step.anomaly.kind == AnomalyKind.UNKNOWN_ORDER
    assert step.apply(submitted("o", "10", "5"), 1) == APPLIED
    assert step.apply(dict(early_fill), 2) == APPLIED
    assert state.orders["o"].filled == 4 * 10**8


@pytest.mark.parametrize(
    ("first", "repeat", "duplicate"),
    [
        (5, 5 + WINDOW_OFFSETS, True),  # the fewest offsets an id is remembered for
        (0, (WINDOW_BUCKETS + 1) * BUCKET_OFFSETS - 1, True),  # the most: to the end of the bucket
        (0, (WINDOW_BUCKETS + 1) * BUCKET_OFFSETS, False),
        (BUCKET_OFFSETS - 1, (WINDOW_BUCKETS + 1) * BUCKET_OFFSETS, False),
    ],
)
def test_the_window_edge(first: int, repeat: int, duplicate: bool) -> None:
    state = MemoryState()
    step = EventsStep(state, 0)
    deposit = balance("USD", "1")
    assert step.apply(deposit, first) == APPLIED
    assert step.apply(dict(deposit), repeat) == (RECORDED if duplicate else APPLIED)
    assert state.balances["ACC1", "USD"].amount == (1 if duplicate else 2) * 10**8


def test_memory_and_disk_stay_bounded() -> None:
    """However many events a partition applies, at most WINDOW_BUCKETS + 1 buckets are held."""
    window = EventWindow()
    for offset in range(0, 3 * WINDOW_OFFSETS, 7):
        _apply(window, f"id-{offset}", offset)
    rows = list(window.rows())
    assert len(rows) == WINDOW_BUCKETS + 1
    assert len(window) <= (WINDOW_BUCKETS + 1) * BUCKET_OFFSETS // 7 + 1
    assert window.applied_at("id-0", 3 * WINDOW_OFFSETS) == encoding.NO_OFFSET
    newest = (3 * WINDOW_OFFSETS - 1) // 7 * 7
    assert window.applied_at(f"id-{newest}", newest + 1) == newest


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([1, 1, 2, 900, 30_000, 200_000]), min_size=1, max_size=80),
    ids=st.data(),
    flushes=st.sets(st.integers(0, 80)),
)
def test_stored_rows_do_not_depend_on_batching_and_load_back_equal(
    gaps: list[int], ids: st.DataObject, flushes: set[int]
) -> None:
    """Rows written batch by batch (changed_rows at arbitrary points) add up to the rows of one
    window fed without a break, and a window loaded from them answers exactly the same."""
    names = [ids.draw(st.sampled_from(["a", "b", "c", "d", "e", "f"])) for _ in gaps]
    straight, batched = EventWindow(), EventWindow()
    stored: dict[bytes, bytes] = {}
    offset = -1
    for index, (gap, name) in enumerate(zip(gaps, names, strict=True)):
        offset += gap
        for window in (straight, batched):
            if window.claim(name, offset) == encoding.NO_OFFSET:
                _apply(window, name, offset)
        if index in flushes:
            for key, value in batched.changed_rows().items():
                if value is None:
                    stored.pop(key, None)
                else:
                    stored[key] = value
    for key, value in batched.changed_rows().items():
        if value is None:
            stored.pop(key, None)
        else:
            stored[key] = value
    assert sorted(stored.items()) == list(straight.rows())
    loaded = EventWindow.load(sorted(stored.items()))
    assert list(loaded.rows()) == list(straight.rows())
    for name in "abcdef":
        for probe in (offset, offset + 1, offset + WINDOW_OFFSETS):
            assert loaded.applied_at(name, probe) == straight.applied_at(name, probe)


def test_a_damaged_window_row_is_refused() -> None:
    window = EventWindow()
    _apply(window, "a", 3)
    ((key, value),) = window.rows()
    damaged = bytearray(value)
    damaged[-5] ^= 1  # the id "a" read as "`"
    with pytest.raises(encoding.CorruptRow, match="event_ids row"):
        EventWindow.load([(key, bytes(damaged))])
    payload = value[:-4]
    for foreign in (
        b'[1,[3],["a"]]',  # not this format
        payload[:-1],  # an id cut short
        payload[:5] + (1024).to_bytes(2, "little") + payload[7:],  # an offset outside the bucket
        payload + b"b",  # bytes no length accounts for
    ):
        with pytest.raises(encoding.EncodingError, match="ascending offsets and ids"):
            EventWindow.load([(key, encoding.seal(key, foreign))])


def test_ids_of_any_text_round_trip() -> None:
    window = EventWindow()
    names = ["a", "", "é€😀", "x" * 70_000, "\x00nul", '"quoted"\\']
    for offset, name in enumerate(names):
        _apply(window, name, offset)
    loaded = EventWindow.load(list(window.rows()))
    assert list(loaded.rows()) == list(window.rows())
    assert [loaded.applied_at(name, 10) for name in names] == list(range(len(names)))


def test_claims_released_and_evicted_leave_nothing_behind() -> None:
    """The index holds exactly the remembered ids of the live buckets: a released claim and an evicted
    bucket take their entries with them, however many ids share a bucket or come back later."""
    window = EventWindow()
    assert window.claim("x", 0) == encoding.NO_OFFSET
    window.release("x", 0)
    assert len(window) == 0 and window.applied_at("x", 1) == encoding.NO_OFFSET
    for offset in range(40):
        _apply(window, f"id-{offset % 20}" if offset < 20 else f"late-{offset}", offset)
    assert len(window) == 40
    far = 40 + WINDOW_OFFSETS + BUCKET_OFFSETS
    _apply(window, "id-3", far)  # out of the window: applied again, and the old buckets evicted
    assert len(window) == 1
    _apply(window, "next", far + BUCKET_OFFSETS)
    assert len(window) == 2
    assert window.applied_at("id-3", far + 1) == far
    assert window.claim("id-3", far + BUCKET_OFFSETS + 1) == far


def test_resuming_from_stored_records_remembers_what_was_applied() -> None:
    state = MemoryState()
    step = EventsStep(state, 0)
    deposit = balance("USD", "5")
    assert step.apply(deposit, 0) == APPLIED
    state.offset = step.offset
    resumed = MemoryState.from_records(list(state.records()))
    again = EventsStep(resumed, 0, QUARANTINE, resumed.offset)
    assert again.apply(dict(deposit), 1) == RECORDED
    assert state_digest(resumed.records()) != state_digest(state.records())  # the anomaly row
    assert resumed.balances == state.balances


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["claim", "add", "remove"]), st.integers(0, 3000), st.integers(0, 70_000))
    )
)
def test_the_c_index_answers_as_the_dict_index(operations: list[tuple[str, int, int]]) -> None:
    """Growth, probing and backward-shift deletion in projector/_event_index.c keep exactly the
    entries the plain dict index keeps (as multisets of bucket low bits per id)."""
    native = _new_index()
    if isinstance(native, _DictIndex):
        pytest.skip("the C extension is not in use")
    plain = _DictIndex()
    names = [f"id-{n}" for n in range(3001)]
    for operation, which, bucket in operations * 3:
        name = names[which]
        if operation == "claim":
            a, b = native.claim(name, bucket), plain.claim(name, bucket)
            assert (a is None) == (b is None) and sorted(a or ()) == sorted(b or ())
        elif operation == "add":
            native.add(name, bucket)
            plain.add(name, bucket)
        else:
            assert native.remove(name, bucket) == plain.remove(name, bucket)
    assert len(native) == len(plain)
    for name in names:
        assert sorted(native.find(name)) == sorted(plain.find(name))


def test_the_c_index_under_churn_through_several_growths() -> None:
    native = _new_index()
    if isinstance(native, _DictIndex):
        pytest.skip("the C extension is not in use")
    plain = _DictIndex()
    rng = random.Random(7)
    held: list[tuple[str, int]] = []
    for step in range(60_000):
        if held and rng.random() < 0.35:
            name, bucket = held.pop(rng.randrange(len(held)))
            assert native.remove(name, bucket) and plain.remove(name, bucket)
        else:
            name, bucket = f"e-{rng.randrange(40_000)}", step // 32
            native.add(name, bucket)
            plain.add(name, bucket)
            held.append((name, bucket))
    assert len(native) == len(plain) == len(held)
    for name in {name for name, _ in held}:
        assert sorted(native.find(name)) == sorted(plain.find(name))
    assert not native.remove("never-added", 1)
