"""An independent reference model of docs/state.md, written plainly to cross-check projector/fold.py.

It shares no logic with the projector: its own dicts, its own rounding (``round`` of a ``Fraction``,
which rounds half to even), its own decimal rendering, its own canonical encoding written from the
table in docs/state.md, and risk recomputed from scratch on every read instead of incrementally.
Only the digest framing (``projector.digest.state_digest``) is shared, to compare digests.

Event ids are remembered as docs/state.md says: an event whose ``event_id`` was applied at an offset
whose 256-offset bucket is at most 2,048 buckets before the current one is a ``DUPLICATE_EVENT``;
the ``event_ids`` table holds, per bucket still in the window of the newest event checked against
it (applied, recorded as an anomaly or a repeat), the offsets and ids applied in it. Every stored
value ends with the CRC-32 of its key and bytes.

Speed is irrelevant here; clarity is the point.
"""

from __future__ import annotations

import json
import struct
import zlib
from decimal import Decimal
from fractions import Fraction
from typing import Any

OPEN = ("NEW", "ACCEPTED", "PARTIALLY_FILLED")
TERMINAL = ("FILLED", "CANCELED", "REJECTED", "EXPIRED")

# Field order of each table's value (after the leading encoding version 1), as in docs/state.md.
FIELDS = {
    "orders": [
        "account_id",
        "symbol",
        "side",
        "order_type",
        "time_in_force",
        "limit_price",
        "quantity",
        "filled",
        "filled_notional",
        "status",
        "client_order_id",
        "event_count",
        "last_offset",
        "submitted_limit_price",
        "submitted_quantity",
    ],
    "fills": ["order_id"],
    "positions": ["quantity", "cost_basis", "realized_pnl", "fees", "last_price"],
    "balances": ["amount"],
    "risk": ["gross_exposure", "net_exposure", "realized_pnl", "open_order_notional", "fees"],
    "anomalies": ["partition", "offset", "event_id", "event_type", "kind", "detail"],
    "config": ["value_type", "value", "version", "changed_by", "occurred_at", "offset"],
}
EVENTS_TABLES = ["orders", "fills", "positions", "balances", "risk", "anomalies", "event_ids"]
CONFIG_TABLES = ["config", "anomalies", "event_ids"]
BUCKET = 256
BUCKETS_KEPT = 2_048


def repeat_of(applied: dict[str, int], event_id: str, offset: int) -> int | None:
    """The offset at which ``event_id`` was applied, when that is still inside the window."""
    earlier = applied.get(event_id)
    if earlier is not None and earlier // BUCKET >= offset // BUCKET - BUCKETS_KEPT:
        return earlier
    return None


