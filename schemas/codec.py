"""Events to bytes and back: Avro single-object encoding, resolved into the current schema.

Wire format (``docs/events.md``): ``C3 01``, the writer schema's 8-byte CRC-64-AVRO fingerprint, then
the Avro binary body. :meth:`Codec.encode` always writes with the current version of the event's type
(or an explicitly named older one, for tests and golden files); :meth:`Codec.decode` finds the writer
schema by fingerprint and returns the event as the current reader schema sees it, in the decoded form
the fold relies on: ``occurred_at`` an ``int`` of microseconds, ``event_id`` a ``str``, enums as
their symbol ``str``, absent optional fields as ``None``. Never a ``datetime`` or ``UUID``: the
schemas are used with their ``logicalType`` annotations removed, so there is nothing to convert (the
fingerprints are unaffected, Parsing Canonical Form drops those annotations anyway).

Decoding is the projector's hot path and encoding the producer's, so all per-schema work happens once,
in the constructor: every writer fingerprint and every (type, version) gets a function generated for
that schema by :mod:`schemas.codegen`, compiled by the native build when its module matches these
schemas exactly (see :data:`NATIVE_MODULE`), interpreted otherwise (decoding ~9x faster than fastavro
compiled, ~3x interpreted). fastavro stays the reference: whenever a generated function is not sure
(an event that does not fit exactly, bytes that are not a clean record, a schema outside the
generated subset), the same call goes through fastavro and the exact type checks of
:mod:`schemas.strict`, which decide the result and word the error. ``tests/test_codegen.py`` proves
both give the same bytes and the same events.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any, NoReturn

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from rewind.ground.native_build import pure_python_asked
from schemas import codegen
from schemas.catalog import SchemaCatalog, SchemaVersion, default_catalog
from schemas.errors import EventEncodeError, UndecodableEventError, UnknownFingerprintError
from schemas.record_plan import c_encoder, record_plan
from schemas.strict import RecordCheck, record_checker

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8

Event = dict[str, Any]
Encoder = codegen.Encoder


def physical_schema(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType`` annotations: values stay raw ints and strs."""
    if isinstance(schema, dict):
        return {k: physical_schema(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [physical_schema(s) for s in schema]
    return schema


@dataclass(frozen=True, slots=True)
class _Reader:
    """The reference decoding of one writer version: fastavro, with resolution unless it is current."""

    version: SchemaVersion
    writer_schema: Any
    reader_schema: Any


@dataclass(frozen=True, slots=True)
class _Writer:
    version: SchemaVersion
    header: bytes
    schema: Any
    check: RecordCheck
    physical: Any
    generated: Encoder | None


class Codec:
    """Encoder and decoder for one schema catalog; all schema preparation is done up front."""

    def __init__(self, catalog: SchemaCatalog) -> None:
        self.catalog = catalog
        self._writers: dict[tuple[str, int], _Writer] = {}
        self._current: dict[str, _Writer] = {}
        self._encoders: dict[str, Encoder] = {}
        self._readers: dict[bytes, _Reader] = {}
        self._decoders, self._raw_encoders = self._generate(catalog)
        for type_name in catalog.type_names():
            current = catalog.current(type_name)
            current_parsed = parse_schema(physical_schema(current.schema))
            for version in catalog.versions(type_name):
                header = MAGIC + version.fingerprint
                physical = physical_schema(version.schema)
                raw = self._raw_encoders.get(header)
                writer = _Writer(
                    version,
                    header,
                    parse_schema(physical),
                    record_checker(version.schema),
                    physical,
                    None if raw is None else functools.partial(raw, None),
                )
                self._writers[(type_name, version.version)] = writer
                is_current = version.fingerprint == current.fingerprint
                self._readers[version.fingerprint] = _Reader(
                    version, writer.schema, None if is_current else current_parsed
                )
                self._decoders.setdefault(header, self.reference_decode)
            self._current[type_name] = self._writers[(type_name, current.version)]
            fastest = self.compiled_encoder(type_name, None)
            if fastest is not None:
                self._encoders[type_name] = fastest

    def _generate(
        self, catalog: SchemaCatalog
    ) -> tuple[dict[bytes, Callable[[bytes], Event]], dict[bytes, codegen.RawEncoder]]:
        """The generated decoder and encoder of every schema version, by header: the native build's
        when its module was generated from exactly these schemas, else compiled here from the source."""
        decoders: dict[bytes, codegen.Source] = {}
        encoders: dict[bytes, codegen.Source] = {}
        labels: dict[bytes, str] = {}
        for type_name in catalog.type_names():
            current_physical = physical_schema(catalog.current(type_name).schema)
            for version in catalog.versions(type_name):
                header = MAGIC + version.fingerprint
                physical = physical_schema(version.schema)
                labels[header] = version.label
                tag = version.fingerprint_hex
                decoder = codegen.decoder_source(physical, current_physical, start=HEADER_SIZE, tag=tag)
                if decoder is not None:
                    decoders[header] = decoder
                encoder = codegen.encoder_source(physical, header, tag=tag)
                if encoder is not None:
                    encoders[header] = encoder
        self.native_module_text, digest = codegen.native_module(decoders, encoders)
        native = _native_module(digest)
        self.native_codecs = native is not None
        if native is not None:
            return dict(native.DECODERS), dict(native.ENCODERS)
        return (
            {h: src.compile(src.function, f"{labels[h]} decoder") for h, src in decoders.items()},
            {h: src.compile(src.function, f"{labels[h]} encoder") for h, src in encoders.items()},
        )

    def encode(self, event: Mapping[str, Any], *, version: int | None = None) -> bytes:
        """Single-object encoding of ``event`` with the current schema of ``event["event_type"]``.

        ``version`` writes with that older version instead (what an old producer would have sent).
        Raises :class:`EventEncodeError` naming the field when the event does not fit the schema
        exactly; nothing is half-written.
        """
        if version is None:
            try:
                encoded = self._encoders[event["event_type"]](event)
            except Exception:  # the reference below decides, and words the error
                encoded = None
            if encoded is not None:
                return encoded
        return self._encode(event, version, generated=True)

    def reference_encode(self, event: Mapping[str, Any], *, version: int | None = None) -> bytes:
        """:meth:`encode` by fastavro alone (after the exact checks): the reference, several times slower."""
        return self._encode(event, version, generated=False)

    def compiled_encoder(self, type_name: str, accept: Callable[..., bool] | None) -> Encoder | None:
        """A generated encoder for the current version of ``type_name``, with an optional condition.

        The returned function gives exactly :meth:`encode`'s bytes for an event that fits the schema
        exactly *and* for whose field values (positional, schema order) ``accept`` returns True, and
        ``None`` for any other event (then validate it and use :meth:`encode`). ``accept`` must have
        the schema's field names as parameters; ``None`` means no condition, and then the C encoder of
        :mod:`schemas.record_plan` is returned when the native build has it. ``None`` instead of a
        function when the schema is outside what :mod:`schemas.codegen` generates.
        """
        writer = self._current[type_name]
        if accept is None and not pure_python_asked():
            plan = record_plan(writer.physical, writer.header)
            in_c = None if plan is None else c_encoder(plan)
            if in_c is not None:
                return in_c
        raw = self._raw_encoders.get(writer.header)
        if raw is None:
            return None
        if accept is not None:
            codegen.check_accept(writer.physical, accept, f"{writer.version.label} checked encoder")
        return functools.partial(raw, accept)

    def _encode(self, event: Mapping[str, Any], version: int | None, *, generated: bool) -> bytes:
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
        if generated and writer.generated is not None:
            try:
                encoded = writer.generated(event)
            except Exception:
                encoded = None
            if encoded is not None:
                return encoded
        writer.check(event)
        stream = BytesIO()
        stream.write(writer.header)
        schemaless_writer(stream, writer.schema, event)
        return stream.getvalue()

    def decode(self, value: bytes | None) -> Event:
        """The event in ``value``, resolved into the current schema of its type.

        Raises :class:`UnknownFingerprintError` when the writer schema is not in this catalog and
        :class:`UndecodableEventError` for anything else that is not a complete, valid record
        (including a record without a value, and one whose ``event_type`` names another schema).
        """
        try:
            event = self._decoders[value[:HEADER_SIZE]](value)  # type: ignore[index,arg-type]
        except Exception:  # not a clean record, or not a known header: the reference decides
            return self.reference_decode(value)
        return self._named_by_its_schema(value, event)  # type: ignore[arg-type]

    def _named_by_its_schema(self, value: bytes, event: Event) -> Event:
        """``event``, whose ``event_type`` must name the schema it was written with: a record saying
        "Fill" in an OrderAccepted schema would be folded as a fill."""
        version = self._readers[value[2:HEADER_SIZE]].version
        if event["event_type"] != version.type_name:
            raise UndecodableEventError(
                f"the event_type field says {event['event_type']!r}, but the record was written with "
                f"{version.label}: a record's event_type must name its own schema",
                fingerprint=version.fingerprint_hex,
                offset=HEADER_SIZE,
            )
        return event

    def reference_decode(self, value: bytes | None) -> Event:
        """:meth:`decode` by fastavro alone: the reference, and what finds the offset of an error."""
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
        return self._named_by_its_schema(value, event)

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


NATIVE_MODULE = "schemas.native_codecs"
"""The build's mypyc-compiled encoders and decoders (``setup.py`` writes the module from
:attr:`Codec.native_module_text` and compiles it)."""


def _native_module(digest: str) -> Any:
    """The build's compiled codecs, if its module was generated from exactly these schemas by this
    generator (its ``SOURCE_SHA256`` is ``digest``); None otherwise, or under ``REWIND_PURE_PYTHON``."""
    if pure_python_asked():
        return None
    try:
        module = importlib.import_module(NATIVE_MODULE)
    except ImportError:
        return None
    return module if getattr(module, "SOURCE_SHA256", None) == digest else None


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
