"""Avro encoders and decoders specialised to one schema, generated as Python source once per version.

fastavro interprets the parsed schema for every record and reads through a file object byte by byte,
about 0.4 µs per field. rewind's events are flat records of primitives, enums and unions of
primitives; for such a record a function written for that one schema does the same work in
straight-line Python over the ``bytes`` object. This module writes those functions, fully annotated:
the build compiles them with mypyc (:func:`native_module`, docs/native.md), and without a matching
build they are ``exec``'d from the same source when the codec is built.

What is guaranteed (``tests/test_codegen.py`` checks it against fastavro):

- An encoder returns exactly fastavro's bytes for every event it accepts, and it accepts only events
  that fit the schema exactly (the rules of :mod:`schemas.strict`: exact ``int``/``str``/``bool``
  types, ``long`` in 64 bits, enum symbols, no unknown keys). For anything else it returns ``None``
  and the caller takes the reference path, which also produces the error message.
- A decoder returns exactly what fastavro's schema resolution returns for a valid body, and raises for
  anything it is not sure about (truncated, trailing bytes, out-of-range indexes, invalid UTF-8,
  over-long varints). It never guesses: the caller then asks fastavro for the verdict and the offset.
- Schemas outside that subset (records in records, arrays, maps, bytes, floats, named references,
  aliases, type promotions) get no generated function; :func:`compile_encoder` and
  :func:`compile_decoder` return ``None`` and fastavro does the work.

Encoders build the record as a ``latin-1`` ``str`` (one character per byte) with a single f-string and
encode it once; varints come from 14-bit lookup tables. Decoders index the ``bytes`` directly, with
lookup tables for one-byte lengths, enum and union indexes.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

Encoder = Callable[[Mapping[str, Any]], bytes | None]
RawEncoder = Callable[[Callable[..., bool] | None, object], bytes | None]
"""A generated encoder before its ``accept`` condition is bound (see :func:`encoder_source`)."""
Decoder = Callable[[bytes], dict[str, Any]]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "string"})
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_RANGE = {"int": _INT32, "long": _INT64}
_PLAIN_DEFAULTS = (type(None), bool, int, str)

# Varint pieces as latin-1 text: _END[z] is the final 1-2 bytes of a varint whose remaining value z is
# below 2**14; _MORE[z] two bytes of 7 bits each, both with the continuation bit set.
_END: tuple[str, ...] = tuple(chr(z) if z < 128 else chr(z & 127 | 128) + chr(z >> 7) for z in range(1 << 14))
_MORE: tuple[str, ...] = tuple(chr(z & 127 | 128) + chr(z >> 7 | 128) for z in range(1 << 14))
# Decoding: a one-byte zig-zag long; a one-byte string length (-1: not a one-byte non-negative length).
_ZIGZAG: tuple[int, ...] = tuple((b >> 1) ^ -(b & 1) for b in range(128))
_LENGTH: tuple[int, ...] = tuple(b >> 1 if b < 128 and not b & 1 else -1 for b in range(256))


class _AbsentType:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _AbsentType()


class Unsupported(Exception):
    """The schema uses something the generator does not handle; fastavro does it instead."""


class InvalidBody(ValueError):
    """A generated decoder is not sure about the bytes (the caller asks fastavro for the verdict)."""


def _varint(z: int) -> str:
    """The varint of a non-negative ``z`` as latin-1 text (the rare path of generated encoders)."""
    text = ""
    while z >= 1 << 14:
        text += _MORE[z & 16383]
        z >>= 14
    return text + _END[z]


def _long(value: bytes, pos: int) -> tuple[int, int]:
    """A multi-byte zig-zag varint at ``pos``: (value, next position); refuses more than 64 bits."""
    result = 0
    shift = 0
    while True:
        byte = value[pos]
        pos += 1
        result |= (byte & 127) << shift
        if byte < 128:
            break
        shift += 7
        if shift > 63:
            raise InvalidBody("varint longer than 10 bytes")
    if result >> 64:
        raise InvalidBody("varint beyond 64 bits")
    return (result >> 1) ^ -(result & 1), pos


def _length(value: bytes, pos: int) -> tuple[int, int]:
    number, pos = _long(value, pos)
    if number < 0:
        raise InvalidBody("negative length")
    return number, pos


def _latin1(text: str) -> str:
    """UTF-8 bytes of ``text`` as latin-1 characters (for the f-string that builds a record)."""
    return text.encode().decode("latin-1")


_SHARED: dict[str, Any] = {
    "_ZIGZAG": _ZIGZAG,
    "_LENGTH": _LENGTH,
    "_length": _length,
    "InvalidBody": InvalidBody,
    "_END": _END,
    "_MORE": _MORE,
    "_varint": _varint,
    "_ABSENT": _ABSENT,
    "_latin1": _latin1,
}
"""The helpers generated code may call, by the names it calls them."""


def _kind(schema: Any) -> tuple[str, Any]:
    """``(primitive name, None)``, ``("enum", symbols)`` or ``("union", branch names)``."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema, None
        raise Unsupported(f"type {schema!r}")
    if isinstance(schema, list):
        branches = []
        for branch in schema:
            name, _ = _kind(branch)
            if name not in _PRIMITIVES:
                raise Unsupported("a union with a non-primitive branch")
            branches.append(name)
        if len(set(branches)) != len(branches) or len(branches) > 63:
            raise Unsupported("a union with repeated branches")
        return "union", tuple(branches)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "enum":
            symbols = tuple(schema["symbols"])
            if len(symbols) > 64:
                raise Unsupported("an enum of more than 64 symbols (a two-byte index)")
            return "enum", symbols
        if isinstance(kind, str) and kind in _PRIMITIVES and "logicalType" not in schema:
            return kind, None
    raise Unsupported(f"type {schema!r}")