def event_id_rows(applied: dict[str, int], newest_checked: int) -> dict[bytes, bytes]:
    """The ``event_ids`` rows, as stored before the checksum, of each bucket still inside the window
    that ends at offset ``newest_checked``: format byte 1, the count (4 bytes), each offset's place
    in the bucket (2 bytes each), each id's UTF-8 length (4 bytes each), the ids' UTF-8 bytes;
    numbers little-endian."""
    newest = newest_checked // BUCKET
    buckets: dict[int, list[tuple[int, str]]] = {}
    for event_id, offset in applied.items():
        if offset // BUCKET >= newest - BUCKETS_KEPT:
            buckets.setdefault(offset // BUCKET, []).append((offset, event_id))
    rows = {}
    for number, entries in buckets.items():
        entries.sort()
        encoded = [i.encode("utf-8") for _, i in entries]
        value = bytes([1]) + struct.pack("<I", len(entries))
        value += b"".join(struct.pack("<H", o - number * BUCKET) for o, _ in entries)
        value += b"".join(struct.pack("<I", len(e)) for e in encoded)
        value += b"".join(encoded)
        rows[number.to_bytes(8, "big")] = value
    return rows


def decimal_text(value: int) -> str:
    """A scale-8 integer as a plain decimal without trailing zeros."""
    return format(Decimal(value).scaleb(-8).normalize(), "f")


def bad_identifier(value: str) -> bool:
    return value == "" or "\x00" in value or len(value.encode("utf-8")) > 255


class Rejected(Exception):
    """Raised inside the reference model when an event is an anomaly."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail


class ReferenceModel:
    """The state of one events partition and of the config partition, in plain dicts."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.fills: dict[str, str] = {}
        self.positions: dict[tuple[str, str], dict[str, int]] = {}
        self.balances: dict[tuple[str, str], int] = {}
        self.anomalies: dict[int, dict[str, Any]] = {}
        self.offset = -1
        self.config: dict[str, dict[str, Any]] = {}
        self.config_anomalies: dict[int, dict[str, Any]] = {}
        self.config_offset = -1
        self.applied_ids: dict[str, int] = {}
        self.config_applied_ids: dict[str, int] = {}
        self.newest_checked = -1  # the offset of the newest event checked for a repeat
        self.config_newest_checked = -1
        self.ties: set[str] = set()  # which half-even ties occurred ("even"/"odd" quotient), for coverage
        self.reapplied = 0  # events applied again once their first application left the window

    # Events topic

    def apply(self, event: dict[str, Any], partition: int, offset: int) -> str | None:
        """Apply one event (quarantine policy); return the anomaly kind, or None."""
        self.offset = self.newest_checked = offset
        try:
            earlier = repeat_of(self.applied_ids, event["event_id"], offset)
            if earlier is not None:
                raise Rejected(
                    "DUPLICATE_EVENT", f"event_id {event['event_id']} was applied at offset {earlier}"
                )
            kind = event["event_type"]
            if kind == "OrderSubmitted":
                self.submit(event, offset)
            elif kind == "OrderAccepted":
                self.transition(event, offset, ["NEW"], "ACCEPTED")
            elif kind == "OrderRejected":
                self.transition(event, offset, ["NEW", "ACCEPTED"], "REJECTED")
            elif kind == "OrderCanceled":
                self.transition(event, offset, list(OPEN), "CANCELED")
            elif kind == "OrderExpired":
                self.transition(event, offset, list(OPEN), "EXPIRED")
            elif kind == "OrderReplaced":
                self.replace(event, offset)
            elif kind == "Fill":
                self.fill(event, offset)
            elif kind == "PositionAdjusted":
                self.adjust(event)
            elif kind == "BalanceChanged":
                self.balance(event)
            else:
                raise AssertionError(f"the reference model does not know {kind}")
        except Rejected as anomaly:
            self.anomalies[offset] = {
                "partition": partition,
                "offset": offset,
                "event_id": event["event_id"],
                "event_type": event["event_type"],
                "kind": anomaly.kind,
                "detail": anomaly.detail,
            }
            return anomaly.kind
        if event["event_id"] in self.applied_ids:
            self.reapplied += 1
        self.applied_ids[event["event_id"]] = offset
        return None

    def submit(self, e: dict[str, Any], offset: int) -> None:
        for field in ("order_id", "account_id", "symbol"):
            if bad_identifier(e[field]):
                raise Rejected("INVALID_EVENT", f"{field} must be 1 to 255 UTF-8 bytes without NUL")
        if e["quantity"] <= 0:
            raise Rejected("INVALID_EVENT", "quantity must be > 0")
        if e["order_type"] == "LIMIT" and (e["limit_price"] is None or e["limit_price"] <= 0):
            raise Rejected("INVALID_EVENT", "a LIMIT order needs a limit_price > 0")
        if e["order_type"] == "MARKET" and e["limit_price"] is not None:
            raise Rejected("INVALID_EVENT", "a MARKET order must not have a limit_price")
        order_id = e["order_id"]
        if order_id in self.orders:
            old = self.orders[order_id]
            different = []
            for field, stored in [
                ("account_id", old["account_id"]),
                ("client_order_id", old["client_order_id"]),
                ("symbol", old["symbol"]),
                ("side", old["side"]),
                ("order_type", old["order_type"]),
                ("limit_price", old["submitted_limit_price"]),
                ("quantity", old["submitted_quantity"]),
                ("time_in_force", old["time_in_force"]),
            ]:
                if e[field] != stored:
                    different.append(field)
            if different:
                raise Rejected(
                    "ORDER_ID_CONFLICT", f"order {order_id} exists with a different {', '.join(different)}"
                )
            raise Rejected("DUPLICATE_ORDER", f"order {order_id} was already submitted with the same content")
        self.orders[order_id] = {
            "account_id": e["account_id"],
            "symbol": e["symbol"],
            "side": e["side"],
            "order_type": e["order_type"],
            "time_in_force": e["time_in_force"],
            "limit_price": e["limit_price"],
            "quantity": e["quantity"],
            "filled": 0,
            "filled_notional": 0,
            "status": "NEW",
            "client_order_id": e["client_order_id"],
            "event_count": 1,
            "last_offset": offset,
            "submitted_limit_price": e["limit_price"],
            "submitted_quantity": e["quantity"],
        }

    def live_order(self, e: dict[str, Any]) -> dict[str, Any]:
        order_id = e["order_id"]
        if bad_identifier(order_id):
            raise Rejected("INVALID_EVENT", "order_id must be 1 to 255 UTF-8 bytes without NUL")
        if order_id not in self.orders:
            raise Rejected("UNKNOWN_ORDER", f"no order {order_id}")
        order = self.orders[order_id]
        if order["account_id"] != e["account_id"]:
            raise Rejected("ACCOUNT_MISMATCH", f"order {order_id} belongs to account {order['account_id']}")
        if order["status"] in TERMINAL:
            raise Rejected("TERMINAL_ORDER", f"order {order_id} is already {order['status']}")
        return order

    def transition(self, e: dict[str, Any], offset: int, allowed: list[str], target: str) -> None:
        order = self.live_order(e)
        if order["status"] not in allowed:
            raise Rejected(
                "INVALID_TRANSITION", f"{e['event_type']} is not allowed on an order in {order['status']}"
            )
        order["status"] = target
        order["event_count"] += 1
        order["last_offset"] = offset

    def replace(self, e: dict[str, Any], offset: int) -> None:
        new_price, new_quantity = e["new_limit_price"], e["new_quantity"]
        if new_price is None and new_quantity is None:
            raise Rejected("INVALID_EVENT", "new_limit_price or new_quantity must be set")
        if new_quantity is not None and new_quantity <= 0:
            raise Rejected("INVALID_EVENT", "new_quantity must be > 0")
        if new_price is not None and new_price <= 0:
            raise Rejected("INVALID_EVENT", "new_limit_price must be > 0")
        order = self.live_order(e)
        if new_price is not None and order["order_type"] == "MARKET":
            raise Rejected("INVALID_REPLACE", "a MARKET order has no limit price to replace")
        if new_quantity is not None and new_quantity < order["filled"]:
            raise Rejected(
                "INVALID_REPLACE",
                f"new quantity {decimal_text(new_quantity)} is below the filled quantity "
                f"{decimal_text(order['filled'])}",
            )
        if new_quantity is not None:
            order["quantity"] = new_quantity
        if new_price is not None:
            order["limit_price"] = new_price
        if order["quantity"] == order["filled"]:
            order["status"] = "FILLED"
        order["event_count"] += 1
        order["last_offset"] = offset

    def fill(self, e: dict[str, Any], offset: int) -> None:
        for field in ("exec_id", "order_id"):
            if bad_identifier(e[field]):
                raise Rejected("INVALID_EVENT", f"{field} must be 1 to 255 UTF-8 bytes without NUL")
        if e["quantity"] <= 0:
            raise Rejected("INVALID_EVENT", "quantity must be > 0")
        if e["price"] <= 0:
            raise Rejected("INVALID_EVENT", "price must be > 0")
        if e["fee"] < 0:
            raise Rejected("INVALID_EVENT", "fee must be >= 0")
        exec_id = e["exec_id"]
        if exec_id in self.fills:
            if self.fills[exec_id] == e["order_id"]:
                raise Rejected("DUPLICATE_FILL", f"exec_id {exec_id} was already applied")
            raise Rejected(
                "EXEC_ID_CONFLICT", f"exec_id {exec_id} was already applied to order {self.fills[exec_id]}"
            )
        order = self.live_order(e)
        if order["filled"] + e["quantity"] > order["quantity"]:
            raise Rejected(
                "OVERFILL",
                f"fill of {decimal_text(e['quantity'])} on top of {decimal_text(order['filled'])} "
                f"exceeds the order quantity {decimal_text(order['quantity'])}",
            )
        order["filled"] += e["quantity"]
        order["filled_notional"] += e["quantity"] * e["price"]
        order["status"] = "FILLED" if order["filled"] == order["quantity"] else "PARTIALLY_FILLED"
        order["event_count"] += 1
        order["last_offset"] = offset
        self.fills[exec_id] = e["order_id"]
        signed = e["quantity"] if order["side"] == "BUY" else -e["quantity"]
        position = self.position(order["account_id"], order["symbol"])
        self.trade(position, signed, e["price"])
        position["fees"] += e["fee"]

    def position(self, account: str, symbol: str) -> dict[str, int]:
        key = (account, symbol)
        if key not in self.positions:
            self.positions[key] = {
                "quantity": 0,
                "cost_basis": 0,
                "realized_pnl": 0,
                "fees": 0,
                "last_price": 0,
            }
        return self.positions[key]

    def trade(self, position: dict[str, int], t: int, price: int) -> None:
        """The position rule of docs/state.md, step by step."""
        q = position["quantity"]
        if q == 0 or (q > 0 and t > 0) or (q < 0 and t < 0):
            position["quantity"] = q + t
            position["cost_basis"] += t * price
        else:
            r = min(abs(t), abs(q))
            exact = Fraction(position["cost_basis"] * r, abs(q))
            removed = round(exact)
            if exact.denominator == 2:
                self.ties.add("even" if (exact - Fraction(1, 2)).numerator % 2 == 0 else "odd")
            sign_q = 1 if q > 0 else -1
            sign_t = 1 if t > 0 else -1
            position["realized_pnl"] += sign_q * r * price - removed
            position["cost_basis"] -= removed
            position["quantity"] = q + sign_t * r
            if abs(t) > r:
                rest = t + sign_q * r
                assert position["quantity"] == 0 and position["cost_basis"] == 0
                position["quantity"] = rest
                position["cost_basis"] = rest * price
        position["last_price"] = price

    def adjust(self, e: dict[str, Any]) -> None:
        for field in ("account_id", "symbol"):
            if bad_identifier(e[field]):
                raise Rejected("INVALID_EVENT", f"{field} must be 1 to 255 UTF-8 bytes without NUL")
        if e["price"] <= 0:
            raise Rejected("INVALID_EVENT", "price must be > 0")
        if e["mode"] == "DELTA" and e["quantity"] == 0:
            raise Rejected("INVALID_EVENT", "a DELTA quantity must be non-zero")
        position = self.position(e["account_id"], e["symbol"])
        if e["mode"] == "SET":
            position["quantity"] = e["quantity"]
            position["cost_basis"] = e["quantity"] * e["price"]
            position["last_price"] = e["price"]
        else:
            self.trade(position, e["quantity"], e["price"])

    def balance(self, e: dict[str, Any]) -> None:
        if bad_identifier(e["account_id"]):
            raise Rejected("INVALID_EVENT", "account_id must be 1 to 255 UTF-8 bytes without NUL")
        currency = e["currency"]
        if not (len(currency) == 3 and all("A" <= c <= "Z" for c in currency)):
            raise Rejected("INVALID_EVENT", "currency must be 3 upper-case letters")
        if e["amount"] == 0:
            raise Rejected("INVALID_EVENT", "amount must be non-zero")
        key = (e["account_id"], currency)
        self.balances[key] = self.balances.get(key, 0) + e["amount"]

    # Config topic

    def apply_config(self, e: dict[str, Any], offset: int) -> str | None:
        self.config_offset = self.config_newest_checked = offset
        earlier = repeat_of(self.config_applied_ids, e["event_id"], offset)
        if earlier is not None:
            kind, detail = "DUPLICATE_EVENT", f"event_id {e['event_id']} was applied at offset {earlier}"
        else:
            kind, detail = self.config_problem(e)
        if kind is None:
            self.config_applied_ids[e["event_id"]] = offset
            self.config[e["key"]] = {
                "value_type": e["value_type"],
                "value": e["value"],
                "version": e["version"],
                "changed_by": e["changed_by"],
                "occurred_at": e["occurred_at"],
                "offset": offset,
            }
            return None
        self.config_anomalies[offset] = {
            "partition": 0,
            "offset": offset,
            "event_id": e["event_id"],
            "event_type": e["event_type"],
            "kind": kind,
            "detail": detail,
        }
        return kind

    def config_problem(self, e: dict[str, Any]) -> tuple[str | None, str]:
        if bad_identifier(e["key"]):
            return "INVALID_EVENT", "key must be 1 to 255 UTF-8 bytes without NUL"
        if e["version"] <= 0:
            return "INVALID_EVENT", "version must be > 0"
        expected = {"BOOLEAN": bool, "INTEGER": int, "DECIMAL": int, "STRING": str}[e["value_type"]]
        if type(e["value"]) is not expected:
            return "INVALID_EVENT", f"value does not match value_type {e['value_type']}"
        stored = self.config.get(e["key"])
        if stored is not None and e["version"] <= stored["version"]:
            return (
                "STALE_CONFIG_VERSION",
                f"version {e['version']} of {e['key']} is not newer than "
                f"the stored version {stored['version']}",
            )
        return None, ""

    # Derived tables and canonical output

    def risk(self) -> dict[str, dict[str, int]]:
        """Risk recomputed from scratch: every account with an order or a position has a row."""
        accounts = {o["account_id"] for o in self.orders.values()} | {a for a, _ in self.positions}
        result = {}
        for account in accounts:
            row = {
                "gross_exposure": 0,
                "net_exposure": 0,
                "realized_pnl": 0,
                "open_order_notional": 0,
                "fees": 0,
            }
            for (owner, _), p in self.positions.items():
                if owner == account:
                    row["gross_exposure"] += abs(p["quantity"]) * p["last_price"]
                    row["net_exposure"] += p["quantity"] * p["last_price"]
                    row["realized_pnl"] += p["realized_pnl"]
                    row["fees"] += p["fees"]
            for o in self.orders.values():
                if o["account_id"] == account and o["status"] in OPEN and o["order_type"] == "LIMIT":
                    row["open_order_notional"] += (o["quantity"] - o["filled"]) * o["limit_price"]
            result[account] = row
        return result

    def tables(self) -> dict[str, dict[bytes, Any]]:
        """Every events-partition table as key bytes -> field values in the documented order."""
        rows: dict[str, dict[bytes, dict[str, Any]]] = {
            "orders": {k.encode(): v for k, v in self.orders.items()},
            "fills": {k.encode(): {"order_id": v} for k, v in self.fills.items()},
            "positions": {f"{a}\x00{s}".encode(): v for (a, s), v in self.positions.items()},
            "balances": {f"{a}\x00{c}".encode(): {"amount": v} for (a, c), v in self.balances.items()},
            "risk": {k.encode(): v for k, v in self.risk().items()},
            "anomalies": {o.to_bytes(8, "big"): v for o, v in self.anomalies.items()},
        }
        tables: dict[str, dict[bytes, Any]] = {
            t: {k: [v[f] for f in FIELDS[t]] for k, v in rows[t].items()} for t in EVENTS_TABLES[:-1]
        }
        tables["event_ids"] = event_id_rows(self.applied_ids, self.newest_checked)
        return tables

    def config_tables(self) -> dict[str, dict[bytes, Any]]:
        rows = {
            "config": {k.encode(): v for k, v in self.config.items()},
            "anomalies": {o.to_bytes(8, "big"): v for o, v in self.config_anomalies.items()},
        }
        tables: dict[str, dict[bytes, Any]] = {
            t: {k: [v[f] for f in FIELDS[t]] for k, v in rows[t].items()} for t in CONFIG_TABLES[:-1]
        }
        tables["event_ids"] = event_id_rows(self.config_applied_ids, self.config_newest_checked)
        return tables

    def records(self) -> list[tuple[str, bytes, bytes]]:
        return _records(self.tables(), EVENTS_TABLES, self.offset)

    def config_records(self) -> list[tuple[str, bytes, bytes]]:
        return _records(self.config_tables(), CONFIG_TABLES, self.config_offset)


def _records(
    tables: dict[str, dict[bytes, Any]], order: list[str], offset: int
) -> list[tuple[str, bytes, bytes]]:
    out = []
    for table in order:
        for key in sorted(tables[table]):
            row = tables[table][key]
            value = (
                row if table == "event_ids" else json.dumps([1, *row], separators=(",", ":")).encode("utf-8")
            )
            out.append((table, key, sealed(key, value)))
    out.append(("meta", b"offset", sealed(b"offset", str(offset).encode("ascii"))))
    return out


def sealed(key: bytes, value: bytes) -> bytes:
    return value + zlib.crc32(key + value).to_bytes(4, "big")
