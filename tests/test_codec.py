"""The codec: exact round trips, resolution of old versions, the decoded form, and precise errors."""

from __future__ import annotations

import datetime
import io
import uuid
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.catalog import default_catalog
from schemas.codec import HEADER_SIZE, MAGIC, Codec, decode, default_codec, encode, physical_schema
from schemas.errors import (
    EventDecodeError,
    EventEncodeError,
    UndecodableEventError,
    UnknownFingerprintError,
)
from tests.golden.make_golden import sample_for

CATALOG = default_catalog()
CODEC = default_codec()


def _current_sample(type_name: str) -> dict[str, Any]:
    return sample_for(type_name, CATALOG.current(type_name).field_names())


@pytest.mark.parametrize("type_name", CATALOG.type_names())
def test_round_trip_gives_the_documented_decoded_form(type_name: str) -> None:
    event = _current_sample(type_name)
    value = encode(event)
    assert value[:2] == MAGIC
    assert value[2:HEADER_SIZE] == CATALOG.current(type_name).fingerprint
    decoded = decode(value)
    assert decoded == event
    assert type(decoded["occurred_at"]) is int
    assert type(decoded["event_id"]) is str
    for item in decoded.values():
        assert not isinstance(item, datetime.datetime | datetime.date | uuid.UUID | float)


@pytest.mark.parametrize("version", list(CATALOG), ids=lambda v: v.label.replace(" ", "-"))
def test_old_versions_resolve_exactly_as_fastavro_resolution_does(version: Any) -> None:
    """The prepared fast path for old writers must equal fastavro's general schema resolution."""
    event = sample_for(version.type_name, version.field_names())
    value = CODEC.encode(event, version=version.version)
    assert CODEC.writer_version(value) == version
    current = CATALOG.current(version.type_name)
    reference = schemaless_reader(
        io.BytesIO(value[HEADER_SIZE:]),
        parse_schema(physical_schema(version.schema)),
        parse_schema(physical_schema(current.schema)),
    )
    assert decode(value) == reference
    assert set(decode(value)) == set(current.field_names())


def test_a_v1_fill_decodes_with_venue_none() -> None:
    v1 = sample_for("Fill", CATALOG.versions("Fill")[0].field_names())
    assert "venue" not in v1
    assert decode(CODEC.encode(v1, version=1))["venue"] is None


def _strategy(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of([_strategy(s) for s in schema])
    if isinstance(schema, dict) and schema["type"] == "enum":
        return st.sampled_from(schema["symbols"])
    if isinstance(schema, dict):
        return _strategy(schema["type"])
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "long": st.integers(-(2**63), 2**63 - 1),
        "string": st.text(max_size=40),
    }[schema]