def _fields(schema: Mapping[str, Any]) -> list[tuple[str, str, Any, Mapping[str, Any]]]:
    if schema.get("type") != "record":
        raise Unsupported("not a record")
    found = []
    for field in schema["fields"]:
        if field.get("aliases"):
            raise Unsupported("field aliases")
        kind, detail = _kind(field["type"])
        found.append((str(field["name"]), kind, detail, field))
    return found


class Source:
    """One generated function: its lines, and the named constants they refer to.

    Constants are named ``_<kind><prefix><n>_<tag>`` so the functions of several sources can share one
    module (see :func:`native_module`); the helpers in :data:`_SHARED` keep their own names.
    """

    def __init__(self, kind: str, tag: str = "") -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self.expressions: dict[str, str] = {}
        self.kind = kind
        self.tag = tag
        self._depth = 0

    def line(self, text: str) -> None:
        self.lines.append("    " * self._depth + text)

    def indent(self, by: int = 1) -> None:
        self._depth += by

    def constant(self, prefix: str, value: object, expression: str | None = None) -> str:
        """A name for ``value``; ``expression`` recreates it in a module (default: its ``repr``)."""
        name = f"_{self.kind}{prefix}{len(self.names)}_{self.tag}"
        self.names[name] = value
        self.expressions[name] = repr(value) if expression is None else expression
        return name

    @property
    def function(self) -> str:
        """The name of the generated function (``decode_<tag>`` or ``encode_<tag>``)."""
        return f"{self.kind}_{self.tag}"

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def compile(self, function: str, label: str) -> Callable[..., Any]:
        namespace = {"Any": Any, "Callable": Callable, **self.names}
        exec(compile(self.text(), f"<generated {label}>", "exec"), namespace)
        generated: Callable[..., Any] = namespace[function]
        return generated


def _type_test(kind: str, var: str) -> str:
    if kind == "null":
        return f"{var} is None"
    if kind == "boolean":
        return f"type({var}) is bool"
    if kind == "string":
        return f"type({var}) is str"
    low, high = _RANGE[kind]
    return f"type({var}) is int and {low} <= {var} <= {high}"


