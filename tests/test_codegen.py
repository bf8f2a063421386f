"""Generated encoders and decoders against fastavro: the same bytes, the same events, the same verdicts.

fastavro (behind the exact checks of ``schemas.strict``) is the reference: ``Codec.reference_encode``
and ``Codec.reference_decode``. Values are compared with their types and key order, because
``True == 1`` and dict equality ignores order.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.simulator import SimulationParams, simulate
from schemas import codegen
from schemas.catalog import SchemaVersion, default_catalog
from schemas.codec import HEADER_SIZE, MAGIC, default_codec, physical_schema
from schemas.errors import EventDecodeError, EventEncodeError
from tests.golden.make_golden import GOLDEN_DIR, sample_for

CATALOG = default_catalog()
CODEC = default_codec()
INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)


def typed(event: Mapping[str, Any]) -> list[tuple[str, type, Any]]:
    return [(name, type(value), value) for name, value in event.items()]


def _encoder(version: SchemaVersion) -> codegen.Encoder:
    encoder = codegen.compile_encoder(physical_schema(version.schema), MAGIC + version.fingerprint)
    assert encoder is not None, f"{version.label} is outside the generated subset"
    return encoder


def _decoder(version: SchemaVersion) -> codegen.Decoder:
    current = CATALOG.current(version.type_name)
    decoder = codegen.compile_decoder(
        physical_schema(version.schema), physical_schema(current.schema), start=HEADER_SIZE
    )
    assert decoder is not None, f"{version.label} is outside the generated subset"
    return decoder


ENCODERS = {(v.type_name, v.version): _encoder(v) for v in CATALOG}
DECODERS = {MAGIC + v.fingerprint: _decoder(v) for v in CATALOG}


def _outcome(action: Callable[[], Any]) -> tuple[str, Any]:
    """What ``action`` did: ``("value", typed result)`` or ``("error", class, message, details)``."""
    try:
        result = action()
    except (EventDecodeError, EventEncodeError, UnicodeError) as exc:
        details = (getattr(exc, "fingerprint", None), getattr(exc, "offset", None))
        return "error", (type(exc), str(exc), details)
    return "value", typed(result) if isinstance(result, dict) else result


@pytest.fixture(scope="module")
def simulated() -> list[dict[str, Any]]:
    return list(
        simulate(SimulationParams(events=20_000, accounts=30, symbols=25, seed=11, anomaly_rate=0.02))
    )


def test_20k_simulated_events_give_fastavros_bytes_and_events(simulated: list[dict[str, Any]]) -> None:
    for event in simulated:
        generated = ENCODERS[(event["event_type"], CATALOG.current(event["event_type"]).version)](event)
        value = CODEC.reference_encode(event)
        assert generated == value, event
        assert CODEC.encode(event) == value
        decoded = DECODERS[value[:HEADER_SIZE]](value)
        assert typed(decoded) == typed(CODEC.reference_decode(value)) == typed(event)
        assert typed(CODEC.decode(value)) == typed(decoded)


def test_old_writers_resolve_exactly_as_fastavro_resolution(simulated: list[dict[str, Any]]) -> None:
    for event in simulated[:5000]:
        for version in CATALOG.versions(event["event_type"])[:-1]:
            written = {name: event[name] for name in version.field_names()}
            value = CODEC.reference_encode(written, version=version.version)
            assert ENCODERS[(version.type_name, version.version)](written) == value
            assert CODEC.encode(written, version=version.version) == value
            decoded = DECODERS[value[:HEADER_SIZE]](value)
            assert typed(decoded) == typed(CODEC.reference_decode(value))


@pytest.mark.parametrize(
    "binary", sorted(GOLDEN_DIR.glob("*/v*.bin")), ids=lambda p: f"{p.parent.name}-{p.stem}"
)
def test_golden_files_decode_as_fastavro_decodes_them(binary: Any) -> None:
    value = binary.read_bytes()
    assert typed(DECODERS[value[:HEADER_SIZE]](value)) == typed(CODEC.reference_decode(value))


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
        "int": st.integers(*INT32),
        "long": st.one_of(st.integers(*INT64), st.integers(-300, 300)),
        "string": st.text(max_size=90),
    }[schema]


def _events(version: SchemaVersion) -> st.SearchStrategy[tuple[SchemaVersion, dict[str, Any]]]:
    fields = version.schema["fields"]
    return st.fixed_dictionaries(
        {
            f["name"]: st.just(version.type_name) if f["name"] == "event_type" else _strategy(f["type"])
            for f in fields
        }
    ).map(lambda event: (version, event))


ANY_VERSION_EVENT: st.SearchStrategy[tuple[SchemaVersion, dict[str, Any]]] = st.sampled_from(
    list(CATALOG)
).flatmap(_events)


@settings(max_examples=400, deadline=None)
@given(ANY_VERSION_EVENT)
def test_any_schema_valid_event_of_any_version_matches_fastavro(pair: tuple[SchemaVersion, Any]) -> None:
    version, event = pair
    value = CODEC.reference_encode(event, version=version.version)
    assert ENCODERS[(version.type_name, version.version)](event) == value
    assert typed(DECODERS[value[:HEADER_SIZE]](value)) == typed(CODEC.reference_decode(value))


class _Text(str):
    pass


class _Number(int):
    pass


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63, -(2**63) - 1, 2**63 - 1, -(2**63), 0, 1.0, b"x", ["MAKER"], ("x",)]),
    st.text(max_size=5),
    st.builds(_Text, st.sampled_from(["Fill", "MAKER", "x"])),
    st.builds(_Number, st.integers(0, 10)),
    st.sampled_from(["MAKER", "TAKER", "BUY", "LIMIT", "\ud800"]),
)


@st.composite
def _inexact(draw: st.DrawFn) -> tuple[SchemaVersion, dict[str, Any]]:
    version, event = draw(ANY_VERSION_EVENT)
    names = list(event)
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        event[name] = draw(ODD_VALUES)
    for name in draw(st.lists(st.sampled_from(names), max_size=2)):
        event.pop(name, None)
    if draw(st.booleans()):
        event[draw(st.sampled_from(["surprise", "venue", "reject_code"]))] = draw(ODD_VALUES)
    return version, event


@settings(max_examples=600, deadline=None)
@given(_inexact())
def test_an_event_fastavro_refuses_is_never_encoded(pair: tuple[SchemaVersion, dict[str, Any]]) -> None:
    """The generated encoder returns bytes only where the checked reference writes the same bytes."""
    version, event = pair
    routed = isinstance(event.get("event_type"), str) and event["event_type"] == version.type_name
    try:
        generated = ENCODERS[(version.type_name, version.version)](event) if routed else None
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form; fastavro raises it too
        generated = None
    reference = _outcome(lambda: CODEC.reference_encode(event, version=version.version))
    if generated is not None:
        assert reference == ("value", generated)
    assert _outcome(lambda: CODEC.encode(event, version=version.version)) == reference


def test_non_ascii_long_and_very_long_strings() -> None:
    base = sample_for("OrderRejected", CATALOG.current("OrderRejected").field_names())
    for reason in ("Ablehnung: Käufer ✓", "x" * 63, "y" * 64, "ü" * 40, "z" * 8191, "w" * 9000, "🙂" * 3000):
        event = base | {"reason": reason, "reject_code": "é"}
        value = CODEC.reference_encode(event)
        assert CODEC.encode(event) == value
        assert typed(DECODERS[value[:HEADER_SIZE]](value)) == typed(event)
    with pytest.raises(UnicodeEncodeError):
        CODEC.encode(base | {"reason": "\ud800"})


def _mutations(value: bytes) -> st.SearchStrategy[bytes]:
    size = len(value)
    return st.one_of(
        st.integers(0, size - 1).map(lambda cut: value[:cut]),
        st.binary(min_size=1, max_size=12).map(lambda extra: value + extra),
        st.tuples(st.integers(HEADER_SIZE, size - 1), st.integers(0, 255)).map(
            lambda change: value[: change[0]] + bytes([change[1]]) + value[change[0] + 1 :]
        ),
        st.tuples(st.integers(HEADER_SIZE, size), st.integers(0, 255)).map(
            lambda change: value[: change[0]] + bytes([change[1]]) + value[change[0] :]
        ),
    )


@settings(max_examples=800, deadline=None)
@given(
    ANY_VERSION_EVENT.map(lambda pair: CODEC.reference_encode(pair[1], version=pair[0].version)).flatmap(
        _mutations
    )
)
def test_corrupt_bytes_get_fastavros_verdict(value: bytes) -> None:
    """A generated decoder returns only what fastavro returns; the codec gives fastavro's errors."""
    reference = _outcome(lambda: CODEC.reference_decode(value))
    decoder = DECODERS.get(value[:HEADER_SIZE])
    if decoder is not None:
        try:
            generated = decoder(value)
        except Exception:
            generated = None
        if generated is not None and reference[0] == "value":
            assert reference == ("value", typed(generated))
        elif generated is not None:  # a body that decodes, but names another schema's event_type
            assert "event_type field says" in reference[1][1]
            assert generated["event_type"] != CODEC.writer_version(value).type_name
    assert _outcome(lambda: CODEC.decode(value)) == reference


