"""The canonical encoding and the digest: round trips, key order, framing, and pinned bytes."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projector import encoding
from projector.digest import RecordOrderError, digest_rows, new_hasher, state_digest
from projector.model import Anomaly, Balance, ConfigEntry, Entity, FillRecord, Order, Position, Risk
from projector.state import MemoryConfigState, MemoryState
from projector.store import PartitionStore
from snapshotter.snapshot import _write_compact_copy
from tests.fold_events import adjusted, apply_all, balance, fill, submitted

ids = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=20
)
big = st.integers(min_value=-(10**40), max_value=10**40)
scale8 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

orders = st.builds(
    Order,
    ids,
    ids,
    ids,
    st.sampled_from(["BUY", "SELL"]),
    st.sampled_from(["LIMIT", "MARKET"]),
    st.sampled_from(["DAY", "GTC"]),
    st.none() | scale8,
    scale8,
    scale8,
    big,
    st.sampled_from(["NEW", "FILLED"]),
    st.text(max_size=30),
    st.integers(0, 10**6),
    st.integers(0, 2**63 - 1),
    st.none() | scale8,
    scale8,
)
entities = st.one_of(
    orders,
    st.builds(FillRecord, ids, ids),
    st.builds(Position, ids, ids, scale8, big, big, scale8, scale8),
    st.builds(Balance, ids, ids, scale8),
    st.builds(Risk, ids, big, big, big, big, scale8),
    st.builds(
        ConfigEntry, ids, st.just("STRING"), st.booleans() | scale8 | st.text(), scale8, ids, scale8, scale8
    ),
    st.builds(Anomaly, st.integers(0, 1000), st.integers(0, 2**63 - 1), ids, ids, ids, st.text()),
)


@given(entities)
def test_every_entity_round_trips(entity: Entity) -> None:
    table, key, value = encoding.encode_record(entity)
    decoded = encoding.decode_record(table, key, value)
    assert decoded == entity
    assert encoding.encode_record(decoded) == (table, key, value)


@given(st.booleans() | scale8 | st.text())
def test_config_values_keep_their_python_type(value: bool | int | str) -> None:
    entry = ConfigEntry("k", "STRING", value, 1, "me", 0, 0)
    decoded = encoding.decode_record(*encoding.encode_record(entry))
    assert isinstance(decoded, ConfigEntry)
    assert type(decoded.value) is type(value) and decoded.value == value


@given(st.lists(st.tuples(ids, ids), min_size=2, max_size=10, unique=True))
def test_composite_keys_sort_like_their_parts(pairs: list[tuple[str, str]]) -> None:
    by_bytes = sorted(pairs, key=lambda p: encoding.position_key(*p))
    assert by_bytes == sorted(pairs, key=lambda p: (p[0].encode(), p[1].encode()))


@given(st.lists(st.integers(0, 2**63 - 1), min_size=2, max_size=10, unique=True))
def test_anomaly_keys_sort_numerically(offsets: list[int]) -> None:
    assert sorted(offsets, key=encoding.anomaly_key) == sorted(offsets)


@pytest.mark.parametrize("part", ["", "a\x00b", "x" * 256, "é" * 128])
def test_bad_key_parts_are_refused(part: str) -> None:
    with pytest.raises(ValueError, match="key part"):
        encoding.position_key(part, "AAPL")


def test_a_value_is_a_versioned_compact_json_array() -> None:
    order = Order(
        "o1", "ACC1", "AAPL", "BUY", "LIMIT", "DAY", 10**9, 10**10, 0, 0, "NEW", "c1", 1, 7, 10**9, 10**10
    )
    table, key, value = encoding.encode_record(order)
    assert (table, key) == ("orders", b"o1")
    payload = (
        b'[1,"ACC1","AAPL","BUY","LIMIT","DAY",1000000000,10000000000,0,0,"NEW","c1",1,7,'
        b"1000000000,10000000000]"
    )
    assert value == payload + zlib.crc32(b"o1" + payload).to_bytes(4, "big")
    position = Position("ACC1", "AAPL", 5 * 10**9, 55 * 10**17, 3 * 10**18, 10**8, 11 * 10**8)
    payload = b"[1,5000000000,5500000000000000000,3000000000000000000,100000000,1100000000]"
    assert encoding.encode_record(position) == (
        "positions",
        b"ACC1\x00AAPL",
        payload + zlib.crc32(b"ACC1\x00AAPL" + payload).to_bytes(4, "big"),
    )
    assert encoding.meta_record(-1) == ("meta", b"offset", b"-1" + zlib.crc32(b"offset-1").to_bytes(4, "big"))


@pytest.mark.parametrize("where", range(len(b"[1,266519103000000]") + 4))
def test_a_changed_byte_anywhere_in_a_stored_row_is_refused_naming_table_and_key(where: int) -> None:
    """One digit changed inside a balance (2,665,191.03 read as 2,965,191.03), or any other byte,
    never decodes into an entity."""
    _, key, value = encoding.encode_record(Balance("ACC-0001", "CHF", 266519103000000))
    damaged = bytearray(value)
    damaged[where] = ord("9") if damaged[where] != ord("9") else ord("8")
    with pytest.raises(
        encoding.CorruptRow, match=r"the balances row with key b'ACC-0001\\x00CHF' is damaged"
    ):
        encoding.decode_record("balances", key, bytes(damaged))
    assert encoding.decode_record("balances", key, value) == Balance("ACC-0001", "CHF", 266519103000000)


@pytest.mark.parametrize(
    ("table", "value"),
    [
        ("balances", b"[2,5]"),
        ("balances", b"[1,5,6]"),
        ("balances", b"{}"),
        ("balances", b"\xff"),
        ("risk", b"[1,1,2]"),
        ("nope", b"[1]"),
    ],
)
def test_foreign_bytes_are_refused(table: str, value: bytes) -> None:
    key = b"ACC1\x00USD" if table == "balances" else b"ACC1"
    with pytest.raises(encoding.EncodingError):
        encoding.decode_record(table, key, encoding.seal(key, value))
    with pytest.raises(encoding.EncodingError):
        encoding.decode_record(table, key, value)


@pytest.mark.parametrize("amount", [1.5, float("nan"), None])
def test_anything_but_an_int_is_refused(amount: object) -> None:
    """Refused by the compiled entity's constructor ("int object expected") or, interpreted, by the
    encoder ("exact ints"). (A bool is an int to both; the codec never yields one for an amount.)"""
    with pytest.raises(TypeError, match=r"exact ints|int object expected"):
        encoding.encode_balance(Balance("a", "USD", amount))  # type: ignore[arg-type]


@given(st.lists(st.one_of(st.text(), st.integers(-(10**30), 10**30), st.none()), max_size=6))
def test_direct_formatting_matches_json_dumps(fields: list[str | int | None]) -> None:
    """The hand-written formatting is byte-identical to the standard library's compact JSON."""
    text = "".join(f for f in fields if isinstance(f, str))
    anomaly = Anomaly(1, 2, text, "Fill", "OVERFILL", text[::-1])
    assert (
        encoding.encode_anomaly(anomaly)
        == json.dumps([1, 1, 2, text, "Fill", "OVERFILL", text[::-1]], separators=(",", ":")).encode()
    )
    numbers = [f for f in fields if isinstance(f, int)][:1] or [0]
    order = Order(
        "o",
        text or "a",
        "s",
        "BUY",
        "LIMIT",
        "DAY",
        None,
        numbers[0],
        0,
        -numbers[0],
        "NEW",
        text,
        1,
        2,
        None,
        3,
    )
    expected = [
        1,
        order.account_id,
        "s",
        "BUY",
        "LIMIT",
        "DAY",
        None,
        numbers[0],
        0,
        -numbers[0],
        "NEW",
        text,
        1,
        2,
        None,
        3,
    ]
    assert encoding.encode_order(order) == json.dumps(expected, separators=(",", ":")).encode()