def _literal(text: str) -> str:
    """``text`` (latin-1 characters) as the body of a generated f-string literal."""
    out = []
    for char in text:
        if char in "{}":
            out.append(char * 2)
        elif " " <= char <= "~" and char not in '\\"':
            out.append(char)
        else:
            out.append(f"\\x{ord(char):02x}")
    return "".join(out)


def _emit_varint(src: Source, number: str, target: str, bits: int) -> None:
    """Lines setting ``target`` to the latin-1 varint of the zig-zag of the int ``number``.

    The zig-zag of an int outside ``bits`` (32 or 64) is at least ``2**bits``, and then the encoder
    returns None: this doubles as the range check.
    """
    src.line(f"z = ({number} << 1) ^ ({number} >> 63)")
    src.line(f"if z < 16384: {target} = _END[z]")
    for size in (28, 42, 56):
        more = ["_MORE[z & 16383]"] + [f"_MORE[z >> {shift} & 16383]" for shift in range(14, size - 14, 14)]
        limit = min(size, bits)
        src.line(f"elif z < {1 << limit}: {target} = {' + '.join([*more, f'_END[z >> {size - 14}]'])}")
        if limit == bits:
            break
    if bits == 64:
        src.line(f"elif z < {1 << 64}: {target} = _varint(z)")
    src.line("else: return None")


def encoder_source(schema: Mapping[str, Any], header: bytes, *, tag: str = "") -> Source | None:
    """The source of ``encode_<tag>(accept, event) -> bytes | None`` (see :func:`compile_encoder`).

    ``accept`` is None or the extra condition on the field values. The function is annotated so it
    type-checks under ``mypy --strict`` and mypyc can compile it (:func:`native_module`).
    """
    try:
        fields = _fields(schema)
    except Unsupported:
        return None
    names = tuple(name for name, _, _, _ in fields)
    if any("default" in f and not isinstance(f["default"], _PLAIN_DEFAULTS) for _, _, _, f in fields):
        return None
    src = Source("encode", tag)
    src.names.update(_SHARED)
    required = [i for i, (_, _, _, field) in enumerate(fields) if "default" not in field]
    src.line(f"def {src.function}(_accept: Callable[..., bool] | None, e: object) -> bytes | None:")
    src.indent()
    src.line("if not isinstance(e, dict): return None")
    if required:
        wanted = ", ".join(repr(names[i]) for i in required)
        getter = src.constant("GET", itemgetter(*(names[i] for i in required)), f"itemgetter({wanted})")
        targets = ", ".join(f"f{i}" for i in required)
        value = f"({getter}(e),)" if len(required) == 1 else f"{getter}(e)"
        src.line(f"try: {targets}{',' if len(required) == 1 else ''} = {value}")
        src.line("except KeyError: return None")
    src.line(f"n = {len(required)}")
    for i, (name, _, _, field) in enumerate(fields):
        if "default" in field:
            src.line(f"f{i} = e.get({name!r}, _ABSENT)")
            src.line(f"if f{i} is _ABSENT: f{i} = {src.constant('D', field['default'])}")
            src.line("else: n += 1")
    src.line("if len(e) != n: return None")
    tests = []
    for i, (_, kind, _, _) in enumerate(fields):
        if kind in ("int", "long"):
            tests.append(f"type(f{i}) is int")  # the range: see _emit_varint
        elif kind == "enum":
            tests.append(f"type(f{i}) is str")
        elif kind != "union":
            tests.append(_type_test(kind, f"f{i}"))
    if tests:
        src.line("if not (" + " and ".join(tests) + "): return None")
    enums = [(i, detail) for i, (_, kind, detail, _) in enumerate(fields) if kind == "enum"]
    if enums:
        src.line("try:")
        for i, symbols in enums:
            table = src.constant("E", {symbol: _END[index << 1] for index, symbol in enumerate(symbols)})
            src.line(f"    s{i} = {table}[f{i}]")
        src.line("except KeyError: return None")
    for i, (_, kind, detail, _) in enumerate(fields):
        if kind == "union":
            for j, branch in enumerate(detail):
                src.line(f"{'if' if j == 0 else 'elif'} {_type_test(branch, f'f{i}')}: k{i} = {j}")
            src.line("else: return None")
    arguments = ", ".join(f"f{i}" for i in range(len(fields)))
    src.line(f"if _accept is not None and not _accept({arguments}): return None")
    texts = [i for i, (_, kind, _, _) in enumerate(fields) if kind == "string"]
    optional = [i for i, (_, kind, detail, _) in enumerate(fields) if kind == "union" and "string" in detail]
    if texts or optional:
        src.line(f'if not f"{"".join(f"{{f{i}}}" for i in texts + optional)}".isascii():')
        src.indent()
        for i in texts:
            src.line(f"f{i} = _latin1(f{i})")
        for i in optional:
            src.line(f"if type(f{i}) is str: f{i} = _latin1(f{i})")
        src.indent(-1)
    pieces = [_literal(header.decode("latin-1"))]
    for i, (_, kind, detail, _) in enumerate(fields):
        if kind in ("int", "long"):
            _emit_varint(src, f"f{i}", f"s{i}", 32 if kind == "int" else 64)
            pieces.append(f"{{s{i}}}")
        elif kind == "string":
            pieces.append(f"{{_END[len(f{i}) << 1]}}{{f{i}}}")
        elif kind == "boolean":
            src.line(f"s{i} = '\\x01' if f{i} else '\\x00'")
            pieces.append(f"{{s{i}}}")
        elif kind == "enum":
            pieces.append(f"{{s{i}}}")
        elif kind == "union":
            for j, branch in enumerate(detail):
                src.line(f"{'if' if j == 0 else 'elif'} k{i} == {j}:")
                src.indent()
                mark = _END[j << 1]
                if branch == "null":
                    src.line(f"s{i} = {mark!r}")
                elif branch == "boolean":
                    src.line(f"s{i} = {mark + chr(1)!r} if f{i} else {mark + chr(0)!r}")
                elif branch == "string":
                    src.line(f"s{i} = {mark!r} + _END[len(f{i}) << 1] + f{i}")
                else:
                    _emit_varint(src, f"f{i}", f"s{i}", 32 if branch == "int" else 64)
                    src.line(f"s{i} = {mark!r} + s{i}")
                src.indent(-1)
            src.line("else: return None")
            pieces.append(f"{{s{i}}}")
    # A string of 8192 bytes or more has a 3-byte length: _END raises IndexError, the caller falls back.
    src.line("try:")
    src.line('    return f"' + "".join(pieces) + '".encode("latin-1")')
    src.line("except IndexError: return None")
    return src


