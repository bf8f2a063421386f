"""Every event schema rewind knows, by type, version and fingerprint.

The ``.avsc`` files are the source of truth: ``schemas/<snake_name>/v<N>.avsc``, one file per
version, never edited once released and never deleted (old events in the log were written with them).
The catalog loads all of them, checks they are consistent (record name matches the directory,
versions are 1..N without gaps, no two files share a fingerprint) and computes each version's
CRC-64-AVRO fingerprint of its Parsing Canonical Form: the 8 bytes that identify the writer schema in
a single-object-encoded value. The current version of a type is its highest ``vN``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from schemas.errors import SchemaCatalogError

SCHEMA_DIR = Path(__file__).resolve().parent
NAMESPACE = "rewind.events"
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


def snake_name(type_name: str) -> str:
    """``OrderSubmitted`` -> ``order_submitted``: the directory holding a type's versions."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", type_name).lower()


@dataclass(frozen=True)
class SchemaVersion:
    """One released version of one event type's schema."""

    type_name: str
    version: int
    path: Path
    schema: Mapping[str, Any]
    canonical_form: str
    fingerprint: bytes

    @property
    def snake_name(self) -> str:
        return snake_name(self.type_name)

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as it appears on the wire (little-endian), in lowercase hex."""
        return self.fingerprint.hex()

    @property
    def label(self) -> str:
        """``fill v2``: how messages name a version."""
        return f"{self.snake_name} v{self.version}"

    def field_names(self) -> tuple[str, ...]:
        return tuple(str(f["name"]) for f in self.schema["fields"])


def load_version(path: Path) -> SchemaVersion:
    """Parse one ``.avsc`` file and fingerprint it; refuses files that are not a valid record schema."""
    match = _VERSION_FILE.match(path.name)
    if match is None:
        raise SchemaCatalogError(f"{path}: schema files must be named v<N>.avsc (N >= 1)")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaCatalogError(f"{path}: cannot read the schema: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaCatalogError(f"{path}: an event schema must be an Avro record")
    if schema.get("namespace") != NAMESPACE:
        raise SchemaCatalogError(f"{path}: namespace must be '{NAMESPACE}', got {schema.get('namespace')!r}")
    try:
        parse_schema(schema)
        canonical = to_parsing_canonical_form(schema)
    except Exception as exc:
        raise SchemaCatalogError(f"{path}: not a valid Avro schema: {exc}") from exc
    type_name = str(schema["name"])
    if path.parent.name != snake_name(type_name):
        raise SchemaCatalogError(
            f"{path}: record {type_name} must live in schemas/{snake_name(type_name)}/, "
            f"not schemas/{path.parent.name}/"
        )
    return SchemaVersion(
        type_name=type_name,
        version=int(match.group(1)),
        path=path,
        schema=schema,
        canonical_form=canonical,
        fingerprint=bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO")),
    )


class SchemaCatalog:
    """All versions of all event types; immutable once built."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        by_type: dict[str, list[SchemaVersion]] = {}
        by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in versions:
            other = by_fingerprint.get(version.fingerprint)
            if other is not None:
                raise SchemaCatalogError(
                    f"{version.path} and {other.path} have the same fingerprint {version.fingerprint_hex}: "
                    "a new version must change the schema, and each released version exists once"
                )
            by_fingerprint[version.fingerprint] = version
            by_type.setdefault(version.type_name, []).append(version)
        for type_name, listed in by_type.items():
            listed.sort(key=lambda v: v.version)
            numbers = [v.version for v in listed]
            if numbers != list(range(1, len(listed) + 1)):
                raise SchemaCatalogError(
                    f"{type_name}: versions must be v1..vN without gaps, found {numbers}; "
                    "never delete a released version"
                )
        self._by_type = {name: tuple(listed) for name, listed in sorted(by_type.items())}
        self._by_fingerprint = by_fingerprint

    @classmethod
    def load(cls, root: Path = SCHEMA_DIR) -> SchemaCatalog:
        """Every ``<type>/v<N>.avsc`` under ``root``."""
        paths = sorted(root.glob("*/v*.avsc"))
        if not paths:
            raise SchemaCatalogError(f"no schemas found under {root} (expected <type>/v<N>.avsc files)")
        return cls([load_version(p) for p in paths])

    def type_names(self) -> tuple[str, ...]:
        return tuple(self._by_type)

    def versions(self, type_name: str) -> tuple[SchemaVersion, ...]:
        """Every version of ``type_name``, oldest first."""
        try:
            return self._by_type[type_name]
        except KeyError:
            known = ", ".join(self._by_type)
            raise KeyError(f"unknown event type {type_name!r}; known: {known}") from None

    def current(self, type_name: str) -> SchemaVersion:
        """The highest version: what producers write and what decoding resolves into."""
        return self.versions(type_name)[-1]

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fingerprint)

    def fingerprints(self) -> tuple[str, ...]:
        """Every known writer fingerprint in hex (wire byte order), e.g. for a snapshot manifest."""
        return tuple(v.fingerprint_hex for v in self)

    def __iter__(self) -> Iterator[SchemaVersion]:
        for listed in self._by_type.values():
            yield from listed


@functools.cache
def default_catalog() -> SchemaCatalog:
    """The catalog of the schemas shipped with this rewind (loaded once per process)."""
    return SchemaCatalog.load()