def _sample_state() -> MemoryState:
    """A small state whose event_ids are numbered from 1 here, so its digest is the same in any run."""
    events = [
        submitted("o1", "100", "10"),
        fill("e1", "o1", "40", "10.5", fee="0.25"),
        fill("e1", "o1", "40", "10.5", fee="0.25"),
        adjusted("MSFT", "SET", "-3", "300"),
        balance("USD", "1000"),
        submitted("o2", "5", None, account="ACC2", side="SELL"),
    ]
    for number, event in enumerate(events, 1):
        event["event_id"] = f"00000000-0000-4000-8000-{number:012x}"
    state = MemoryState()
    apply_all(state, events)
    return state


def test_records_are_in_canonical_order_and_round_trip() -> None:
    state = _sample_state()
    records = list(state.records())
    tables = [t for t, _, _ in records]
    assert tables == sorted(tables, key=[*encoding.EVENTS_TABLES, "meta"].index)
    assert records[-1] == encoding.meta_record(5)
    rebuilt = MemoryState.from_records(records)
    assert list(rebuilt.records()) == records
    assert rebuilt.orders == state.orders and rebuilt.risks == state.risks


def test_the_digest_depends_on_content_not_on_insertion_order() -> None:
    state = _sample_state()
    shuffled = MemoryState.from_records(reversed(list(state.records())))
    assert list(shuffled.orders) == list(reversed(state.orders))
    assert state_digest(shuffled.records()) == state_digest(state.records())