def compile_encoder(
    schema: Mapping[str, Any],
    header: bytes,
    *,
    accept: Callable[..., bool] | None = None,
    label: str = "encoder",
) -> Encoder | None:
    """``encode(event) -> header + body``, or ``None`` from it when ``event`` does not fit exactly.

    ``schema`` is the physical schema (no ``logicalType``); ``event`` must be a ``dict`` (anything
    else gets ``None``). ``accept``, if given, is called with the field values as positional
    arguments in schema order, once every value passed the exact type checks, and must return True
    for the event to be encoded; its parameters must be named after the fields (checked here), so a
    schema change cannot silently shift them. Returns ``None`` (no encoder) for a schema outside the
    supported subset.
    """
    src = encoder_source(schema, header)
    if src is None:
        return None
    check_accept(schema, accept, label)
    return functools.partial(src.compile(src.function, label), accept)


def check_accept(schema: Mapping[str, Any], accept: Callable[..., bool] | None, label: str) -> None:
    """Raise ``ValueError`` unless ``accept``'s parameters are exactly the schema's field names."""
    names = tuple(str(field["name"]) for field in schema["fields"])
    if accept is not None and tuple(inspect.signature(accept).parameters) != names:
        raise ValueError(f"{label}: the parameters of {accept.__name__} are not the schema's fields {names}")


