"""An external statement (an exchange's, a prime broker's, an OMS drop copy): positions, balances and
open orders, read from CSV or JSON through a configurable column mapping.

Parsing is pure (:func:`parse_statement` takes the file's bytes); :func:`read_statement` only adds the
file read. Guarantees:

- Every number is read exactly (``Decimal``; JSON numbers too), never through a float. Quantities,
  balances and remaining quantities must fit rewind's scale-8 fixed point; average prices may carry
  more places (they are compared exactly and rounded half-even only when a correction is built).
- A file whose format, columns or values are wrong is refused as a whole with the line and column
  named (:class:`StatementError`); nothing is skipped. Two rows for the same position, balance or
  order are refused too, because summing them would hide a break.
- The checksum is the SHA-256 of the file's bytes: the same file always has the same checksum.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from schemas.fixed import SCALE, parse_fixed

POSITIONS: Final = "positions"
BALANCES: Final = "balances"
ORDERS: Final = "orders"
KINDS: Final = (POSITIONS, BALANCES, ORDERS)

COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    POSITIONS: ("account", "symbol", "quantity", "avg_price"),
    BALANCES: ("account", "currency", "amount"),
    ORDERS: ("order_id", "remaining"),
}
"""The fields of each kind, in order; each is read from the column ``reconcile.<kind>.<field>`` names."""
OPTIONAL: Final = frozenset({"avg_price"})
AS_OF: Final = "as_of"
_FORMATS: Final = {".csv": "csv", ".json": "json"}
_NAME: Final = re.compile(r"\S+")


class StatementError(RewindError):
    """A statement file that cannot be read as one: bad format, missing column, bad value."""


@dataclass(frozen=True, slots=True)
class PositionLine:
    account: str
    symbol: str
    quantity: int
    """Scale 8, signed."""
    avg_price: Decimal | None
    line: int


@dataclass(frozen=True, slots=True)
class BalanceLine:
    account: str
    currency: str
    amount: int
    """Scale 8, signed."""
    line: int


@dataclass(frozen=True, slots=True)
class OrderLine:
    order_id: str
    remaining: int
    """Scale 8, the quantity still open."""
    line: int


@dataclass(frozen=True)
class StatementFile:
    """One file of a statement: what it holds, its name, its checksum and its own time, if it says."""

    kind: str
    name: str
    checksum: str
    as_of: datetime | None
    rows: int


@dataclass
class Statement:
    """The lines of one statement (up to one file per kind), keyed as rewind keys them."""

    files: list[StatementFile] = field(default_factory=list)
    positions: dict[tuple[str, str], PositionLine] | None = None
    balances: dict[tuple[str, str], BalanceLine] | None = None
    orders: dict[str, OrderLine] | None = None

    @property
    def name(self) -> str:
        """The files' names, joined by ``+``: what a correction names as its statement."""
        return "+".join(f.name for f in self.files)

    @property
    def checksum(self) -> str:
        """One file's SHA-256, or the SHA-256 of each kind and file checksum, line by line."""
        if len(self.files) == 1:
            return self.files[0].checksum
        text = "".join(f"{f.kind}:{f.checksum}\n" for f in self.files)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def as_of(self) -> datetime | None:
        """The statement's time, when its files give one; files that disagree are refused."""
        times = {f.as_of for f in self.files if f.as_of is not None}
        if len(times) > 1:
            shown = ", ".join(sorted(t.isoformat() for t in times))
            raise StatementError(
                f"the statement's files are for different times ({shown})",
                "reconcile files of one moment together, or pass --as-of to say which moment to use",
            )
        return next(iter(times), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checksum": self.checksum,
            "files": [
                {
                    "kind": f.kind,
                    "name": f.name,
                    "checksum": f.checksum,
                    "as_of": None if f.as_of is None else f.as_of.isoformat(),
                    "rows": f.rows,
                }
                for f in self.files
            ],
        }


