"""Events to bytes and back: Avro single-object encoding, resolved into the current schema.

Wire format (``docs/events.md``): ``C3 01``, the writer schema's 8-byte CRC-64-AVRO fingerprint, then
the Avro binary body. :meth:`Codec.encode` always writes with the current version of the event's type
(or an explicitly named older one, for tests and golden files); :meth:`Codec.decode` finds the writer
schema by fingerprint and returns the event as the current reader schema sees it, in the decoded form
the fold relies on: ``occurred_at`` an ``int`` of microseconds, ``event_id`` a ``str``, enums as
their symbol ``str``, absent optional fields as ``None``. Never a ``datetime`` or ``UUID``: the
schemas handed to fastavro have their ``logicalType`` annotations removed, so it has nothing to
convert (the fingerprints are unaffected, Parsing Canonical Form drops those annotations anyway).

Decoding is the projector's hot path, so all per-schema work happens once, in the constructor: every
known fingerprint maps to a prepared reader. A writer that is the current version decodes with its
own schema; an older version whose differences are only added fields with plain defaults or removed
fields decodes with its own schema and then gets the defaults filled in (about twice as fast as
fastavro's general resolution); anything else goes through fastavro's full schema resolution.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any, NoReturn

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas.catalog import SchemaCatalog, SchemaVersion, default_catalog
from schemas.errors import EventEncodeError, UndecodableEventError, UnknownFingerprintError
from schemas.strict import RecordCheck, record_checker

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

Event = dict[str, Any]


def physical_schema(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType`` annotations: values stay raw ints and strs."""
    if isinstance(schema, dict):
        return {k: physical_schema(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [physical_schema(s) for s in schema]
    return schema


def _shape(schema: Any) -> Any:
    """The parts of a type that decide how its bytes read (docs and defaults dropped)."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in ("doc", "default", "aliases")}
    if isinstance(schema, list):
        return [_shape(s) for s in schema]
    return schema


_PLAIN_BRANCHES = ("null", "boolean", "int", "long", "string")


def _plain_default(field: Mapping[str, Any]) -> tuple[bool, object]:
    """``(True, value)`` when the field's JSON default is already its decoded, immutable value."""
    if "default" not in field:
        return False, None
    kind = field["type"]
    first = kind[0] if isinstance(kind, list) else kind
    if isinstance(first, dict) and first.get("type") == "enum":
        return True, field["default"]
    if first in _PLAIN_BRANCHES or (isinstance(first, dict) and first.get("type") in _PLAIN_BRANCHES):
        return True, field["default"]
    return False, None


@dataclass(frozen=True, slots=True)
class _Reader:
    version: SchemaVersion
    writer_schema: Any
    reader_schema: Any
    dropped: tuple[str, ...]
    added: tuple[tuple[str, object], ...]


@dataclass(frozen=True, slots=True)
class _Writer:
    version: SchemaVersion
    header: bytes
    schema: Any
    check: RecordCheck


def _prepare_reader(writer: SchemaVersion, current: SchemaVersion, current_parsed: Any) -> _Reader:
    writer_parsed = parse_schema(physical_schema(writer.schema))
    if writer.fingerprint == current.fingerprint:
        return _Reader(writer, writer_parsed, None, (), ())
    written = {f["name"]: _shape(f["type"]) for f in writer.schema["fields"]}
    wanted = {f["name"]: f for f in current.schema["fields"]}
    added: list[tuple[str, object]] = []
    for name, field in wanted.items():
        if name in written:
            if written[name] != _shape(field["type"]):
                return _Reader(writer, writer_parsed, current_parsed, (), ())
            continue
        plain, default = _plain_default(field)
        if not plain:
            return _Reader(writer, writer_parsed, current_parsed, (), ())
        added.append((name, default))
    dropped = tuple(name for name in written if name not in wanted)
    return _Reader(writer, writer_parsed, None, dropped, tuple(added))


class Codec:
    """Encoder and decoder for one schema catalog; all schema preparation is done up front."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog
        self._writers: dict[tuple[str, int], _Writer] = {}
        self._current: dict[str, _Writer] = {}
        self._readers: dict[bytes, _Reader] = {}
        for type_name in catalog.type_names():
            current = catalog.current(type_name)
            current_parsed = parse_schema(physical_schema(current.schema))
            for version in catalog.versions(type_name):
                writer = _Writer(
                    version,
                    MAGIC + version.fingerprint,
                    parse_schema(physical_schema(version.schema)),
                    record_checker(version.schema),
                )
                self._writers[(type_name, version.version)] = writer
                self._readers[version.fingerprint] = _prepare_reader(version, current, current_parsed)
            self._current[type_name] = self._writers[(type_name, current.version)]

    def encode(self, event: Mapping[str, Any], *, version: int | None = None) -> bytes:
        """Single-object encoding of ``event`` with the current schema of ``event["event_type"]``.

        ``version`` writes with that older version instead (what an old producer would have sent).
        Raises :class:`EventEncodeError` naming the field when the event does not fit the schema
        exactly; nothing is half-written.
        """
        type_name = event.get("event_type")
        if not isinstance(type_name, str):
            raise EventEncodeError(f"event has no event_type string (got {type_name!r})")
        writer = self._current.get(type_name) if version is None else self._writers.get((type_name, version))
        if writer is None:
            if type_name in self._current:
                raise EventEncodeError(f"{type_name} has no schema version {version}")
            raise EventEncodeError(
                f"unknown event_type {type_name!r}; known types: {', '.join(self._current)}"
            )
        writer.check(event)
        stream = BytesIO()
        stream.write(writer.header)
        schemaless_writer(stream, writer.schema, event)
        return stream.getvalue()

    def decode(self, value: bytes | None) -> Event:
        """The event in ``value``, resolved into the current schema of its type.

        Raises :class:`UnknownFingerprintError` when the writer schema is not in this catalog and
        :class:`UndecodableEventError` for anything else that is not a complete, valid record
        (including a record without a value).
        """
        if value is None:
            self._raise_header_error(value)
        reader = self._readers.get(value[2:HEADER_SIZE])
        if reader is None or not value.startswith(MAGIC):
            self._raise_header_error(value)
        body = value[HEADER_SIZE:]
        stream = BytesIO(body)
        try:
            event: Event = schemaless_reader(stream, reader.writer_schema, reader.reader_schema)  # type: ignore[assignment]
        except Exception as exc:
            raise UndecodableEventError(
                f"the body does not decode as {reader.version.label}: {type(exc).__name__}: {exc}",
                fingerprint=reader.version.fingerprint_hex,
                offset=HEADER_SIZE + stream.tell(),
            ) from exc
        if stream.tell() != len(body):
            raise UndecodableEventError(
                f"{len(body) - stream.tell()} bytes left over after a complete {reader.version.label} "
                "record: the body was not written with the schema its fingerprint names",
                fingerprint=reader.version.fingerprint_hex,
                offset=HEADER_SIZE + stream.tell(),
            )
        if reader.added or reader.dropped:
            for name in reader.dropped:
                del event[name]
            for name, default in reader.added:
                event[name] = default
        return event

    def writer_version(self, value: bytes) -> SchemaVersion:
        """The schema version ``value`` was written with (header only; the body is not checked)."""
        reader = self._readers.get(value[2:HEADER_SIZE])
        if reader is None or not value.startswith(MAGIC):
            self._raise_header_error(value)
        return reader.version

    def _raise_header_error(self, value: bytes | None) -> NoReturn:
        if value is None:
            raise UndecodableEventError(
                "the record has no value (a tombstone?); events are never deleted by key",
                fingerprint=None,
                offset=0,
            )
        if not value.startswith(MAGIC):
            found = value[:2].hex(" ") or "an empty value"
            raise UndecodableEventError(
                f"the value does not start with the Avro single-object marker c3 01 (found {found})",
                fingerprint=None,
                offset=0,
            )
        if len(value) < HEADER_SIZE:
            raise UndecodableEventError(
                f"truncated header: {len(value)} bytes, the marker and fingerprint need {HEADER_SIZE}",
                fingerprint=None,
                offset=len(value),
            )
        raise UnknownFingerprintError(value[2:HEADER_SIZE].hex(), offset=2)


@functools.cache
def default_codec() -> Codec:
    """The codec of the schemas shipped with this rewind (built once per process)."""
    return Codec(default_catalog())


def encode(event: Mapping[str, Any]) -> bytes:
    """Encode with the shipped schemas; see :meth:`Codec.encode`."""
    return default_codec().encode(event)


def decode(value: bytes | None) -> Event:
    """Decode with the shipped schemas; see :meth:`Codec.decode`."""
    return default_codec().decode(value)