def _emit_varint_read(src: Source, size: int, target: str) -> None:
    """Lines reading a zig-zag varint of at most ``size`` bytes (5: int, 10: long), unrolled.

    The last byte may only carry the bits the type has left (4 for an int, 1 for a long), so the
    value always fits; anything longer or wider raises.
    """
    src.line("b = v[p]")
    src.line(f"if b < 128: {target} = _ZIGZAG[b]; p += 1")
    src.line("else:")
    src.indent()
    src.line("x = b & 127")
    for k in range(1, size):
        src.line(f"b = v[p + {k}]")
        limit = 128 if k < size - 1 else 1 << (32 if size == 5 else 64) - 7 * k
        src.line(f"if b < {limit}: x |= b << {7 * k}; p += {k + 1}")
        src.line("else:")
        src.indent()
        if k == size - 1:
            src.line("raise InvalidBody('varint too long')")
        else:
            src.line(f"x |= (b & 127) << {7 * k}")
    src.indent(-(size - 1))
    src.line(f"{target} = (x >> 1) ^ -(x & 1)")
    src.indent(-1)


_PYTHON_TYPE = {
    "null": "None",
    "boolean": "bool",
    "int": "int",
    "long": "int",
    "string": "str",
    "enum": "str",
}


def _python_type(kind: str, detail: Any) -> str:
    """The annotation of a decoded value of ``kind`` (what mypyc specialises the generated code on)."""
    if kind == "union":
        return " | ".join(_PYTHON_TYPE[branch] for branch in detail)
    return _PYTHON_TYPE[kind]


def _emit_read(src: Source, kind: str, detail: Any, target: str, keep: bool) -> None:
    """Lines reading one value of ``kind`` at ``p`` into ``target`` (a string only if ``keep``)."""
    if kind == "null":
        src.line(f"{target} = None")
    elif kind == "boolean":
        src.line(f"{target} = (False, True)[v[p]]; p += 1")
    elif kind in ("int", "long"):
        _emit_varint_read(src, 5 if kind == "int" else 10, target)
    elif kind == "string":
        src.line("n = _LENGTH[v[p]]")
        src.line("if n < 0: n, p = _length(v, p)")
        src.line("else: p += 1")
        if keep:
            src.line(f"q = p + n; {target} = v[p:q].decode(); p = q")
        else:
            src.line("p += n")
    elif kind == "enum":
        table = src.constant("E", {index << 1: symbol for index, symbol in enumerate(detail)})
        src.line(f"{target} = {table}[v[p]]; p += 1")
    elif kind == "union":
        src.line("b = v[p]; p += 1")
        for j, branch in enumerate(detail):
            src.line(f"{'if' if j == 0 else 'elif'} b == {j << 1}:")
            src.indent()
            _emit_read(src, branch, None, target, keep)
            src.indent(-1)
        src.line("else: raise InvalidBody('union index')")
    else:  # pragma: no cover - _kind admits nothing else
        raise Unsupported(kind)


