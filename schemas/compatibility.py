"""Can a reader schema read what a writer schema wrote? Avro schema resolution, checked statically.

The rules are those of the Avro specification's "Schema Resolution": records match fields by name
(reader aliases included); a writer field the reader lacks is skipped; a reader field the writer lacks
needs a default; ``int`` promotes to ``long``, ``float``, ``double``, ``long`` to ``float`` and
``double``, ``float`` to ``double``, ``string`` and ``bytes`` to each other; an enum reader must know
every writer symbol unless it declares a default symbol; named types (record, enum, fixed) must
agree on name (or a reader alias); arrays and maps resolve their items and values; for unions, every
branch the writer may pick must find a reader branch (the first exact match, else the first
promotable one). ``logicalType`` annotations never affect resolution.

rewind requires FULL TRANSITIVE compatibility between all versions of a type (every version reads
every other, in both directions), so that old events replay under new code and a not-yet-upgraded
projector can still read new events. :func:`transitive_problems` reports each violation with the
type, the two versions and the field path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.catalog import SchemaVersion

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


@dataclass(frozen=True)
class Incompatibility:
    """One reason the reader cannot read the writer's data; ``path`` is the dotted field path."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"field '{self.path}': {self.reason}" if self.path else self.reason


def _fullname(schema: Mapping[str, Any], namespace: str) -> str:
    name = str(schema["name"])
    if "." in name:
        return name
    space = schema.get("namespace", namespace)
    return f"{space}.{name}" if space else name


