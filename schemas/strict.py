"""Exact type checks of an event dict against a schema, before any byte is written.

fastavro's writer is lenient where rewind cannot be: it writes ``1.5`` to a ``long`` field as ``1``
and ``True`` as ``1``, and it silently ignores keys the schema does not have. The checker built here
refuses all of that and names the field, so an event is either encoded exactly or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from schemas.errors import EventEncodeError

Check = Callable[[object], bool]
RecordCheck = Callable[[Mapping[str, object]], None]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def _integer(low: int, high: int) -> Check:
    return lambda v: type(v) is int and low <= v <= high


_PRIMITIVES: dict[str, Check] = {
    "null": lambda v: v is None,
    "boolean": lambda v: type(v) is bool,
    "int": _integer(*_INT32),
    "long": _integer(*_INT64),
    "float": lambda v: type(v) is float,
    "double": lambda v: type(v) is float,
    "string": lambda v: type(v) is str,
    "bytes": lambda v: type(v) is bytes,
}


_PYTHON_TYPES: dict[str, type] = {
    "null": type(None),
    "boolean": bool,
    "int": int,
    "long": int,
    "float": float,
    "double": float,
    "string": str,
    "bytes": bytes,
}


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return " | ".join(_describe(s) for s in schema)
    if isinstance(schema, dict):
        if schema["type"] == "enum":
            return f"one of {', '.join(schema['symbols'])}"
        return str(schema.get("name", schema["type"]))
    return str(schema)


def _union_check(schema: list[Any], named: dict[str, Check]) -> Check:
    by_type: dict[type, list[Check]] = {}
    others: list[Check] = []
    for branch in schema:
        kind = branch.get("type") if isinstance(branch, dict) else branch
        if isinstance(kind, str) and kind in _PYTHON_TYPES:
            by_type.setdefault(_PYTHON_TYPES[kind], []).append(_PRIMITIVES[kind])
        else:
            others.append(_value_check(branch, named))
    if not others and all(len(checks) == 1 for checks in by_type.values()):
        single = {python_type: checks[0] for python_type, checks in by_type.items()}

        def by_python_type(v: object) -> bool:
            check = single.get(type(v))
            return check is not None and check(v)

        return by_python_type
    branches = [check for checks in by_type.values() for check in checks] + others
    return lambda v: any(check(v) for check in branches)


def _value_check(schema: Any, named: dict[str, Check]) -> Check:
    if isinstance(schema, list):
        return _union_check(schema, named)
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        return lambda v: named[schema](v)
    kind = schema["type"]
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "enum":
        symbols = frozenset(schema["symbols"])
        check: Check = lambda v: type(v) is str and v in symbols  # noqa: E731
    elif kind == "array":
        item = _value_check(schema["items"], named)
        check = lambda v: isinstance(v, list) and all(item(i) for i in v)  # noqa: E731
    elif kind == "map":
        value = _value_check(schema["values"], named)
        check = lambda v: isinstance(v, dict) and all(type(k) is str and value(x) for k, x in v.items())  # noqa: E731
    elif kind == "fixed":
        size = int(schema["size"])
        check = lambda v: type(v) is bytes and len(v) == size  # noqa: E731
    elif kind == "record":
        record = _record_check(schema, named)

        def check(v: object) -> bool:
            if not isinstance(v, dict):
                return False
            try:
                record(v)
            except EventEncodeError:
                return False
            return True

    else:
        raise ValueError(f"unsupported Avro type {kind!r}")
    if "name" in schema:
        named[str(schema["name"])] = check
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = check
    return check


def _record_check(schema: Mapping[str, Any], named: dict[str, Check]) -> RecordCheck:
    record_name = str(schema["name"])
    fields = [
        (str(f["name"]), _value_check(f["type"], named), _describe(f["type"]), "default" in f)
        for f in schema["fields"]
    ]
    names = frozenset(field[0] for field in fields)

    def check(event: Mapping[str, object]) -> None:
        if not names.issuperset(event):
            extra = ", ".join(map(repr, sorted(set(event) - names)))
            raise EventEncodeError(
                f"{record_name} has no field {extra}; fields are {', '.join(sorted(names))}"
            )
        for name, value_ok, expected, has_default in fields:
            if name not in event:
                if has_default:
                    continue
                raise EventEncodeError(f"{record_name}.{name} is missing (expected {expected})")
            value = event[name]
            if not value_ok(value):
                raise EventEncodeError(
                    f"{record_name}.{name} must be {expected}, got {type(value).__name__} {value!r}"
                )

    return check


def record_checker(schema: Mapping[str, Any]) -> RecordCheck:
    """A function that raises :class:`EventEncodeError` naming the field unless ``event`` fits exactly.

    Exact means: every field without a default present (optional ones as ``None``), no extra keys,
    integers are ``int`` (never ``bool`` or ``float``) within the Avro range, strings are ``str``,
    enums a listed symbol.
    """
    return _record_check(schema, {})