def _shape(schema: Any) -> Any:
    """The parts of a type that decide how its bytes read (docs and defaults dropped)."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in ("doc", "default", "aliases")}
    if isinstance(schema, list):
        return [_shape(s) for s in schema]
    return schema


def decoder_source(
    writer: Mapping[str, Any], reader: Mapping[str, Any], *, start: int, tag: str = ""
) -> Source | None:
    """The source of ``decode_<tag>(value) -> event`` (see :func:`compile_decoder`), or None.

    The function is fully annotated (``v: bytes``, every local typed), so it type-checks under
    ``mypy --strict`` and mypyc can compile it to native code (:func:`native_module`).
    """
    try:
        written = _fields(writer)
        wanted = _fields(reader)
    except Unsupported:
        return None
    reader_fields = {name: field for name, _, _, field in wanted}
    src = Source("decode", tag)
    src.names.update(_SHARED)
    outputs = []  # as fastavro orders them: the writer's fields, then the reader's additions
    for i, (name, _, _, field) in enumerate(written):
        if name in reader_fields:
            if _shape(field["type"]) != _shape(reader_fields[name]["type"]):
                return None
            outputs.append(f"{name!r}: x{i}")
    written_names = {name for name, _, _, _ in written}
    for name, _, _, field in wanted:
        if name not in written_names:
            if "default" not in field or not isinstance(field["default"], _PLAIN_DEFAULTS):
                return None
            outputs.append(f"{name!r}: {src.constant('D', field['default'])}")
    src.line(f"def {src.function}(v: bytes) -> dict[str, Any]:")
    src.indent()
    src.line("p: int; n: int; q: int; b: int; x: int")
    for i, (_, kind, detail, _) in enumerate(written):
        src.line(f"x{i}: {_python_type(kind, detail)}")
    src.line(f"p = {start}")
    for i, (name, kind, detail, _) in enumerate(written):
        _emit_read(src, kind, detail, f"x{i}", name in reader_fields)
    src.line("if p != len(v): raise InvalidBody('length')")
    src.line("return {" + ", ".join(outputs) + "}")
    return src


def compile_decoder(
    writer: Mapping[str, Any], reader: Mapping[str, Any], *, start: int, label: str = "decoder"
) -> Decoder | None:
    """``decode(value) -> event`` for bodies written with ``writer``, resolved into ``reader``.

    The body starts at byte ``start`` of ``value`` and must end exactly at its end. Fields the reader
    does not have are read past; reader fields the writer lacks get their default, which must be a
    plain value (null, boolean, number, string, enum symbol). Every field the two share must have the
    same type; anything else (promotions, changed enums, renamed fields) returns ``None`` here, and the
    caller uses fastavro's general resolution. Both schemas are physical (no ``logicalType``).
    """
    src = decoder_source(writer, reader, start=start)
    if src is None:
        return None
    decoder: Decoder = src.compile(src.function, label)
    return decoder


def native_module(decoders: Mapping[bytes, Source], encoders: Mapping[bytes, Source]) -> tuple[str, str]:
    """One Python module holding the given sources, for mypyc to compile; and its digest.

    Both map a record version's single-object header to its :func:`decoder_source` or
    :func:`encoder_source` (distinct tags). The module defines ``DECODERS`` and ``ENCODERS`` (header
    -> function) and ``SOURCE_SHA256``, the digest returned here. It is a build product (``setup.py``
    writes and compiles it); :class:`schemas.codec.Codec` uses it only when the digest is what this
    function returns for the schemas in hand, so a stale build is never used.
    """
    lines = [
        '"""Generated by schemas.codegen.native_module at build time from schemas/; do not edit."""',
        "",
        "from collections.abc import Callable",
        "from operator import itemgetter",
        "from typing import Any, Final",
        "",
        f"from schemas.codegen import {', '.join(sorted(_SHARED))}",
        "",
    ]
    for src in [*decoders.values(), *encoders.values()]:
        for name, value in src.names.items():
            if name in _SHARED:
                continue
            expression = src.expressions[name]
            if isinstance(value, dict):
                key, item = next(iter(value.items()))
                lines.append(
                    f"{name}: Final[dict[{type(key).__name__}, {type(item).__name__}]] = {expression}"
                )
            else:
                lines.append(f"{name}: Final = {expression}")
        lines.append("")
        lines.append("")
        lines.extend(src.lines)
        lines.append("")
    lines.append("")
    lines.append("DECODERS: Final[dict[bytes, Callable[[bytes], dict[str, Any]]]] = {")
    lines.extend(f"    {header!r}: {src.function}," for header, src in decoders.items())
    lines.append("}")
    lines.append(
        "ENCODERS: Final[dict[bytes, Callable[[Callable[..., bool] | None, object], bytes | None]]] = {"
    )
    lines.extend(f"    {header!r}: {src.function}," for header, src in encoders.items())
    lines.append("}")
    body = "\n".join(lines) + "\n"
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body + f'SOURCE_SHA256: Final = "{digest}"\n', digest