def column_mapping(settings: Settings, kind: str) -> dict[str, str]:
    """Field -> column name of ``kind`` from the settings (``[reconcile.<kind>]`` in rewind.toml)."""
    mapping = {
        name: str(settings[f"reconcile.{kind}.{name}"]) for name in COLUMNS[kind] if name != "avg_price"
    }
    if kind == POSITIONS:
        mapping["avg_price"] = str(settings["reconcile.positions.avg_price"])
    mapping[AS_OF] = str(settings["reconcile.as_of_column"])
    return mapping


def _fail(where: str, what: str, fix: str) -> StatementError:
    return StatementError(f"{where}: {what}", fix)


def _text_value(where: str, column: str, raw: object) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise _fail(where, f"column '{column}' must be text, got {raw!r}", "correct the value in the file")
    text = str(raw).strip()
    if not _NAME.fullmatch(text):
        raise _fail(
            where,
            f"column '{column}' must be a non-empty name without spaces, got {raw!r}",
            "correct the value in the file",
        )
    return text


def _decimal(where: str, column: str, raw: object) -> Decimal:
    if isinstance(raw, bool | float):
        raise _fail(where, f"column '{column}' is not an exact number: {raw!r}", "write it as a decimal")
    try:
        number = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip().replace(",", ""))
    except InvalidOperation:
        raise _fail(
            where, f"column '{column}' is not a number: {raw!r}", "write a plain decimal like -12.50"
        ) from None
    if not number.is_finite():
        raise _fail(where, f"column '{column}' is not a finite number: {raw!r}", "write a plain decimal")
    return number


def _fixed(where: str, column: str, raw: object) -> int:
    """The exact scale-8 integer of a decimal; more than 8 places cannot be a rewind quantity."""
    if type(raw) is str:
        try:
            return parse_fixed(raw, SCALE)
        except ValueError:
            pass  # thousands separators, exponents, or an error named below
    number = _decimal(where, column, raw)
    scaled = number.scaleb(SCALE)
    if scaled != scaled.to_integral_value():
        raise _fail(
            where,
            f"column '{column}' has more than {SCALE} decimal places: {raw!r}",
            f"rewind keeps {SCALE} decimal places; round the value in the export",
        )
    return int(scaled)