SYNTHETIC: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "fields": [
        {"name": "n", "type": "null"},
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": {"type": "long"}},
        {"name": "text", "type": "string"},
        {
            "name": "letter",
            "type": {"type": "enum", "name": "Letter", "symbols": [f"S{i}" for i in range(63)]},
        },
        {"name": "any", "type": ["null", "boolean", "int", "long", "string"]},
        {"name": "maybe", "type": ["string", "null"], "default": "none"},
        {"name": "later", "type": ["long", "null"], "default": 7},
    ],
}


def _synthetic_value(schema: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema, dict) and schema["type"] == "long":
        return _strategy("long")
    return _strategy(schema)


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({f["name"]: _synthetic_value(f["type"]) for f in SYNTHETIC["fields"]}))
def test_every_supported_type_matches_fastavro(record: dict[str, Any]) -> None:
    encoder = codegen.compile_encoder(SYNTHETIC, b"")
    decoder = codegen.compile_decoder(SYNTHETIC, SYNTHETIC, start=0)
    assert encoder is not None and decoder is not None
    stream = io.BytesIO()
    schemaless_writer(stream, parse_schema(SYNTHETIC), record)
    assert encoder(record) == stream.getvalue()
    reference = schemaless_reader(io.BytesIO(stream.getvalue()), parse_schema(SYNTHETIC), None)
    assert typed(decoder(stream.getvalue())) == typed(reference)  # type: ignore[arg-type]
    missing = {k: v for k, v in record.items() if k not in ("maybe", "later")}
    stream = io.BytesIO()
    schemaless_writer(stream, parse_schema(SYNTHETIC), missing)
    assert encoder(missing) == stream.getvalue()