def test_the_digest_is_pinned() -> None:
    """A change here changes every stored digest: bump ENCODING_VERSION/DIGEST_DOMAIN deliberately."""
    assert state_digest(_sample_state().records()) == PINNED_DIGEST


PINNED_DIGEST = "833d03d5902c83bcfd2ec35f3e5d2b34"


def test_framing_is_unambiguous() -> None:
    assert state_digest(_sealed([("t", b"ab", b"c")])) != state_digest(_sealed([("t", b"a", b"bc")]))
    assert state_digest(_sealed([("ta", b"b", b"c")])) != state_digest(_sealed([("t", b"ab", b"c")]))
    assert state_digest([]) != state_digest(_sealed([("t", b"", b"")]))


def _sealed(records: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, bytes]]:
    return [(table, key, encoding.seal(key, value)) for table, key, value in records]


def test_out_of_order_records_are_refused() -> None:
    with pytest.raises(RecordOrderError):
        state_digest(_sealed([("orders", b"b", b""), ("orders", b"a", b"")]))
    with pytest.raises(RecordOrderError):
        state_digest(_sealed([("orders", b"a", b""), ("orders", b"a", b"")]))
    with pytest.raises(RecordOrderError):
        state_digest(_sealed([("orders", b"a", b""), ("fills", b"a", b""), ("orders", b"b", b"")]))


def test_config_state_records_round_trip() -> None:
    state = MemoryConfigState()
    state.put_config(ConfigEntry("b.key", "DECIMAL", 5 * 10**8, 2, "alice", 1, 4))
    state.put_config(ConfigEntry("a.key", "BOOLEAN", True, 1, "bob", 1, 3))
    state.put_anomaly(Anomaly(0, 5, "id", "ConfigChanged", "STALE_CONFIG_VERSION", "old"))
    state.offset = 5
    records = list(state.records())
    assert [(t, k) for t, k, _ in records] == [
        ("config", b"a.key"),
        ("config", b"b.key"),
        ("anomalies", (5).to_bytes(8, "big")),
        ("meta", b"offset"),
    ]
    assert json.loads(encoding.unseal("config", b"a.key", records[0][2])) == [
        1,
        "BOOLEAN",
        True,
        1,
        "bob",
        1,
        3,
    ]
    assert list(MemoryConfigState.from_records(records).records()) == records


def test_a_stores_cursor_digest_equals_its_record_digest(tmp_path: Path) -> None:
    """`PartitionStore.digest` (the fast path: cursors, buffered hashing) is the canonical digest, over
    several MiB of rows so the buffer is flushed mid-table, with an empty table among them."""
    rows = {
        key: encoding.seal(key, b"[1," + b"x" * (i % 300) + b"]")
        for i in range(40_000)
        for key in [f"ORD{i:07d}".encode()]
    }
    changes: dict[str, dict[bytes, bytes | None]] = {
        encoding.ORDERS: dict(rows),
        encoding.POSITIONS: {b"ACC1\x00SYM": encoding.seal(b"ACC1\x00SYM", b"[1,2]")},
    }
    with PartitionStore(tmp_path / "events-p0000", encoding.EVENTS_TABLES) as store:
        store.commit(changes, 41, 42)
        records = list(store.records())
        assert sum(len(v) for _, _, v in records) > 3 * 2**20
        assert store.digest() == state_digest(records)
        assert [t for t, _, _ in records].count(encoding.FILLS) == 0


def test_digest_rows_refuses_keys_out_of_order() -> None:
    with pytest.raises(RecordOrderError, match="does not follow"):
        digest_rows(
            new_hasher(), "orders", [(b"b", encoding.seal(b"b", b"")), (b"a", encoding.seal(b"a", b""))]
        )


def test_a_snapshot_copy_that_cannot_be_written_names_the_write_error(tmp_path: Path) -> None:
    """The compacting copy streams through a pipe to a writer thread; when the writer fails, its
    error (here: no such directory) is raised, not the copy's broken pipe."""
    rows = {f"ORD{i:07d}".encode(): b"[1," + b"x" * 200 + b"]" for i in range(20_000)}
    with PartitionStore(tmp_path / "events-p0000", encoding.EVENTS_TABLES) as store:
        store.commit({encoding.ORDERS: dict(rows)}, 7, 8)
        target = tmp_path / "missing" / "data.mdb"
        with store.env.begin() as txn, pytest.raises(FileNotFoundError, match="missing"):
            _write_compact_copy(store, txn, target)
