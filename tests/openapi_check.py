"""Checking real responses against rewind/openapi.yaml, so the description cannot drift from the code.

A small validator for the JSON Schema keywords the description uses (no third-party validator is
installed): ``$ref``, ``type`` (one or a list), ``enum``, ``properties``, ``required``,
``additionalProperties``, ``items``, ``allOf``/``anyOf``/``oneOf``, ``minimum``/``maximum``,
``minLength``/``maxLength`` and ``pattern``. An unknown keyword fails loudly rather than passing.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SPEC_PATH = Path(__file__).resolve().parent.parent / "rewind" / "openapi.yaml"
_ANNOTATIONS = {"description", "summary", "title", "format", "example", "examples", "default"}
_KNOWN = _ANNOTATIONS | {
    "$ref",
    "type",
    "enum",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "allOf",
    "anyOf",
    "oneOf",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
}
_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return loaded


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def errors(schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """Every way ``value`` violates ``schema`` (empty when it conforms)."""
    schema = resolve(schema)
    unknown = set(schema) - _KNOWN
    assert not unknown, f"validator does not support {unknown} (at {where})"
    found: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_TYPES[t](value) for t in names):
            return [f"{where}: {value!r} is not of type {types}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            found.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            found.append(f"{where}: length {len(value)} out of bounds")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                found.append(f"{where}: missing {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                found += errors(properties[name], item, f"{where}.{name}")
            elif extra is False:
                found.append(f"{where}: unexpected property {name!r}")
            elif isinstance(extra, dict):
                found += errors(extra, item, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += errors(schema["items"], item, f"{where}[{index}]")
    for sub in schema.get("allOf", []):
        found += errors(sub, value, where)
    if "anyOf" in schema and all(errors(s, value, where) for s in schema["anyOf"]):
        found.append(f"{where}: matches none of anyOf")
    if "oneOf" in schema:
        matching = sum(not errors(s, value, where) for s in schema["oneOf"])
        if matching != 1:
            found.append(f"{where}: matches {matching} of oneOf, not exactly one")
    return found


def route_template(path: str) -> str | None:
    """The described path template a concrete path belongs to, e.g. ``/state/orders/{id}``."""
    for template in spec()["paths"]:
        pattern = "^" + re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return str(template)
    return None


def response_schema(method: str, path: str, status: int, content_type: str) -> dict[str, Any]:
    """The schema the description gives for this response (``default`` when the status is not
    listed; the shared Error response for paths it does not describe)."""
    template = route_template(path)
    if template is None:
        response = spec()["components"]["responses"]["Error"]
    else:
        operation = spec()["paths"][template].get(method.lower())
        responses = (operation or {}).get("responses", {})
        response = responses.get(str(status)) or responses.get("default")
        if operation is None or response is None:
            response = spec()["components"]["responses"]["Error"]
    content = resolve(response)["content"]
    assert content_type in content, f"{method} {path} {status}: {content_type} not described"
    return dict(content[content_type]["schema"])
