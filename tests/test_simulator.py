"""The simulator: deterministic, realistic, anomalies only when asked; readable with plain fastavro."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

from producers.event_producer import EventProducer
from producers.simulator import SimulationParams, run_simulation, simulate
from tests.kafka_helpers import create_topic, read_topic

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
EVENTS = 5000
T1 = 1_800_000_000_000_000


def _replay_anomalies(events: list[dict[str, Any]]) -> Counter[str]:
    """An independent, minimal replay of order bookkeeping that counts the four anomaly kinds."""
    orders: dict[str, dict[str, Any]] = {}
    exec_ids: set[str] = set()
    kinds: Counter[str] = Counter()
    for event in events:
        kind = event["event_type"]
        if kind == "OrderSubmitted":
            if event["order_id"] in orders:
                kinds["duplicate_order"] += 1
            else:
                orders[event["order_id"]] = {"quantity": event["quantity"], "filled": 0}
        elif kind == "OrderReplaced" and event["new_quantity"] is not None:
            orders[event["order_id"]]["quantity"] = event["new_quantity"]
        elif kind == "Fill":
            order = orders.get(event["order_id"])
            if event["exec_id"] in exec_ids:
                kinds["duplicate_fill"] += 1
            elif order is None:
                kinds["unknown_order_fill"] += 1
            elif order["filled"] + event["quantity"] > order["quantity"]:
                kinds["overfill"] += 1
            else:
                order["filled"] += event["quantity"]
                exec_ids.add(event["exec_id"])
    return kinds


def test_same_parameters_same_events_including_ids() -> None:
    params = SimulationParams(events=EVENTS, accounts=5, symbols=8, seed=42, anomaly_rate=0.02)
    first, second = list(simulate(params)), list(simulate(params))
    assert len(first) == EVENTS
    assert first == second
    assert len({e["event_id"] for e in first}) == EVENTS
    other_seed = list(simulate(SimulationParams(events=EVENTS, accounts=5, symbols=8, seed=43)))
    assert other_seed != first
    later = list(simulate(SimulationParams(events=EVENTS, accounts=5, symbols=8, seed=42, start_time=T1)))
    assert not {e["event_id"] for e in later} & {e["event_id"] for e in first}
    assert not {e.get("order_id") for e in later} & {e.get("order_id") for e in first} - {None}
    assert later[0]["occurred_at"] > T1


def test_the_day_looks_like_trading() -> None:
    params = SimulationParams(events=EVENTS, accounts=4, symbols=6, seed=1)
    events = list(simulate(params))
    times = [e["occurred_at"] for e in events]
    assert times == sorted(times) and times[0] > params.start_time
    counts = Counter(e["event_type"] for e in events)
    assert set(counts) == {
        "OrderSubmitted", "OrderAccepted", "OrderRejected", "OrderReplaced", "OrderCanceled",
        "OrderExpired", "Fill", "PositionAdjusted", "BalanceChanged", "ConfigChanged",
    }  # fmt: skip
    assert events[0]["event_type"] == "BalanceChanged" and events[1]["reason"] == "START_OF_DAY"
    assert {e["account_id"] for e in events if e["event_type"] != "ConfigChanged"} == {
        f"ACC-{i:04d}" for i in range(1, 5)
    }
    fills_per_order = Counter(e["order_id"] for e in events if e["event_type"] == "Fill")
    assert max(fills_per_order.values()) > 1, "no partial fills"
    versions: dict[str, int] = {}
    for event in (e for e in events if e["event_type"] == "ConfigChanged"):
        assert event["version"] == versions.get(event["key"], 0) + 1
        versions[event["key"]] = event["version"]


def test_no_anomalies_unless_asked_then_every_kind() -> None:
    clean = list(simulate(SimulationParams(events=EVENTS, seed=3)))
    assert _replay_anomalies(clean) == Counter()
    dirty = list(simulate(SimulationParams(events=EVENTS, seed=3, anomaly_rate=0.05)))
    kinds = _replay_anomalies(dirty)
    assert set(kinds) == {"duplicate_order", "duplicate_fill", "unknown_order_fill", "overfill"}
    assert 0.03 * EVENTS < sum(kinds.values()) < 0.07 * EVENTS


@pytest.mark.parametrize(
    "params",
    [{"events": -1}, {"accounts": 0}, {"symbols": 0}, {"anomaly_rate": 1.5}, {"start_time": 1_767_225_600}],
)
def test_parameters_are_checked(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(params))):
        SimulationParams(**({"events": 1} | params))


def _simulate_into(bootstrap: str, prefix: str, params: SimulationParams) -> tuple[str, str, Any]:
    events, config = f"{prefix}-events", f"{prefix}-config"
    create_topic(bootstrap, events, partitions=4)
    create_topic(bootstrap, config, partitions=1)
    producer = EventProducer({"bootstrap.servers": bootstrap}, events_topic=events, config_topic=config)
    seen: list[int] = []
    summary = run_simulation(params, producer, progress=seen.append, progress_every=1000)
    assert seen == [1000, 2000, 3000, 4000, 5000, 5000]
    return events, config, summary


def _plain_fastavro_schemas() -> dict[bytes, Any]:
    """Writer schemas by fingerprint, built from nothing but the .avsc files and fastavro."""
    found = {}
    for path in SCHEMAS.glob("*/v*.avsc"):
        schema = json.loads(path.read_text())
        found[bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))] = parse_schema(
            schema
        )
    return found


def test_same_seed_twice_gives_identical_topics_readable_by_plain_fastavro(
    bootstrap: str, unique_name: str
) -> None:
    params = SimulationParams(events=EVENTS, accounts=6, symbols=10, seed=2024, anomaly_rate=0.01)
    first = _simulate_into(bootstrap, f"{unique_name}-a", params)
    second = _simulate_into(bootstrap, f"{unique_name}-b", params)

    for one, two in ((first[0], second[0]), (first[1], second[1])):
        left, right = read_topic(bootstrap, one), read_topic(bootstrap, two)
        assert len(left) == len(right) > 0
        for a, b in zip(left, right, strict=True):
            assert (a.partition(), a.offset(), a.key(), a.value()) == (
                b.partition(),
                b.offset(),
                b.key(),
                b.value(),
            )

    summary = first[2]
    assert summary.events == EVENTS and sum(summary.by_type.values()) == EVENTS
    messages = read_topic(bootstrap, first[0]) + read_topic(bootstrap, first[1])
    assert len(messages) == EVENTS
    for topic, partitions in summary.last_offsets.items():
        for partition, offset in partitions.items():
            assert offset == max(
                m.offset() for m in messages if (m.topic(), m.partition()) == (topic, partition)
            )

    writers = _plain_fastavro_schemas()
    expected = {e["event_id"]: e for e in simulate(params)}
    for message in messages:
        value = message.value()
        assert value[:2] == b"\xc3\x01"
        record = schemaless_reader(io.BytesIO(value[10:]), writers[value[2:10]], None)
        assert isinstance(record, dict)
        event = expected.pop(str(record["event_id"]))
        assert int(record["occurred_at"].timestamp() * 1_000_000) // 1000 == event["occurred_at"] // 1000
        plain = {k: v for k, v in record.items() if k not in ("event_id", "occurred_at")}
        assert plain == {k: v for k, v in event.items() if k not in ("event_id", "occurred_at")}
        assert message.headers() == [("event_type", event["event_type"].encode())]
    assert not expected


def test_the_fold_sees_no_anomaly_in_a_clean_day_and_exactly_the_injected_kinds_otherwise() -> None:
    from projector.policy import ConfigStep, EventsStep, PolicyStep
    from projector.state import MemoryConfigState, MemoryState
    from schemas.codec import encode

    def fold(params: SimulationParams) -> Counter[str]:
        partitions = [EventsStep(MemoryState(), p) for p in range(3)]
        config = ConfigStep(MemoryConfigState())
        kinds: Counter[str] = Counter()
        for event in simulate(params):
            if event["event_type"] == "ConfigChanged":
                step: PolicyStep = config
            else:
                step = partitions[int(event["account_id"][-1]) % 3]
            step.record(encode(event), step.offset + 1)
            if step.anomaly is not None:
                kinds[step.anomaly.kind] += 1
        return kinds

    assert fold(SimulationParams(events=EVENTS, accounts=6, seed=11)) == Counter()
    injected = fold(SimulationParams(events=EVENTS, accounts=6, seed=11, anomaly_rate=0.05))
    assert set(injected) == {"DUPLICATE_FILL", "DUPLICATE_ORDER", "UNKNOWN_ORDER", "OVERFILL"}
