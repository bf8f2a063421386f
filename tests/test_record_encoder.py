"""The C record encoder against fastavro: the same bytes for every event that fits, None otherwise.

``schemas/_record_encoder.c`` encodes builder-made events on the producer's hot path; fastavro behind
the exact checks (``Codec.reference_encode``) is the reference, as for the generated encoders.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from producers.simulator import SimulationParams, simulate
from schemas.catalog import SchemaVersion
from schemas.codec import MAGIC, physical_schema
from schemas.record_plan import Plan, c_encoder, record_plan
from tests.golden.make_golden import sample_for
from tests.test_codegen import ANY_VERSION_EVENT, CATALOG, CODEC, _inexact, _outcome
from tests.test_native import native_build

pytestmark = native_build


def _plan(version: SchemaVersion) -> Plan:
    plan = record_plan(physical_schema(version.schema), MAGIC + version.fingerprint)
    assert plan is not None, f"{version.label} has no plan"
    return plan


def _encoder(version: SchemaVersion) -> Any:
    encoder = c_encoder(_plan(version))
    assert encoder is not None, "the native build has no schemas._record_encoder"
    return encoder


class _ByTypeAndVersion(dict[tuple[str, int], Any]):
    """The C encoder of each (type, version), made on first use (so a pure-Python run only skips)."""

    def __missing__(self, key: tuple[str, int]) -> Any:
        found = next(v for v in CATALOG if (v.type_name, v.version) == key)
        self[key] = _encoder(found)
        return self[key]


ENCODERS = _ByTypeAndVersion()


def test_the_producer_gets_the_c_encoder_for_every_type() -> None:
    for name in CATALOG.type_names():
        encoder = CODEC.compiled_encoder(name, None)
        assert getattr(encoder, "func", None) is getattr(_encoder(CATALOG.current(name)), "func", 0)


def test_20k_simulated_events_give_fastavros_bytes() -> None:
    params = SimulationParams(events=20_000, accounts=30, symbols=25, seed=11, anomaly_rate=0.02)
    for event in simulate(params):
        encoder = ENCODERS[(event["event_type"], CATALOG.current(event["event_type"]).version)]
        assert encoder(event) == CODEC.reference_encode(event)


@settings(max_examples=400, deadline=None)
@given(ANY_VERSION_EVENT)
def test_any_schema_valid_event_of_any_version_matches_fastavro(pair: tuple[SchemaVersion, Any]) -> None:
    version, event = pair
    assert ENCODERS[(version.type_name, version.version)](event) == CODEC.reference_encode(
        event, version=version.version
    )


@settings(max_examples=800, deadline=None)
@given(_inexact())
def test_an_event_fastavro_refuses_is_never_encoded(pair: tuple[SchemaVersion, dict[str, Any]]) -> None:
    version, event = pair
    routed = isinstance(event.get("event_type"), str) and event["event_type"] == version.type_name
    written = ENCODERS[(version.type_name, version.version)](event) if routed else None
    if written is not None:
        assert _outcome(lambda: CODEC.reference_encode(event, version=version.version)) == ("value", written)


def test_long_and_non_ascii_strings_and_lone_surrogates() -> None:
    """Past the encoder's 512-byte inline buffer, multi-byte UTF-8, and text with no UTF-8 form."""
    version = CATALOG.current("OrderRejected")
    base = sample_for("OrderRejected", version.field_names())
    encoder = ENCODERS[("OrderRejected", version.version)]
    for reason in ("Ablehnung: Käufer ✓", "x" * 63, "y" * 64, "ü" * 400, "z" * 8191, "🙂" * 3000):
        event = base | {"reason": reason, "reject_code": "é" * 300}
        assert encoder(event) == CODEC.reference_encode(event)
    assert encoder(base | {"reason": "\ud800"}) is None
    assert encoder(list(base.items())) is None


@pytest.mark.parametrize(
    "field_type",
    [
        "int",
        "double",
        "bytes",
        {"type": "array", "items": "long"},
        {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "long"}]},
        ["null", "null"],
        ["null", "int"],
    ],
)
def test_schemas_outside_the_plan_subset_have_no_plan(field_type: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]}
    assert record_plan(schema, MAGIC + bytes(8)) is None


def test_only_a_null_default_of_a_null_first_union_is_planned() -> None:
    def schema(field: dict[str, Any]) -> dict[str, Any]:
        return {"type": "record", "name": "R", "fields": [{"name": "f", **field}]}

    assert record_plan(schema({"type": ["null", "string"], "default": None}), b"") is not None
    assert record_plan(schema({"type": ["string", "null"], "default": "x"}), b"") is None
    assert record_plan(schema({"type": "long", "default": 0}), b"") is None
