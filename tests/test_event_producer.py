"""EventProducer against the real broker: routing, durability semantics, nothing invalid ever sent."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from producers import builders
from producers.event_producer import (
    DeliveryFailedError,
    EventProducer,
    ProduceError,
    producer_config,
)
from schemas.codec import decode
from tests.kafka_helpers import create_topic, read_topic

T0 = 1_767_225_600_000_000


@pytest.fixture
def topics(bootstrap: str, unique_name: str) -> tuple[str, str]:
    events, config = f"{unique_name}-events", f"{unique_name}-config"
    create_topic(bootstrap, events, partitions=3)
    create_topic(bootstrap, config, partitions=1)
    return events, config


@pytest.fixture
def producer(bootstrap: str, topics: tuple[str, str]) -> EventProducer:
    return EventProducer({"bootstrap.servers": bootstrap}, events_topic=topics[0], config_topic=topics[1])


def _fill(**change: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "account_id": "ACC-1",
        "exec_id": "E-1",
        "order_id": "O-1",
        "quantity": "10",
        "price": "12.5",
        "fee": 0,
        "liquidity": "MAKER",
        "occurred_at": T0,
        "source": "test",
    }
    return builders.fill(**(fields | change))


def test_emit_is_durable_routed_keyed_and_typed(
    bootstrap: str, topics: tuple[str, str], producer: EventProducer
) -> None:
    fill = _fill()
    config = builders.config_changed(
        key="trading.enabled", value_type="BOOLEAN", value=False, version=1, changed_by="alice", source="test"
    )
    fill_at = producer.emit(fill)
    config_at = producer.emit(config)
    assert producer.acked == 2 and producer.failed == 0 and producer.latency_count == 2
    (events,) = read_topic(bootstrap, topics[0])
    assert (events.partition(), events.offset()) == fill_at
    assert events.key() == b"ACC-1"
    assert events.headers() == [("event_type", b"Fill")]
    assert decode(events.value()) == fill
    (configs,) = read_topic(bootstrap, topics[1])
    assert (configs.partition(), configs.offset()) == config_at == (0, 0)
    assert configs.key() == b"trading.enabled"
    assert decode(configs.value()) == config


def test_invalid_events_are_refused_and_nothing_reaches_the_topics(
    bootstrap: str, topics: tuple[str, str], producer: EventProducer
) -> None:
    valid = _fill()
    invalid = [
        valid | {"quantity": 0},
        valid | {"price": 12.5},
        valid | {"liquidity": "BOTH"},
        valid | {"unexpected": "field"},
        {k: v for k, v in valid.items() if k != "event_id"},
        {k: v for k, v in valid.items() if k != "exec_id"},
        valid | {"event_type": "Trade"},
        valid | {"occurred_at": T0 // 1_000_000},
        valid | {"account_id": "*"},
    ]
    for event in invalid:
        with pytest.raises(ValueError):
            producer.emit(event)
        with pytest.raises(ValueError):
            producer.emit_async(event)
    producer.flush()
    assert producer.queued == 0
    assert read_topic(bootstrap, topics[0]) == []
    assert read_topic(bootstrap, topics[1]) == []


def test_emit_async_then_flush_delivers_everything(
    bootstrap: str, topics: tuple[str, str], producer: EventProducer
) -> None:
    for n in range(300):
        producer.emit_async(_fill(exec_id=f"E-{n}", account_id=f"ACC-{n % 7}"))
    producer.flush()
    assert (producer.queued, producer.acked, producer.failed, producer.in_flight) == (300, 300, 0, 0)
    messages = read_topic(bootstrap, topics[0])
    assert sorted(decode(m.value())["exec_id"] for m in messages) == sorted(f"E-{n}" for n in range(300))
    for message in messages:
        last = producer.last_offsets[(topics[0], message.partition())]
        assert message.offset() <= last


def test_broker_refusals_are_raised_never_dropped(bootstrap: str, unique_name: str) -> None:
    tiny = f"{unique_name}-tiny"
    create_topic(bootstrap, tiny, config={"max.message.bytes": "64"})
    producer = EventProducer({"bootstrap.servers": bootstrap}, events_topic=tiny, config_topic=tiny)
    with pytest.raises(ProduceError, match="was not acknowledged by Kafka"):
        producer.emit(_fill())
    for n in range(5):
        producer.emit_async(_fill(exec_id=f"E-{n}"))
    with pytest.raises(DeliveryFailedError) as caught:
        producer.flush()
    assert len(caught.value.failures) == 5
    assert {f.event_type for f in caught.value.failures} == {"Fill"}
    assert producer.failed == 6 and producer.acked == 0
    producer.flush()  # failures were reported once, and nothing is pending


def test_a_missing_topic_is_an_error_and_is_not_created(bootstrap: str, unique_name: str) -> None:
    missing = f"{unique_name}-missing"
    producer = EventProducer({"bootstrap.servers": bootstrap}, events_topic=missing, config_topic=missing)
    with pytest.raises(ProduceError, match=f"topic {missing} does not exist"):
        producer.emit(_fill())
    assert missing not in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ({"acks": "1"}, "requires acks=all"),
        ({"request.required.acks": 0}, "requires acks=all"),
        ({"enable.idempotence": False}, "requires enable.idempotence=true"),
        ({}, "needs bootstrap.servers"),
    ],
)
def test_weaker_delivery_settings_are_refused(properties: dict[str, Any], message: str) -> None:
    base = {} if not properties else {"bootstrap.servers": "127.0.0.1:1"}
    with pytest.raises(ValueError, match=message):
        producer_config(base | properties)


def test_caller_properties_pass_through() -> None:
    config = producer_config({"bootstrap.servers": "b:1", "linger.ms": 20, "acks": "-1", "client.id": "x"})
    assert config["linger.ms"] == 20 and config["client.id"] == "x"
    assert config["acks"] == "all" and config["enable.idempotence"] == "true"
    assert config["allow.auto.create.topics"] == "false"
