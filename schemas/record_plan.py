"""The C record encoder (``schemas/_record_encoder.c``) and the plans it encodes by.

A plan is a schema flattened into what the C loop needs: the single-object header, then per field
its name, kind, enum symbols or union branches, and whether it may be absent (null default). Only
flat records of null, boolean, long, string, enum and unions of those have a plan; for any other
schema :func:`record_plan` returns None and the generated Python encoders are used instead.

The encoder is part of the native build (``setup.py``); without it (``REWIND_NATIVE=0``)
:func:`c_encoder` returns None, and under ``REWIND_PURE_PYTHON`` the codec does not ask for it;
nothing changes but speed. What the C
encoder guarantees is what :meth:`schemas.codec.Codec.compiled_encoder` guarantees: exactly
fastavro's bytes for an event that fits the schema exactly, None for any other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

Plan = tuple[bytes, tuple[tuple[str, int, Any, bool], ...]]

NULL, BOOLEAN, LONG, STRING, ENUM, UNION = range(6)
_PLAIN = {"null": NULL, "boolean": BOOLEAN, "long": LONG, "string": STRING}


def record_plan(physical_schema: Any, header: bytes) -> Plan | None:
    """The plan of a record schema (without logical types), or None outside the encoder's subset."""
    if not isinstance(physical_schema, dict) or physical_schema.get("type") != "record":
        return None
    fields = []
    for field in physical_schema["fields"]:
        kind, extra = _kind(field["type"])
        if kind is None:
            return None
        has_default = "default" in field
        if has_default and not (kind == UNION and extra[0] == NULL and field["default"] is None):
            return None  # the C loop writes only a null default (the union's first branch)
        fields.append((str(field["name"]), kind, extra, has_default))
    return header, tuple(fields)


def _kind(schema: Any) -> tuple[int | None, Any]:
    if isinstance(schema, str) and schema in _PLAIN:
        return _PLAIN[schema], None
    if isinstance(schema, dict) and schema.get("type") == "enum":
        return ENUM, {symbol: index for index, symbol in enumerate(schema["symbols"])}
    if isinstance(schema, dict) and schema.get("type") in _PLAIN and len(schema) == 1:
        return _PLAIN[schema["type"]], None
    plain_branches = isinstance(schema, list) and all(isinstance(s, str) and s in _PLAIN for s in schema)
    if plain_branches and schema and len(set(schema)) == len(schema):
        return UNION, tuple(_PLAIN[s] for s in schema)
    return None, None


def c_encoder(plan: Plan) -> Callable[[Any], bytes | None] | None:
    """The C encoder bound to ``plan``, or None when the native build has not made it."""
    try:
        from schemas import _record_encoder  # type: ignore[attr-defined]
    except ImportError:
        return None
    return functools.partial(_record_encoder.encode, plan)
