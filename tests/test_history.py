"""`rewind history` and `rewind diff` against the real broker, the real fold and the real CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from producers import builders
from producers.builders import now_micros
from producers.event_producer import EventProducer
from projector.state_directory import StateDirectory
from replayer.timestamps import iso_millis
from rewind.ground.partitioner import partition_for_key
from snapshotter.snapshot import take_snapshot
from tests.cli_runner import run_rewind
from tests.kafka_helpers import create_topic
from tests.pipeline import Pipeline

SOURCE = "oms"


@pytest.fixture
def pipeline(bootstrap: str, unique_name: str, tmp_path: Path) -> Pipeline:
    made = Pipeline(bootstrap, unique_name, tmp_path / "home")
    made.create_topics()
    return made


def _rewind_json(pipeline: Pipeline, *args: str, env: dict[str, str] | None = None) -> Any:
    result = run_rewind(*args, "--json", env=pipeline.env | (env or {}), check=True)
    return json.loads(result.stdout)


def _project(pipeline: Pipeline, state: Path) -> None:
    run_rewind("project", "--until-caught-up", "--state", str(state), env=pipeline.env, check=True)


def _submit(account: str, order_id: str, symbol: str, side: str, quantity: str, price: str) -> dict[str, Any]:
    return dict(
        builders.order_submitted(
            account_id=account,
            order_id=order_id,
            client_order_id=f"c-{order_id}",
            symbol=symbol,
            side=side,
            order_type="LIMIT",
            quantity=quantity,
            limit_price=price,
            time_in_force="DAY",
            source=SOURCE,
        )
    )


def _fill(account: str, order_id: str, exec_id: str, quantity: str, price: str) -> dict[str, Any]:
    return dict(
        builders.fill(
            account_id=account,
            exec_id=exec_id,
            order_id=order_id,
            quantity=quantity,
            price=price,
            fee="0.5",
            liquidity="TAKER",
            occurred_at=now_micros(),
            source="exchange:XNAS",
        )
    )


def _accepted(account: str, order_id: str) -> dict[str, Any]:
    return dict(
        builders.order_accepted(
            account_id=account, order_id=order_id, occurred_at=now_micros(), source=SOURCE
        )
    )


def _deposit(account: str, amount: str) -> dict[str, Any]:
    return dict(
        builders.balance_changed(
            account_id=account, currency="USD", amount=amount, reason="DEPOSIT", source=SOURCE
        )
    )


def _order_lifecycle(producer: EventProducer, account: str, order_id: str) -> list[tuple[int, int]]:
    """Submit, accept, partial fill, replace down, fill the rest, then a late fill (TERMINAL_ORDER)."""
    events = [
        _submit(account, order_id, "AAPL", "BUY", "100", "10.00"),
        _accepted(account, order_id),
        _fill(account, order_id, f"{order_id}-x1", "40", "9.99"),
        dict(
            builders.order_replaced(
                account_id=account,
                order_id=order_id,
                new_quantity="80",
                occurred_at=now_micros(),
                source=SOURCE,
            )
        ),
        _fill(account, order_id, f"{order_id}-x2", "40", "10.01"),
        _fill(account, order_id, f"{order_id}-x3", "1", "10.02"),
    ]
    return [producer.emit(event) for event in events]


def test_order_history_lists_its_whole_lifecycle_with_the_state_after_each_event(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.simulate(events=1_500, seed=41)
    with pipeline.producer() as producer:
        producer.emit(_deposit("HIST-1", "100000"))
        placed = _order_lifecycle(producer, "HIST-1", "O-HIST-1")
    pipeline.simulate(events=500, seed=42)

    scanned = _rewind_json(pipeline, "history", "--order", "O-HIST-1")
    assert scanned["partition_found_by"] == "scan of the events topic"

    live = pipeline.home / "state"
    _project(pipeline, live)
    found = _rewind_json(pipeline, "history", "--order", "O-HIST-1")
    assert found["partition_found_by"].startswith("state directory")
    assert found["rows"] == scanned["rows"]

    rows = found["rows"]
    assert [(row["partition"], row["offset"]) for row in rows] == placed
    assert [row["event_type"] for row in rows] == [
        "OrderSubmitted",
        "OrderAccepted",
        "Fill",
        "OrderReplaced",
        "Fill",
        "Fill",
    ]
    orders = [row["state"]["order"] for row in rows]
    assert [o["status"] for o in orders] == [
        "NEW",
        "ACCEPTED",
        "PARTIALLY_FILLED",
        "PARTIALLY_FILLED",
        "FILLED",
        "FILLED",
    ]
    assert [o["filled"] for o in orders] == ["0", "0", "40", "40", "80", "80"]
    assert [o["quantity"] for o in orders] == ["100", "100", "100", "80", "80", "80"]
    assert orders[4]["average_fill_price"] == "10" and orders[4]["filled_notional"] == "800"
    assert rows[2]["fields"]["price"] == "9.99" and rows[2]["fields"]["exec_id"] == "O-HIST-1-x1"
    assert [row["anomaly"] is not None for row in rows] == [False] * 5 + [True]
    assert rows[5]["anomaly"]["kind"] == "TERMINAL_ORDER"
    assert all(row["logged_at"].endswith("Z") and row["timestamp_ms"] > 0 for row in rows)

    final = _rewind_json(pipeline, "state", "get", "order", "O-HIST-1")
    assert orders[-1] == final

    text = run_rewind("history", "--order", "O-HIST-1", env=pipeline.env, check=True).stdout
    assert "! ANOMALY TERMINAL_ORDER" in text and "6 events, 1 anomalies" in text


def test_account_and_symbol_history_shows_the_position_evolving(pipeline: Pipeline) -> None:
    account = "HIST-2"
    with pipeline.producer() as producer:
        producer.emit(_deposit(account, "50000"))
        for n, (side, quantity, price) in enumerate(
            [("BUY", "100", "10.00"), ("BUY", "100", "12.00"), ("SELL", "150", "13.00")], start=1
        ):
            order_id = f"O-HIST-2-{n}"
            producer.emit(_submit(account, order_id, "AAPL", side, quantity, price))
            producer.emit(_fill(account, order_id, f"{order_id}-x", quantity, price))
        producer.emit(_submit(account, "O-HIST-2-M", "MSFT", "BUY", "5", "300"))
        producer.emit(_fill(account, "O-HIST-2-M", "O-HIST-2-M-x", "5", "300"))

    found = _rewind_json(pipeline, "history", "--account", account, "--symbol", "AAPL")
    assert found["partition_found_by"] == "key hash (consistent_random)"
    rows = found["rows"]
    assert [row["event_type"] for row in rows] == ["OrderSubmitted", "Fill"] * 3
    positions = [row["state"]["position"] for row in rows if row["event_type"] == "Fill"]
    assert [p["quantity"] for p in positions] == ["100", "200", "50"]
    assert [p["average_cost"] for p in positions] == ["10", "11", "11"]
    assert positions[-1]["realized_pnl"] == "300"
    assert rows[0]["state"]["position"] is None
    assert rows[-1]["state"]["risk"]["fees"] == "1.5"
    assert rows[-1]["state"]["balances"] == [{"account_id": account, "currency": "USD", "amount": "50000"}]

    everything = _rewind_json(pipeline, "history", "--account", account)["rows"]
    assert everything[0]["event_type"] == "BalanceChanged"
    assert len(everything) == 1 + 6 + 2 and "position" not in everything[0]["state"]
    assert {row["partition"] for row in everything} == {found["partition"]}


def test_from_and_to_select_a_window_of_kafka_timestamps(pipeline: Pipeline) -> None:
    account = "HIST-3"
    with pipeline.producer() as producer:
        producer.emit(_deposit(account, "1000"))
        for n in range(6):
            time.sleep(0.005)  # distinct record timestamps, so the window has edges to test
            producer.emit(_deposit(account, str(n + 1)))
    full = _rewind_json(pipeline, "history", "--account", account)["rows"]
    stamps = [row["timestamp_ms"] for row in full]
    low, high = stamps[2], stamps[4]
    window = _rewind_json(
        pipeline,
        "history",
        "--account",
        account,
        "--from",
        iso_millis(low),
        "--to",
        iso_millis(high).removesuffix("Z"),
    )
    expected = [row for row in full if low <= row["timestamp_ms"] <= high]
    assert window["rows"] == expected
    assert 0 < len(expected) < len(full)
    assert window["window"]["first_offset"] == expected[0]["offset"]

    later = _rewind_json(pipeline, "history", "--account", account, "--from", iso_millis(stamps[-1] + 1))
    assert later["rows"] == []


def test_history_from_a_verified_snapshot_equals_history_from_the_log_start(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    account = "HIST-4"
    live = pipeline.home / "state"
    snapshots = pipeline.home / "snapshots"
    store_name = ""
    with pipeline.producer() as producer:
        producer.emit(_deposit(account, "100000"))
        producer.emit(_submit(account, "O-HIST-4", "AAPL", "BUY", "100", "20"))
        producer.emit(_fill(account, "O-HIST-4", "O-HIST-4-x1", "30", "20"))
        pipeline.simulate(events=800, seed=43)
        _project(pipeline, live)
        with StateDirectory.open_readonly(live) as directory:
            partition = partition_for_key(account, pipeline.partitions)
            store_name = f"events-p{partition:04d}"
            older = take_snapshot(directory.store(store_name), snapshots, store_name)
        producer.emit(_fill(account, "O-HIST-4", "O-HIST-4-x2", "30", "20.5"))
        _project(pipeline, live)
        with StateDirectory.open_readonly(live) as directory:
            newer = take_snapshot(directory.store(store_name), snapshots, store_name)
        marker = producer.emit(_fill(account, "O-HIST-4", "O-HIST-4-x3", "40", "21"))
        producer.emit(_deposit(account, "7"))
    assert older is not None and newer is not None and older.offset < newer.offset < marker[1]

    full = _rewind_json(pipeline, "history", "--account", account, "--symbol", "AAPL")["rows"]
    since = iso_millis(next(row["timestamp_ms"] for row in full if row["offset"] == marker[1]))
    args = ("history", "--account", account, "--symbol", "AAPL", "--from", since)

    from_snapshot = _rewind_json(pipeline, *args)
    assert from_snapshot["start"]["snapshot_offset"] == newer.offset
    assert from_snapshot["start"]["events_replayed"] < marker[1]
    no_snapshots = {"REWIND_SNAPSHOTS_DIR": str(tmp_path / "none")}
    from_log_start = _rewind_json(pipeline, *args, env=no_snapshots)
    assert from_log_start["start"]["snapshot_offset"] is None
    assert from_snapshot["rows"] == from_log_start["rows"] == [r for r in full if r["offset"] >= marker[1]]
    assert from_snapshot["rows"][0]["state"]["position"]["quantity"] == "100"

    data = newer.path / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))
    past_corrupt = _rewind_json(pipeline, *args)
    assert past_corrupt["start"]["snapshot_offset"] == older.offset
    assert "checksum mismatch" in past_corrupt["start"]["rejected_snapshots"][0]
    assert past_corrupt["rows"] == from_log_start["rows"]

    order = _rewind_json(pipeline, "history", "--order", "O-HIST-4", "--from", since)
    assert order["start"]["snapshot_offset"] == older.offset
    assert [row["state"]["order"]["filled"] for row in order["rows"]] == ["100"]


def test_diff_of_identical_states_exits_0_and_of_different_offsets_lists_the_changed_rows(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    account = "HIST-5"
    first, second, later = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    with pipeline.producer() as producer:
        producer.emit(_deposit(account, "1000"))
        producer.emit(_submit(account, "O-HIST-5", "AAPL", "SELL", "10", "5.25"))
        producer.emit(_fill(account, "O-HIST-5", "O-HIST-5-x1", "4", "5.25"))
        pipeline.simulate(events=300, seed=44)
        _project(pipeline, first)
        _project(pipeline, second)
        producer.emit(_fill(account, "O-HIST-5", "O-HIST-5-x2", "6", "5.3"))
        producer.emit(_submit(account, "O-HIST-5b", "AAPL", "BUY", "1", "5"))
    _project(pipeline, later)

    same = run_rewind("diff", str(first), str(second), env=pipeline.env)
    assert same.returncode == 0, same.stderr
    digest = _rewind_json(pipeline, "state", "digest", "--state", str(first))["digest"]
    assert same.stdout.strip() == f"identical: digest {digest}"

    differ = run_rewind("diff", str(first), str(later), "--json", env=pipeline.env)
    assert differ.returncode == 1, differ.stderr
    report = json.loads(differ.stdout)
    assert report["identical"] is False
    changed = [s for s in report["stores"] if not s["identical"]]
    assert [s["store"] for s in changed] == [f"events-p{partition_for_key(account, pipeline.partitions):04d}"]
    store = changed[0]
    assert store["offset_b"] == store["offset_a"] + 2
    orders = store["tables"]["orders"]
    assert (orders["added"], orders["removed"], orders["changed"]) == (1, 0, 1)
    by_key = {change["key"]: change for change in orders["changes"]}
    assert by_key["O-HIST-5b"]["kind"] == "added" and by_key["O-HIST-5b"]["row"]["limit_price"] == "5"
    fields = by_key["O-HIST-5"]["fields"]
    assert fields["status"] == {"old": "PARTIALLY_FILLED", "new": "FILLED"}
    assert fields["filled"] == {"old": "4", "new": "10"}
    assert fields["average_fill_price"] == {"old": "5.25", "new": "5.28"}
    position = store["tables"]["positions"]["changes"][0]
    assert position["key"] == f"{account}/AAPL" and position["fields"]["quantity"] == {
        "old": "-4",
        "new": "-10",
    }
    assert store["tables"]["fills"]["added"] == 1

    text = run_rewind("diff", str(first), str(later), env=pipeline.env)
    assert text.returncode == 1
    assert "~ O-HIST-5  " in text.stdout and "status: PARTIALLY_FILLED -> FILLED" in text.stdout
    assert "+ O-HIST-5b" in text.stdout and "differ: 1 of" in text.stdout


def test_bad_usage_exits_2_and_names_the_problem(pipeline: Pipeline, tmp_path: Path) -> None:
    env = pipeline.env
    cases = [
        (("history",), "exactly one of --order ID or --account A"),
        (("history", "--order", "O-1", "--account", "A"), "exactly one of --order ID or --account A"),
        (("history", "--order", "O-1", "--symbol", "AAPL"), "--symbol narrows an account's history"),
        (("history", "--account", "A", "--from", "yesterday"), "'yesterday' is not an ISO-8601 time"),
        (
            ("history", "--account", "A", "--from", "2026-01-02", "--to", "2026-01-01"),
            "is after --to",
        ),
        (("diff", str(tmp_path / "missing"), str(tmp_path)), "does not exist"),
        (("diff", str(tmp_path), str(tmp_path)), "no LAYOUT file"),
    ]
    for args, message in cases:
        result = run_rewind(*args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)

    with pipeline.producer() as producer:
        producer.emit(_deposit("HIST-6", "1"))
    _project(pipeline, tmp_path / "ours")
    other = Pipeline(pipeline.bootstrap, pipeline.prefix + "-other", tmp_path / "other-home")
    other.create_topics()
    _project(other, tmp_path / "theirs")
    result = run_rewind("diff", str(tmp_path / "ours"), str(tmp_path / "theirs"), env=env)
    assert result.returncode == 2 and "compare directories built from the same topics" in result.stderr


def test_partition_for_key_matches_librdkafka(bootstrap: str, unique_name: str) -> None:
    topic = f"{unique_name}.keys"
    create_topic(bootstrap, topic, partitions=7)
    keys = [f"ACC-{n:04d}" for n in range(40)] + ["HIST-1", "é-账户", "x" * 37]
    for partitioner in ("consistent_random", "murmur2_random", "fnv1a_random"):
        landed: dict[str, int] = {}

        def delivered(error: object, message: Any, store: dict[str, int] = landed) -> None:
            assert error is None, error
            store[message.key().decode()] = message.partition()

        producer = Producer({"bootstrap.servers": bootstrap, "partitioner": partitioner})
        for key in keys:
            producer.produce(topic, key=key.encode(), value=b"", on_delivery=delivered)
        assert producer.flush(30) == 0
        assert landed == {key: partition_for_key(key, 7, partitioner) for key in keys}, partitioner
