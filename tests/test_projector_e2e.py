"""The projector end to end: real broker, real LMDB, the real `rewind` CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_writer

from producers import builders
from schemas.catalog import default_catalog
from schemas.codec import MAGIC, encode, physical_schema
from tests.cli_runner import run_rewind
from tests.golden.make_golden import sample_for
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


def test_records_that_break_the_contract_are_dead_lettered_and_nothing_blocks(pipeline: Pipeline) -> None:
    """Mislabelled, wrong-topic and wrongly keyed records, between good ones on every partition: each
    goes to the dead-letter topic with its reason, and every good record is applied."""
    from confluent_kafka import Producer

    summary = pipeline.simulate(events=4_000, seed=3)
    account = builders.balance_changed(
        account_id="ACC-0001",
        source="test",
        occurred_at=1_700_000_000_000_000,
        currency="CHF",
        amount=7 * E8,
        reason="DEPOSIT",
    )
    version = default_catalog().current("OrderAccepted")
    mislabelled = io.BytesIO()
    mislabelled.write(MAGIC + version.fingerprint)
    accepted = sample_for("OrderAccepted", version.field_names()) | {"event_type": "Fill"}
    schemaless_writer(mislabelled, parse_schema(physical_schema(version.schema)), accepted)
    config_change = builders.config_changed(
        key="risk.max_gross_exposure",
        value_type="DECIMAL",
        value=5 * E8,
        version=1,
        changed_by="ops",
        source="test",
    )
    order = builders.order_submitted(
        account_id="ACC-0002",
        source="test",
        occurred_at=1_700_000_000_000_000,
        order_id="O-ON-CONFIG",
        client_order_id="C-ON-CONFIG",
        symbol="ABC",
        side="BUY",
        order_type="LIMIT",
        limit_price=E8,
        quantity=E8,
        time_in_force="DAY",
    )
    ids = "5b9d0c1e-0000-4000-8000-00000000000"
    poison: list[tuple[str, bytes | None, bytes]] = [
        (pipeline.events, b"ACC-0001", mislabelled.getvalue()),
        (pipeline.events, b"*", encode(config_change)),
        (pipeline.config, b"ACC-0002", encode(order)),
        (pipeline.events, None, encode(account | {"event_id": f"{ids}2"})),
        (
            pipeline.events,
            b"\xff\xfe",
            encode(account | {"event_id": f"{ids}3"}),
        ),
        (
            pipeline.events,
            b"ACC-0003",
            encode(account | {"event_id": f"{ids}4"}),
        ),
    ]
    raw = Producer({"bootstrap.servers": pipeline.bootstrap})
    for topic, key, value in poison:
        raw.produce(topic, key=key, value=value)
    assert raw.flush(30) == 0
    pipeline.simulate(events=4_000, seed=4)

    projected = json.loads(
        run_rewind("project", "--until-caught-up", "--json", env=pipeline.env, timeout=300, check=True).stdout
    )
    produced = 2 * summary.events + len(poison)
    assert projected["dead_letters"] == len(poison)
    assert projected["applied"] + projected["dead_letters"] == produced
    stores = _digests(pipeline)
    assert {name: s["digest"] for name, s in stores.items()} == pipeline.reference_digests()

    letters = read_partition(pipeline.bootstrap, pipeline.deadletter, 0)
    reasons = [dict(m.headers() or [])["rewind.error"].decode() for m in letters]
    assert len(reasons) == len(poison)
    assert any("event_type field says 'Fill'" in r for r in reasons)
    assert any("belongs on the config topic" in r for r in reasons)
    assert any("only ConfigChanged" in r for r in reasons)
    assert sum("the contract prescribes key b'ACC-0001'" in r for r in reasons) == 3
    balances = json.loads(
        run_rewind(
            "state", "balances", "--account", "ACC-0001", "--json", env=pipeline.env, check=True
        ).stdout
    )
    assert all(row["currency"] != "CHF" for row in balances), "no wrongly keyed deposit was applied"


def test_an_event_sent_again_applies_once_across_restarts(pipeline: Pipeline) -> None:
    """A producer that timed out sends the same event again: a BalanceChanged and a PositionAdjusted
    delta applied twice would double the balance and the position. Each applies once, the repeats are
    DUPLICATE_EVENT anomalies, and the window of applied ids survives a restart of the projector."""
    common = {"account_id": "ACC-DUP", "source": "test", "occurred_at": 1_700_000_000_000_000}
    deposit = builders.balance_changed(**common, currency="CHF", amount=266519103000000, reason="DEPOSIT")
    delta = builders.position_adjusted(
        **common, symbol="XYZ", mode="DELTA", quantity=7 * E8, price=10 * E8, reason="TRANSFER"
    )
    with pipeline.producer() as producer:
        for event in (deposit, delta, deposit, delta):
            producer.emit(event)
    first = json.loads(
        run_rewind("project", "--until-caught-up", "--json", env=pipeline.env, check=True).stdout
    )
    assert first["anomalies"] == 2 and first["dead_letters"] == 0
    with pipeline.producer() as producer:
        producer.emit(deposit)
    second = json.loads(
        run_rewind("project", "--until-caught-up", "--json", env=pipeline.env, check=True).stdout
    )
    assert second["anomalies"] == 1

    balances = json.loads(
        run_rewind("state", "balances", "--account", "ACC-DUP", "--json", env=pipeline.env, check=True).stdout
    )
    assert balances == [{"account_id": "ACC-DUP", "currency": "CHF", "amount": "2665191.03"}]
    positions = json.loads(
        run_rewind(
            "state", "positions", "--account", "ACC-DUP", "--json", env=pipeline.env, check=True
        ).stdout
    )
    assert [p["quantity"] for p in positions] == ["7"]
    anomalies = json.loads(run_rewind("state", "anomalies", "--json", env=pipeline.env, check=True).stdout)
    repeats = [a for a in anomalies if a["kind"] == "DUPLICATE_EVENT"]
    assert len(repeats) == 3
    assert {a["event_id"] for a in repeats} == {deposit["event_id"], delta["event_id"]}
    stores = _digests(pipeline)
    assert {name: s["digest"] for name, s in stores.items()} == pipeline.reference_digests()
