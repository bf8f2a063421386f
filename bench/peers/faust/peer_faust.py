"""The Faust peer: rewind's fold of the events topic into Faust tables, run as a Faust worker.

Runs in its own virtualenv (bench/peers/faust/.venv: faust-streaming, fastavro, rocksdict), never
with the product's. Same state and arithmetic as projector/fold.py (docs/state.md) for orders,
fills, positions and balances; an event that cannot apply changes nothing and is not recorded. Not
kept: risk, anomalies, the event-id window and rewind's field-value checks.

Configured by environment variables (bench/peers/run_peers.py sets them):
PEER_BOOTSTRAP, PEER_TOPIC, PEER_PARTITIONS, PEER_APP_ID, PEER_DATA_DIR, PEER_SCHEMAS (rewind's
schemas/ directory), PEER_EXPORT (JSON written once caught up), PEER_STORE (``memory://`` or
``rocksdb://``), PEER_GUARANTEE (``at_least_once`` or ``exactly_once``), PEER_PROGRESS_EVERY.

    PEER_...=... .venv/bin/python peer_faust.py worker --loglevel=warn

Every line on stdout is JSON: progress, then one "done" line (wall, CPU, RSS) once every partition
has reached the log end seen at start (processed, or committed by an earlier run), then the export.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

STARTED = time.monotonic()
BOOTSTRAP = os.environ["PEER_BOOTSTRAP"]
TOPIC = os.environ["PEER_TOPIC"]
PARTITIONS = int(os.environ["PEER_PARTITIONS"])
APP_ID = os.environ["PEER_APP_ID"]
EXPORT = os.environ.get("PEER_EXPORT")
PROGRESS_EVERY = int(os.environ.get("PEER_PROGRESS_EVERY", "10000"))
OPEN = frozenset({"NEW", "ACCEPTED", "PARTIALLY_FILLED"})
TERMINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
ALLOWED = {
    "OrderAccepted": (frozenset({"NEW"}), "ACCEPTED"),
    "OrderRejected": (frozenset({"NEW", "ACCEPTED"}), "REJECTED"),
    "OrderCanceled": (OPEN, "CANCELED"),
    "OrderExpired": (OPEN, "EXPIRED"),
}
# Order rows: [account, symbol, side, limit price, quantity, filled, filled notional, status].
ACCOUNT, SYMBOL, SIDE, LIMIT, QUANTITY, FILLED, NOTIONAL, STATUS = range(8)


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _physical(schema: Any) -> Any:
    """The schema without logicalType: timestamps stay int microseconds, ids stay str."""
    if isinstance(schema, dict):
        return {k: _physical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_physical(s) for s in schema]
    return schema


def load_readers(schema_dir: Path) -> dict[bytes, tuple[Any, Any]]:
    """Wire fingerprint -> (writer schema, current schema of its type, or None when it is current)."""
    readers: dict[bytes, tuple[Any, Any]] = {}
    for type_dir in sorted(p for p in schema_dir.iterdir() if p.is_dir()):
        versions = {
            int(m.group(1)): json.loads(f.read_text(encoding="utf-8"))
            for f in type_dir.iterdir()
            if (m := re.fullmatch(r"v([1-9][0-9]*)\.avsc", f.name))
        }
        if not versions:
            continue
        current = max(versions)
        reader = parse_schema(_physical(versions[current]))
        for number, schema in versions.items():
            key = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
            readers[key] = (parse_schema(_physical(schema)), None if number == current else reader)
    return readers


READERS = load_readers(Path(os.environ["PEER_SCHEMAS"]))


def decode(value: bytes) -> dict[str, Any]:
    if value[:2] != b"\xc3\x01":
        raise ValueError("not an Avro single-object encoded value")
    writer, reader = READERS[value[2:10]]
    event: dict[str, Any] = schemaless_reader(io.BytesIO(value[10:]), writer, reader)
    return event


def div_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (> 0) rounded to the nearest integer, ties to even."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def trade(position: list[int], traded: int, price: int) -> None:
    """docs/state.md "Positions" on [quantity, basis, realized, fees, last price], in place."""
    quantity, basis, realized = position[0], position[1], position[2]
    if quantity == 0 or (quantity > 0) == (traded > 0):
        position[0], position[1] = quantity + traded, basis + traded * price
        return
    held, size = abs(quantity), abs(traded)
    closed = min(size, held)
    removed = div_half_even(basis * closed, held)
    realized += (closed * price if quantity > 0 else -closed * price) - removed
    basis -= removed
    position[2] = realized
    if size > closed:
        if basis != 0:
            raise RuntimeError(f"closing {held} left cost basis {basis}")
        rest = traded + closed if quantity > 0 else traded - closed
        position[0], position[1] = rest, rest * price
        return
    position[0], position[1] = quantity + (closed if traded > 0 else -closed), basis


app = faust.App(
    APP_ID,
    broker=f"kafka://{BOOTSTRAP}",
    store=os.environ.get("PEER_STORE", "memory://"),
    datadir=os.environ["PEER_DATA_DIR"],
    processing_guarantee=os.environ.get("PEER_GUARANTEE", "at_least_once"),
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    table_standby_replicas=0,
    web_enabled=False,
    worker_redirect_stdouts=False,
    consumer_auto_offset_reset="earliest",
)
events_topic = app.topic(TOPIC, key_serializer="raw", value_serializer="raw", partitions=PARTITIONS)
orders = app.Table("orders", partitions=PARTITIONS)
fills = app.Table("fills", partitions=PARTITIONS)
positions = app.Table("positions", partitions=PARTITIONS)
balances = app.Table("balances", partitions=PARTITIONS)

processed: dict[int, int] = {}
counter = {"events": 0}
ends: dict[int, int] = {}
already: set[int] = set()


def open_order(event: dict[str, Any]) -> list[Any] | None:
    order = orders.get(event["order_id"])
    if order is None or order[ACCOUNT] != event["account_id"] or order[STATUS] in TERMINAL:
        return None
    return list(order)


def apply(event: dict[str, Any]) -> None:
    kind = event["event_type"]
    if kind == "OrderSubmitted":
        if orders.get(event["order_id"]) is None:
            orders[event["order_id"]] = [
                event["account_id"],
                event["symbol"],
                event["side"],
                event["limit_price"],
                event["quantity"],
                0,
                0,
                "NEW",
            ]
    elif kind in ALLOWED:
        allowed, target = ALLOWED[kind]
        order = open_order(event)
        if order is not None and order[STATUS] in allowed:
            order[STATUS] = target
            orders[event["order_id"]] = order
    elif kind == "OrderReplaced":
        order = open_order(event)
        new_limit, new_quantity = event["new_limit_price"], event["new_quantity"]
        if order is None or (new_limit is not None and order[LIMIT] is None):
            return
        quantity = order[QUANTITY] if new_quantity is None else new_quantity
        if quantity < order[FILLED]:
            return
        order[QUANTITY] = quantity
        if new_limit is not None:
            order[LIMIT] = new_limit
        if quantity == order[FILLED]:
            order[STATUS] = "FILLED"
        orders[event["order_id"]] = order
    elif kind == "Fill":
        fill(event)
    elif kind == "PositionAdjusted":
        key = f"{event['account_id']}/{event['symbol']}"
        stored = positions.get(key)
        quantity, price = event["quantity"], event["price"]
        if stored is None or event["mode"] == "SET":
            position = [quantity, quantity * price, 0 if stored is None else stored[2], 0, price]
            if stored is not None:
                position[3] = stored[3]
        else:
            position = list(stored)
            trade(position, quantity, price)
            position[4] = price
        positions[key] = position
    elif kind == "BalanceChanged":
        key = f"{event['account_id']}/{event['currency']}"
        balances[key] = balances.get(key, 0) + event["amount"]
    else:
        raise ValueError(f"unknown event_type {kind!r}")


def fill(event: dict[str, Any]) -> None:
    if fills.get(event["exec_id"]) is not None:
        return
    order = open_order(event)
    if order is None:
        return
    quantity, price = event["quantity"], event["price"]
    filled = order[FILLED] + quantity
    if filled > order[QUANTITY]:
        return
    key = f"{order[ACCOUNT]}/{order[SYMBOL]}"
    traded = quantity if order[SIDE] == "BUY" else -quantity
    stored = positions.get(key)
    if stored is None:
        position = [traded, traded * price, 0, event["fee"], price]
    else:
        position = list(stored)
        trade(position, traded, price)
        position[3] += event["fee"]
        position[4] = price
    positions[key] = position
    order[FILLED] = filled
    order[NOTIONAL] += quantity * price
    order[STATUS] = "FILLED" if filled == order[QUANTITY] else "PARTIALLY_FILLED"
    orders[event["order_id"]] = order
    fills[event["exec_id"]] = event["order_id"]


@app.agent(events_topic)
async def fold(stream: Any) -> None:
    async for event in stream.events():
        apply(decode(event.value))
        message = event.message
        processed[message.partition] = message.offset + 1
        counter["events"] += 1
        if counter["events"] % PROGRESS_EVERY == 0:
            emit(progress=counter["events"])


@app.task
async def fetch_ends() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        found = await consumer.end_offsets(partitions)
        found_ends = {tp.partition: offset for tp, offset in found.items()}
    finally:
        await consumer.stop()
    already.update(await committed_ends(found_ends))
    ends.update(found_ends)
    emit(starting=APP_ID, partitions=len(ends), already_at_end=len(already))


async def committed_ends(ends: dict[int, int]) -> set[int]:
    """Partitions whose committed offset (an earlier run's) has reached the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=APP_ID, enable_auto_commit=False)
    await consumer.start()
    try:
        done = set()
        for partition, end in ends.items():
            offset = await consumer.committed(TopicPartition(TOPIC, partition))
            if offset is not None and offset >= end:
                done.add(partition)
        return done
    finally:
        await consumer.stop()


@app.timer(0.2)
async def watch() -> None:
    if not ends:
        return
    if any(processed.get(p, 0) < end for p, end in ends.items() if p not in already):
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    emit(
        done=True,
        processed=counter["events"],
        wall_s=round(time.monotonic() - STARTED, 3),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        rss_kb=rss_kb(),
    )
    if EXPORT:
        export(Path(EXPORT))
        emit(exported=EXPORT)
    os._exit(0)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def export(path: Path) -> None:
    """The tables in the shared export shape of bench/peers/crosscheck.py."""
    data = {
        "orders": {
            k: [o[STATUS], str(o[QUANTITY]), str(o[FILLED]), str(o[NOTIONAL])] for k, o in orders.items()
        },
        "positions": {k: [str(v) for v in p] for k, p in positions.items()},
        "balances": {k: str(v) for k, v in balances.items()},
    }
    path.write_text(json.dumps(data), encoding="utf-8")


if __name__ == "__main__":
    app.main()