def parse_time_text(where: str, raw: object) -> datetime:
    """ISO-8601 with or without a zone (none means UTC)."""
    try:
        moment = datetime.fromisoformat(str(raw).strip().replace("Z", "+00:00"))
    except ValueError:
        raise _fail(where, f"'{raw}' is not an ISO-8601 time", "write e.g. 2026-11-21T17:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _records(name: str, data: bytes, fmt: str) -> tuple[Iterator[tuple[int, Mapping[str, Any]]], object]:
    """The rows (line or index, mapping) of the file, and its document-level ``as_of`` (JSON only)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(
            name, f"not UTF-8 text ({exc.reason} at byte {exc.start})", "export the file as UTF-8"
        ) from exc
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None:
            raise _fail(
                name, "the file is empty: no header line", "export the statement with its header line"
            )
        return ((reader.line_num, row) for row in reader), None
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise _fail(name, f"not valid JSON: {exc.msg} (line {exc.lineno})", "fix the JSON syntax") from exc
    as_of: object = None
    rows = document
    if isinstance(document, dict):
        as_of = document.get(AS_OF)
        rows = document.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _fail(
            name,
            'a JSON statement must be a list of objects, or an object with "rows" (that list) and '
            'optionally "as_of"',
            "see docs/examples/ for the shape",
        )
    return ((index + 1, row) for index, row in enumerate(rows)), as_of


def parse_statement(
    kind: str, name: str, data: bytes, mapping: Mapping[str, str]
) -> tuple[StatementFile, dict[Any, Any]]:
    """The lines of one statement file of ``kind`` (``positions``, ``balances``, ``orders``).

    ``name`` is the file's name (its format comes from its extension: ``.csv`` or ``.json``);
    ``mapping`` maps each field to its column (:func:`column_mapping`). Returns the file's
    description and its lines keyed as rewind keys them.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown statement kind {kind!r}")
    fmt = _FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise StatementError(
            f"{name}: a statement must be a .csv or a .json file", "export the statement as CSV or JSON"
        )
    rows, document_as_of = _records(name, data, fmt)
    as_of_column = mapping[AS_OF]
    moments: set[datetime] = set()
    if document_as_of is not None:
        moments.add(parse_time_text(f"{name}: as_of", document_as_of))
    found: dict[Any, Any] = {}
    count = 0
    unit = "line" if fmt == "csv" else "row"
    for number, row in rows:
        count += 1
        where = f"{name} {unit} {number}"
        values: dict[str, object] = {}
        for field_name in COLUMNS[kind]:
            column = mapping[field_name]
            raw = row.get(column)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if field_name in OPTIONAL:
                    continue
                raise _fail(
                    where,
                    f"no value in column '{column}' ({kind} {field_name})",
                    f"add the column, or name the right one in rewind.toml: reconcile.{kind}.{field_name}",
                )
            values[field_name] = raw
        stamped = row.get(as_of_column)
        if stamped is not None and str(stamped).strip():
            moments.add(parse_time_text(where, stamped))
        key: object
        line: object
        if kind == POSITIONS:
            account = _text_value(where, mapping["account"], values["account"])
            symbol = _text_value(where, mapping["symbol"], values["symbol"])
            price = values.get("avg_price")
            avg = None if price is None else _decimal(where, mapping["avg_price"], price)
            if avg is not None and avg < 0:
                raise _fail(
                    where,
                    f"average price {price} is negative",
                    "average prices are positive for longs and shorts",
                )
            key = (account, symbol)
            line = PositionLine(
                account, symbol, _fixed(where, mapping["quantity"], values["quantity"]), avg, number
            )
        elif kind == BALANCES:
            account = _text_value(where, mapping["account"], values["account"])
            currency = _text_value(where, mapping["currency"], values["currency"])
            key = (account, currency)
            line = BalanceLine(account, currency, _fixed(where, mapping["amount"], values["amount"]), number)
        else:
            order_id = _text_value(where, mapping["order_id"], values["order_id"])
            remaining = _fixed(where, mapping["remaining"], values["remaining"])
            if remaining < 0:
                raise _fail(
                    where, f"remaining quantity {values['remaining']} is negative", "correct the value"
                )
            key = order_id
            line = OrderLine(order_id, remaining, number)
        if key in found:
            raise _fail(
                where,
                f"a second row for {kind[:-1]} {' '.join(key) if isinstance(key, tuple) else key} "
                f"(the first is {unit} {found[key].line})",
                "give each one row; rewind does not add rows up because that could hide a break",
            )
        found[key] = line
    if len(moments) > 1:
        shown = ", ".join(sorted(m.isoformat() for m in moments))
        raise _fail(name, f"rows for different times ({shown})", "reconcile one moment's statement at a time")
    described = StatementFile(
        kind=kind,
        name=Path(name).name,
        checksum=hashlib.sha256(data).hexdigest(),
        as_of=next(iter(moments), None),
        rows=count,
    )
    return described, found


def read_statement(settings: Settings, files: Mapping[str, Path]) -> Statement:
    """The statement made of ``files`` (kind -> path); a missing or unreadable file is refused."""
    statement = Statement()
    for kind in KINDS:
        path = files.get(kind)
        if path is None:
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StatementError(
                f"{path}: cannot read the {kind} statement: {exc.strerror or exc}", "check the path"
            ) from exc
        described, lines = parse_statement(kind, str(path), data, column_mapping(settings, kind))
        statement.files.append(described)
        setattr(statement, kind, lines)
    return statement