WRITER: dict[str, Any] = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "a", "type": "long"},
        {"name": "gone", "type": "string"},
        {"name": "b", "type": ["null", "int"]},
        {"name": "also_gone", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}},
    ],
}
READER: dict[str, Any] = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "new_text", "type": "string", "default": "dflt"},
        {"name": "b", "type": ["null", "int"], "default": None},
        {"name": "a", "type": "long"},
        {"name": "new_enum", "type": {"type": "enum", "name": "F", "symbols": ["P", "Q"]}, "default": "Q"},
        {"name": "new_flag", "type": "boolean", "default": True},
        {"name": "new_union", "type": ["null", "long"], "default": None},
    ],
}


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries({f["name"]: _strategy(f["type"]) for f in WRITER["fields"]}),
    st.binary(max_size=4),
)
def test_added_and_removed_fields_resolve_as_fastavro_does(record: dict[str, Any], junk: bytes) -> None:
    decoder = codegen.compile_decoder(WRITER, READER, start=0)
    assert decoder is not None
    stream = io.BytesIO()
    schemaless_writer(stream, parse_schema(WRITER), record)
    value = stream.getvalue()
    reference = schemaless_reader(io.BytesIO(value), parse_schema(WRITER), parse_schema(READER))
    assert typed(decoder(value)) == typed(reference)  # type: ignore[arg-type]
    # a removed string is skipped, never decoded: invalid UTF-8 there is fastavro's verdict too
    broken = io.BytesIO()
    schemaless_writer(broken, parse_schema(WRITER), record | {"gone": ""})
    patched = bytearray(broken.getvalue())
    split = _after_first_long(patched)
    patched[split : split + 1] = bytes([len(junk) * 2]) + junk
    assert typed(decoder(bytes(patched))) == typed(
        schemaless_reader(io.BytesIO(bytes(patched)), parse_schema(WRITER), parse_schema(READER))  # type: ignore[arg-type]
    )


def _after_first_long(value: bytearray) -> int:
    position = 0
    while value[position] >= 128:
        position += 1
    return position + 1


@pytest.mark.parametrize(
    "field_type",
    [
        "bytes",
        "float",
        "double",
        {"type": "array", "items": "long"},
        {"type": "map", "values": "string"},
        {"type": "fixed", "name": "F", "size": 4},
        {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "long"}]},
        ["null", {"type": "record", "name": "Inner2", "fields": []}],
        ["long", "long"],
        {"type": "long", "logicalType": "timestamp-micros"},
    ],
    ids=str,
)
def test_types_outside_the_subset_are_left_to_fastavro(field_type: Any) -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type}]}
    assert codegen.compile_encoder(schema, b"") is None
    assert codegen.compile_decoder(schema, schema, start=0) is None


def test_changed_types_and_aliases_are_left_to_fastavro_resolution() -> None:
    writer = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]}
    promoted = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "long"}]}
    renamed = {"type": "record", "name": "R", "fields": [{"name": "y", "type": "int", "aliases": ["x"]}]}
    no_default = {"type": "record", "name": "R", "fields": [{"name": "z", "type": "int"}]}
    for reader in (promoted, renamed, no_default):
        assert codegen.compile_decoder(writer, reader, start=0) is None


def test_accept_must_name_the_schema_fields() -> None:
    def accept(a: int) -> bool:
        return True

    with pytest.raises(ValueError, match="not the schema's fields"):
        codegen.compile_encoder(WRITER, b"", accept=accept)
