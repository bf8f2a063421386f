"""Schema evolution is enforced: every version of every type reads every other, both ways."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import SchemaCatalog, SchemaVersion, default_catalog, load_version
from schemas.compatibility import can_read, transitive_problems
from schemas.errors import SchemaCatalogError

CATALOG = default_catalog()
FIXED_POINT = {"quantity", "price", "limit_price", "fee", "amount", "new_limit_price", "new_quantity"}


@pytest.mark.parametrize("type_name", CATALOG.type_names())
def test_every_type_is_full_transitive_compatible(type_name: str) -> None:
    problems = transitive_problems(CATALOG.versions(type_name))
    assert not problems, "\n".join(problems)


def test_some_types_have_evolved() -> None:
    evolved = {name for name in CATALOG.type_names() if len(CATALOG.versions(name)) > 1}
    assert {"Fill", "OrderRejected"} <= evolved
    assert "venue" in CATALOG.current("Fill").field_names()
    assert "reject_code" in CATALOG.current("OrderRejected").field_names()


def _copy_as_next_version(tmp_path: Path, base: SchemaVersion, edit: Any) -> SchemaVersion:
    schema = copy.deepcopy(dict(base.schema))
    edit(schema)
    folder = tmp_path / base.snake_name
    folder.mkdir()
    path = folder / f"v{base.version + 1}.avsc"
    path.write_text(json.dumps(schema))
    return load_version(path)


def test_removing_a_field_without_default_is_reported_with_type_and_field(tmp_path: Path) -> None:
    versions = CATALOG.versions("Fill")

    def drop_exec_id(schema: dict[str, Any]) -> None:
        schema["fields"] = [f for f in schema["fields"] if f["name"] != "exec_id"]

    broken = _copy_as_next_version(tmp_path, versions[-1], drop_exec_id)
    problems = transitive_problems([*versions, broken])
    assert problems
    for older in versions:
        expected = f"fill v{broken.version} -> v{older.version}"
        hits = [p for p in problems if p.startswith(expected) and "field 'exec_id'" in p]
        assert hits, f"no problem naming {expected!r} and exec_id in:\n" + "\n".join(problems)
    # The other direction is fine: a reader without exec_id skips it.
    assert not [p for p in problems if p.startswith("fill v1 ->") or p.startswith("fill v2 ->")]


def test_adding_a_required_field_is_reported(tmp_path: Path) -> None:
    versions = CATALOG.versions("OrderAccepted")

    def add_required(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "venue", "type": "string", "doc": "x"})

    broken = _copy_as_next_version(tmp_path, versions[-1], add_required)
    problems = transitive_problems([*versions, broken])
    assert any(p.startswith("order_accepted v1 -> v2") and "'venue'" in p for p in problems), problems


def _record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


def _field(name: str, kind: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, **extra}


@pytest.mark.parametrize(
    ("writer", "reader", "ok"),
    [
        ("int", "long", True),
        ("int", "double", True),
        ("long", "float", True),
        ("float", "double", True),
        ("string", "bytes", True),
        ("bytes", "string", True),
        ("long", "int", False),
        ("double", "float", False),
        ("string", "long", False),
        ({"type": "long", "logicalType": "timestamp-micros"}, "long", True),
        (["null", "string"], ["null", "string"], True),
        ("string", ["null", "string"], True),
        ("int", ["null", "long"], True),
        (["null", "string"], "string", False),
        (["null", "string"], ["null", "long"], False),
        (["boolean", "long", "string"], ["boolean", "long", "string", "double"], True),
    ],
)
def test_primitive_and_union_resolution(writer: Any, reader: Any, ok: bool) -> None:
    problems = can_read(_record(_field("x", writer)), _record(_field("x", reader)))
    assert (not problems) == ok, problems
    if not ok:
        assert all(p.path == "x" for p in problems)


def test_enum_symbols() -> None:
    def enum(symbols: list[str], **extra: Any) -> dict[str, Any]:
        return {"type": "enum", "name": "E", "symbols": symbols, **extra}

    wide, narrow = enum(["A", "B", "C"]), enum(["A", "B"])
    assert not can_read(_record(_field("e", narrow)), _record(_field("e", wide)))
    problems = can_read(_record(_field("e", wide)), _record(_field("e", narrow)))
    assert len(problems) == 1 and problems[0].path == "e" and "C" in problems[0].reason
    assert not can_read(_record(_field("e", wide)), _record(_field("e", enum(["A", "B"], default="A"))))


def test_nested_records_report_the_dotted_path() -> None:
    inner_w = _record(_field("a", "long"), name="Inner")
    inner_r = _record(_field("a", "long"), _field("b", "string"), name="Inner")
    problems = can_read(_record(_field("inner", inner_w)), _record(_field("inner", inner_r)))
    assert [p.path for p in problems] == ["inner.b"]
    with_default = _record(_field("a", "long"), _field("b", "string", default=""), name="Inner")
    assert not can_read(_record(_field("inner", inner_w)), _record(_field("inner", with_default)))


def test_arrays_maps_and_named_references() -> None:
    point = _record(_field("x", "int"), name="Point")
    writer = _record(
        _field("first", point), _field("more", {"type": "array", "items": "t.Point"}), _field("m", "int")
    )
    reader = _record(
        _field("first", _record(_field("x", "long"), name="Point")),
        _field("more", {"type": "array", "items": "Point"}),
        _field("m", {"type": "map", "values": "long"}),
    )
    problems = can_read(writer, reader)
    assert [p.path for p in problems] == ["m"]


def test_record_renames_need_an_alias() -> None:
    old = _record(_field("x", _record(_field("a", "int"), name="Old")))
    renamed = _record(_field("x", _record(_field("a", "int"), name="New")))
    aliased = _record(_field("x", {**_record(_field("a", "int"), name="New"), "aliases": ["Old"]}))
    assert [p.path for p in can_read(old, renamed)] == ["x"]
    assert not can_read(old, aliased)


def test_reader_field_aliases_match_writer_fields() -> None:
    writer = _record(_field("qty", "long"))
    reader = _record(_field("quantity", "long", aliases=["qty"]))
    assert not can_read(writer, reader)


def _crc64_avro(data: bytes) -> int:
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize("version", list(CATALOG), ids=lambda v: v.label.replace(" ", "-"))
def test_schema_conventions(version: SchemaVersion) -> None:
    schema = version.schema
    assert schema["namespace"] == "rewind.events"
    assert version.fingerprint == _crc64_avro(version.canonical_form.encode()).to_bytes(8, "little")
    names = version.field_names()
    assert names[:5] == ("event_id", "event_type", "occurred_at", "account_id", "source")
    by_name = {f["name"]: f for f in schema["fields"]}
    assert by_name["event_id"]["type"] == {"type": "string", "logicalType": "uuid"}
    assert by_name["occurred_at"]["type"] == {"type": "long", "logicalType": "timestamp-micros"}
    for field in schema["fields"]:
        assert field.get("doc"), f"{version.label}: field '{field['name']}' has no doc"
        if field["name"] in FIXED_POINT:
            assert field.get("scale") == 8, f"{version.label}: '{field['name']}' must carry scale 8"
            assert field["type"] in ("long", ["null", "long"])
        assert "float" not in json.dumps(field["type"]) and "double" not in json.dumps(field["type"])


def test_catalog_refuses_gaps_and_misplaced_files(tmp_path: Path) -> None:
    source = CATALOG.versions("OrderExpired")[0].path
    (tmp_path / "order_expired").mkdir()
    (tmp_path / "order_expired" / "v2.avsc").write_text(source.read_text())
    with pytest.raises(SchemaCatalogError, match="without gaps"):
        SchemaCatalog.load(tmp_path)
    (tmp_path / "fill").mkdir()
    (tmp_path / "fill" / "v1.avsc").write_text(source.read_text())
    with pytest.raises(SchemaCatalogError, match="must live in schemas/order_expired/"):
        SchemaCatalog.load(tmp_path)


def test_catalog_refuses_two_files_with_one_fingerprint(tmp_path: Path) -> None:
    source = CATALOG.versions("OrderExpired")[0].path
    (tmp_path / "order_expired").mkdir()
    for n in (1, 2):
        (tmp_path / "order_expired" / f"v{n}.avsc").write_text(source.read_text())
    with pytest.raises(SchemaCatalogError, match="same fingerprint"):
        SchemaCatalog.load(tmp_path)
