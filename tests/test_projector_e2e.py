"""The projector end to end: real broker, real LMDB, the real `rewind` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers import builders
from schemas.codec import encode
from tests.cli_runner import run_rewind
from tests.kafka_helpers import read_partition
from tests.pipeline import Pipeline

E8 = 10**8


@pytest.fixture
def pipeline(bootstrap: str, unique_name: str, tmp_path: Path) -> Pipeline:
    made = Pipeline(bootstrap, unique_name, tmp_path / "home")
    made.create_topics()
    return made


def _digests(pipeline: Pipeline, *extra: str) -> dict[str, dict[str, object]]:
    shown = json.loads(run_rewind("state", "digest", "--json", *extra, env=pipeline.env, check=True).stdout)
    return shown["stores"]  # type: ignore[no-any-return]


def test_projected_state_equals_the_reference_model(pipeline: Pipeline) -> None:
    summary = pipeline.simulate(events=200_000, seed=11, anomaly_rate=0.01)
    result = run_rewind("project", "--until-caught-up", "--json", env=pipeline.env, timeout=600, check=True)
    projected = json.loads(result.stdout)
    assert projected["applied"] == summary.events
    assert projected["dead_letters"] == 0
    assert projected["anomalies"] > 0, "the simulator's anomalies were recorded"
    stores = _digests(pipeline)
    assert {name: s["digest"] for name, s in stores.items()} == pipeline.reference_digests()
    assert sum(int(s["events_applied"]) for s in stores.values()) == summary.events  # type: ignore[call-overload]


def test_positions_match_a_hand_computed_example(pipeline: Pipeline) -> None:
    common = {"account_id": "ACC-7", "source": "test", "occurred_at": 1_700_000_000_000_000}
    events = [
        builders.order_submitted(
            **common,
            order_id="B1",
            client_order_id="c1",
            symbol="XYZ",
            side="BUY",
            order_type="LIMIT",
            limit_price=10 * E8,
            quantity=100 * E8,
            time_in_force="DAY",
        ),
        builders.fill(
            **common, exec_id="e1", order_id="B1", quantity=100 * E8, price=10 * E8, fee=0, liquidity="MAKER"
        ),
        builders.order_submitted(
            **common,
            order_id="B2",
            client_order_id="c2",
            symbol="XYZ",
            side="BUY",
            order_type="LIMIT",
            limit_price=12 * E8,
            quantity=100 * E8,
            time_in_force="DAY",
        ),
        builders.fill(
            **common, exec_id="e2", order_id="B2", quantity=100 * E8, price=12 * E8, fee=0, liquidity="MAKER"
        ),
        builders.order_submitted(
            **common,
            order_id="S1",
            client_order_id="c3",
            symbol="XYZ",
            side="SELL",
            order_type="LIMIT",
            limit_price=13 * E8,
            quantity=150 * E8,
            time_in_force="DAY",
        ),
        builders.fill(
            **common, exec_id="e3", order_id="S1", quantity=150 * E8, price=13 * E8, fee=0, liquidity="TAKER"
        ),
    ]
    with pipeline.producer() as producer:
        for event in events:
            producer.emit(event)
    run_rewind("project", "--until-caught-up", env=pipeline.env, check=True)
    shown = run_rewind("state", "positions", "--account", "ACC-7", "--json", env=pipeline.env, check=True)
    (position,) = json.loads(shown.stdout)
    assert position["symbol"] == "XYZ"
    assert position["quantity"] == "50"
    assert position["average_cost"] == "11"
    assert position["realized_pnl"] == "300"
    order = json.loads(
        run_rewind("state", "get", "order", "S1", "--json", env=pipeline.env, check=True).stdout
    )
    assert order["status"] == "FILLED" and order["average_fill_price"] == "13"


def test_poison_records_go_to_the_dead_letter_topic_and_projection_continues(pipeline: Pipeline) -> None:
    good = builders.balance_changed(
        account_id="ACC-1",
        source="test",
        occurred_at=1_700_000_000_000_000,
        currency="USD",
        amount=5 * E8,
        reason="DEPOSIT",
    )
    valid = encode(good)
    unknown_fingerprint = valid[:2] + b"\x01\x02\x03\x04\x05\x06\x07\x08" + valid[10:]
    truncated = valid[:14]
    with pipeline.producer() as producer:
        producer.emit(good)
    from confluent_kafka import Producer

    raw = Producer({"bootstrap.servers": pipeline.bootstrap})
    for value in (unknown_fingerprint, truncated):
        raw.produce(pipeline.events, key=b"ACC-1", value=value, headers=[("event_type", b"BalanceChanged")])
    assert raw.flush(30) == 0
    with pipeline.producer() as producer:
        producer.emit(good | {"event_id": "6f0f4bd2-8f55-4b8e-9f59-1f0a3c7f2a10"})

    projected = json.loads(
        run_rewind("project", "--until-caught-up", "--json", env=pipeline.env, check=True).stdout
    )
    assert projected["dead_letters"] == 2 and projected["applied"] == 2

    letters = read_partition(pipeline.bootstrap, pipeline.deadletter, 0)
    assert [m.value() for m in letters] == [unknown_fingerprint, truncated]
    first = dict(letters[0].headers() or [])
    assert first["event_type"] == b"BalanceChanged"
    assert first["rewind.error.class"] == b"UnknownFingerprintError"
    assert first["rewind.fingerprint"] == b"0102030405060708"
    assert first["rewind.source.topic"] == pipeline.events.encode()
    assert int(first["rewind.source.offset"]) == 1
    assert letters[0].key() == b"ACC-1"
    second = dict(letters[1].headers() or [])
    assert second["rewind.error.class"] == b"UndecodableEventError"

    balances = json.loads(run_rewind("state", "balances", "--json", env=pipeline.env, check=True).stdout)
    assert balances == [{"account_id": "ACC-1", "currency": "USD", "amount": "10"}]


def test_halt_policy_stops_before_the_anomaly_and_resume_continues(pipeline: Pipeline) -> None:
    common = {"account_id": "ACC-2", "source": "test", "occurred_at": 1_700_000_000_000_000}
    with pipeline.producer() as producer:
        producer.emit(builders.balance_changed(**common, currency="EUR", amount=E8, reason="DEPOSIT"))
        producer.emit(
            builders.fill(
                **common, exec_id="x9", order_id="NOPE", quantity=E8, price=E8, fee=0, liquidity="MAKER"
            )
        )
        producer.emit(builders.balance_changed(**common, currency="EUR", amount=E8, reason="DEPOSIT"))
    halted = run_rewind("project", "--until-caught-up", "--anomaly-policy", "halt", env=pipeline.env)
    assert halted.returncode == 1
    assert "halted before partition" in halted.stderr and "UNKNOWN_ORDER" in halted.stderr
    stores = _digests(pipeline)
    assert max(int(s["offset"]) for s in stores.values()) == 0, "nothing at or after the anomaly was applied"  # type: ignore[call-overload]

    resumed = json.loads(
        run_rewind("project", "--until-caught-up", "--json", env=pipeline.env, check=True).stdout
    )
    assert resumed["applied"] == 2 and resumed["anomalies"] == 1
    anomalies = json.loads(run_rewind("state", "anomalies", "--json", env=pipeline.env, check=True).stdout)
    assert [a["kind"] for a in anomalies] == ["UNKNOWN_ORDER"]