class _Names:
    """Named types defined so far in one schema, so string references can be followed."""

    def __init__(self) -> None:
        self.defined: dict[str, Mapping[str, Any]] = {}

    def collect(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self.collect(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in _NAMED:
                full = _fullname(schema, namespace)
                self.defined[full] = schema
                namespace = full.rpartition(".")[0]
            if kind in ("record", "error"):
                for field in schema["fields"]:
                    self.collect(field["type"], namespace)
            elif kind == "array":
                self.collect(schema["items"], namespace)
            elif kind == "map":
                self.collect(schema["values"], namespace)
            elif isinstance(kind, dict | list):
                self.collect(kind, namespace)

    def resolve(self, schema: Any, namespace: str) -> tuple[Any, str]:
        """Follow a name reference and unwrap ``{"type": <primitive>}``; returns (schema, namespace)."""
        while True:
            if isinstance(schema, str) and schema not in _PRIMITIVES:
                full = schema if "." in schema else (f"{namespace}.{schema}" if namespace else schema)
                target = self.defined.get(full) or self.defined.get(schema)
                if target is None:
                    raise ValueError(f"unknown named type {schema!r}")
                schema, namespace = target, _fullname(target, namespace).rpartition(".")[0]
            elif isinstance(schema, dict) and not isinstance(schema.get("type"), str):
                schema = schema["type"]
            elif isinstance(schema, dict) and schema["type"] in _PRIMITIVES:
                return schema["type"], namespace
            else:
                return schema, namespace


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return "record" if schema["type"] == "error" else str(schema["type"])


class _Checker:
    def __init__(self, writer: Any, reader: Any) -> None:
        self.writer_names = _Names()
        self.writer_names.collect(writer, "")
        self.reader_names = _Names()
        self.reader_names.collect(reader, "")
        self.problems: list[Incompatibility] = []
        self._in_progress: set[tuple[str, str]] = set()

    def check(self, writer: Any, reader: Any, wns: str, rns: str, path: str) -> None:
        writer, wns = self.writer_names.resolve(writer, wns)
        reader, rns = self.reader_names.resolve(reader, rns)
        wkind, rkind = _kind(writer), _kind(reader)
        if wkind == "union":
            for branch in writer:
                self.check(branch, reader, wns, rns, path)
            return
        if rkind == "union":
            chosen = self._pick_branch(writer, reader, wns, rns)
            if chosen is None:
                self._fail(path, f"the writer's {self._show(writer)} matches no branch of the reader's union")
            else:
                self.check(writer, chosen, wns, rns, path)
            return
        if wkind in _PRIMITIVES or rkind in _PRIMITIVES:
            if wkind != rkind and rkind not in _PROMOTIONS.get(wkind, frozenset()):
                self._fail(path, f"the writer's {wkind} cannot be read as {rkind}")
            return
        if wkind != rkind:
            self._fail(path, f"the writer's {wkind} cannot be read as {rkind}")
            return
        if wkind in ("record", "enum", "fixed") and not self._names_match(writer, reader, wns, rns):
            self._fail(
                path,
                f"{wkind} name differs: writer {_fullname(writer, wns)}, reader {_fullname(reader, rns)} "
                "(add the writer's name to the reader's aliases)",
            )
            return
        if wkind == "record":
            self._record(writer, reader, wns, rns, path)
        elif wkind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                self._fail(
                    path,
                    f"enum symbols {', '.join(missing)} are unknown to the reader and it has no "
                    "default symbol (add them, or give the reader enum a default)",
                )
        elif wkind == "fixed":
            if writer["size"] != reader["size"]:
                self._fail(path, f"fixed size differs: writer {writer['size']}, reader {reader['size']}")
        elif wkind == "array":
            self.check(writer["items"], reader["items"], wns, rns, f"{path}[]")
        elif wkind == "map":
            self.check(writer["values"], reader["values"], wns, rns, f"{path}{{}}")

    def _record(self, writer: Any, reader: Any, wns: str, rns: str, path: str) -> None:
        wfull, rfull = _fullname(writer, wns), _fullname(reader, rns)
        key = (wfull, rfull)
        if key in self._in_progress:
            return
        self._in_progress.add(key)
        wns_inner, rns_inner = wfull.rpartition(".")[0], rfull.rpartition(".")[0]
        written = {str(f["name"]): f for f in writer["fields"]}
        for field in reader["fields"]:
            name = str(field["name"])
            field_path = f"{path}.{name}" if path else name
            source = written.get(name)
            if source is None:
                source = next((written[a] for a in field.get("aliases", ()) if a in written), None)
            if source is None:
                if "default" not in field:
                    self._fail(
                        field_path,
                        "the reader requires it (no default) but the writer does not have it; "
                        "give the field a default, or keep it in every version",
                    )
                continue
            self.check(source["type"], field["type"], wns_inner, rns_inner, field_path)
        self._in_progress.discard(key)

    def _names_match(self, writer: Any, reader: Any, wns: str, rns: str) -> bool:
        wfull, rfull = _fullname(writer, wns), _fullname(reader, rns)
        if wfull == rfull or str(writer["name"]).rpartition(".")[2] == str(reader["name"]).rpartition(".")[2]:
            return True
        aliases = {a if "." in a else f"{rfull.rpartition('.')[0]}.{a}" for a in reader.get("aliases", ())}
        return wfull in aliases

    def _pick_branch(self, writer: Any, union: list[Any], wns: str, rns: str) -> Any | None:
        wkind = _kind(writer)
        resolved = [self.reader_names.resolve(b, rns)[0] for b in union]
        for branch, target in zip(union, resolved, strict=True):
            if _kind(target) == wkind and (
                wkind not in ("record", "enum", "fixed") or self._names_match(writer, target, wns, rns)
            ):
                return branch
        for branch, target in zip(union, resolved, strict=True):
            if _kind(target) in _PROMOTIONS.get(wkind, frozenset()):
                return branch
        return None

    def _show(self, schema: Any) -> str:
        kind = _kind(schema)
        return f"{kind} {schema['name']}" if kind in ("record", "enum", "fixed") else kind

    def _fail(self, path: str, reason: str) -> None:
        self.problems.append(Incompatibility(path, reason))


def can_read(writer: Any, reader: Any) -> list[Incompatibility]:
    """Every reason ``reader`` cannot read data written with ``writer`` (empty: it can)."""
    checker = _Checker(writer, reader)
    checker.check(writer, reader, "", "", "")
    return checker.problems


def pair_problems(writer: SchemaVersion, reader: SchemaVersion) -> list[str]:
    """``can_read`` for two catalog versions, each message naming the type, versions and field."""
    return [
        f"{writer.label} -> v{reader.version} (v{reader.version} reading data written by "
        f"v{writer.version}): {problem}"
        for problem in can_read(writer.schema, reader.schema)
    ]


def transitive_problems(versions: Iterable[SchemaVersion]) -> list[str]:
    """FULL TRANSITIVE check: every version must read every other version's data, both ways."""
    listed = list(versions)
    problems: list[str] = []
    for writer in listed:
        for reader in listed:
            if writer is not reader:
                problems.extend(pair_problems(writer, reader))
    return problems