def _event_strategy(type_name: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = CATALOG.current(type_name).schema["fields"]
    return st.fixed_dictionaries(
        {f["name"]: st.just(type_name) if f["name"] == "event_type" else _strategy(f["type"]) for f in fields}
    )


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CATALOG.type_names()).flatmap(_event_strategy))
def test_any_schema_valid_event_round_trips_exactly(event: dict[str, Any]) -> None:
    assert decode(encode(event)) == event


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quantity": 1.5}, "Fill.quantity must be long, got float 1.5"),
        ({"quantity": True}, "Fill.quantity must be long, got bool True"),
        ({"quantity": 2**63}, "Fill.quantity must be long"),
        ({"liquidity": "BOTH"}, "Fill.liquidity must be one of MAKER, TAKER"),
        ({"event_id": uuid.UUID(int=1)}, "Fill.event_id must be string, got UUID"),
        ({"occurred_at": datetime.datetime(2026, 1, 1)}, "Fill.occurred_at must be long, got datetime"),
        ({"surprise": 1}, "Fill has no field 'surprise'"),
        ({"event_type": "Nope"}, "unknown event_type 'Nope'"),
    ],
)
def test_encode_refuses_anything_inexact_and_names_the_field(change: dict[str, Any], message: str) -> None:
    event = _current_sample("Fill") | change
    with pytest.raises(EventEncodeError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        encode(event)


def test_encode_refuses_a_missing_required_field_but_fills_a_defaulted_one() -> None:
    event = _current_sample("Fill")
    with pytest.raises(EventEncodeError, match=r"Fill\.fee is missing"):
        encode({k: v for k, v in event.items() if k != "fee"})
    assert decode(encode({k: v for k, v in event.items() if k != "venue"}))["venue"] is None


def test_unknown_fingerprint_names_it_and_the_offset() -> None:
    value = encode(_current_sample("OrderAccepted"))
    forged = MAGIC + bytes.fromhex("0102030405060708") + value[HEADER_SIZE:]
    with pytest.raises(UnknownFingerprintError) as caught:
        decode(forged)
    assert caught.value.fingerprint == "0102030405060708"
    assert caught.value.offset == 2
    assert "deploy a rewind whose schemas/ contains the writer schema" in str(caught.value)
    assert isinstance(caught.value, EventDecodeError)


def test_bad_marker_is_undecodable_at_offset_zero() -> None:
    value = encode(_current_sample("OrderAccepted"))
    with pytest.raises(UndecodableEventError) as caught:
        decode(b"\x00" + value[1:])
    assert (caught.value.offset, caught.value.fingerprint) == (0, None)
    assert "c3 01" in str(caught.value)
    with pytest.raises(UndecodableEventError, match="empty value"):
        decode(b"")


def test_truncated_header_and_body() -> None:
    value = encode(_current_sample("Fill"))
    fingerprint = CATALOG.current("Fill").fingerprint_hex
    with pytest.raises(UndecodableEventError) as header:
        decode(value[:6])
    assert (header.value.offset, header.value.fingerprint) == (6, None)
    for cut in (HEADER_SIZE, HEADER_SIZE + 5, len(value) - 1):
        with pytest.raises(UndecodableEventError) as body:
            decode(value[:cut])
        assert body.value.fingerprint == fingerprint
        assert HEADER_SIZE <= body.value.offset <= cut
        assert "fill v2" in str(body.value)


def test_trailing_bytes_and_corrupt_bodies() -> None:
    value = encode(_current_sample("OrderExpired"))
    with pytest.raises(UndecodableEventError, match="2 bytes left over") as trailing:
        decode(value + b"\x00\x00")
    assert trailing.value.offset == len(value)
    bad_utf8 = bytearray(value)
    bad_utf8[HEADER_SIZE + 1] = 0xFF
    with pytest.raises(UndecodableEventError, match="UnicodeDecodeError"):
        decode(bytes(bad_utf8))
    fill = bytearray(encode(_current_sample("Fill") | {"venue": None}))
    fill[-2] = 0x7E  # liquidity enum index 63
    with pytest.raises(UndecodableEventError):
        decode(bytes(fill))


def test_codec_instances_are_independent_of_the_default() -> None:
    codec = Codec(CATALOG)
    event = _current_sample("BalanceChanged")
    assert codec.decode(codec.encode(event)) == event


def test_a_record_without_value_is_undecodable() -> None:
    with pytest.raises(UndecodableEventError, match="no value") as caught:
        decode(None)
    assert (caught.value.offset, caught.value.fingerprint) == (0, None)


@pytest.mark.parametrize("codec", [default_codec(), Codec(CATALOG)], ids=["default", "fresh"])
def test_an_event_type_naming_another_schema_is_undecodable(codec: Codec) -> None:
    """An OrderAccepted record whose event_type says "Fill" would be dispatched to the wrong handler."""
    accepted = _current_sample("OrderAccepted")
    version = CATALOG.current("OrderAccepted")
    stream = io.BytesIO()
    stream.write(MAGIC + version.fingerprint)
    schemaless_writer(
        stream, parse_schema(physical_schema(version.schema)), accepted | {"event_type": "Fill"}
    )
    with pytest.raises(UndecodableEventError, match="event_type field says 'Fill'") as caught:
        codec.decode(stream.getvalue())
    assert caught.value.fingerprint == version.fingerprint_hex
    assert codec.decode(codec.encode(accepted)) == accepted
