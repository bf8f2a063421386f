"""The Faust peer: rewind's fold of the events topic into Faust tables, run as a Faust worker.

Runs in its own virtualenv (bench/peers/faust/.venv: faust-streaming, fastavro, rocksdict), never
with the product's. The fold itself is peer_fold.py (same state and arithmetic as projector/fold.py
for orders, fills, positions and balances), applied to four Faust tables with changelogs.

Configured by environment variables (bench/peers/run_peers.py sets them):
PEER_BOOTSTRAP, PEER_TOPIC, PEER_PARTITIONS, PEER_APP_ID, PEER_DATA_DIR, PEER_SCHEMAS (rewind's
schemas/ directory), PEER_EXPORT (JSON written once caught up), PEER_STORE (``memory://`` or
``rocksdb://``), PEER_GUARANTEE (``at_least_once`` or ``exactly_once``), PEER_PROGRESS_EVERY,
PEER_DEADLINE_S (optional: the pass's time budget in seconds from interpreter start).

    PEER_...=... .venv/bin/python peer_faust.py worker --loglevel=warn

It prints JSON lines (on stdout, or inside its log lines where Faust redirects stdout): progress,
then one "done" line (wall, CPU, RSS) once every partition has reached the log end seen at start
(processed, or committed by an earlier run), then the export.

A pass not caught up by PEER_DEADLINE_S is stopped there instead: a timer thread hands the stop to
the event loop, which runs it between two events, so the tables and the offsets applied are read at
one point (a Faust timer would not run before the worker has its partitions). One "bounded" line
gives the events applied, wall, CPU, RSS, whether the tables were being served (false while they
recover) and the offsets applied per partition (this run's, or the committed ones of a partition it
has not reached yet); the export then carries those offsets too.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import re
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form
from peer_fold import PeerFold

STARTED = time.monotonic()
BOOTSTRAP = os.environ["PEER_BOOTSTRAP"]
TOPIC = os.environ["PEER_TOPIC"]
PARTITIONS = int(os.environ["PEER_PARTITIONS"])
APP_ID = os.environ["PEER_APP_ID"]
EXPORT = os.environ.get("PEER_EXPORT")
PROGRESS_EVERY = int(os.environ.get("PEER_PROGRESS_EVERY", "10000"))
DEADLINE_S = float(os.environ.get("PEER_DEADLINE_S", "0"))


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
    event = schemaless_reader(io.BytesIO(value[10:]), writer, reader)
    if not isinstance(event, dict):
        raise ValueError("an event must decode to a record")
    return event


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
committed: dict[int, int] = {}


fold_tables = PeerFold(orders, fills, positions, balances)


@app.agent(events_topic)
async def fold(stream: Any) -> None:
    async for event in stream.events():
        fold_tables.apply(decode(event.value))
        message = event.message
        processed[message.partition] = message.offset + 1
        counter["events"] += 1
        if counter["events"] % PROGRESS_EVERY == 0:
            emit(progress=counter["events"])


@app.task  # type: ignore[untyped-decorator]
async def fetch_ends() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        found = await consumer.end_offsets(partitions)
        found_ends = {tp.partition: offset for tp, offset in found.items()}
    finally:
        await consumer.stop()
    committed.update(await committed_offsets(found_ends))
    already.update(p for p, end in found_ends.items() if committed.get(p, -1) >= end)
    ends.update(found_ends)
    emit(starting=APP_ID, partitions=len(ends), already_at_end=len(already))


async def committed_offsets(ends: dict[int, int]) -> dict[int, int]:
    """The offsets an earlier run committed, per partition (absent: none committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=APP_ID, enable_auto_commit=False)
    await consumer.start()
    try:
        found = {}
        for partition in ends:
            offset = await consumer.committed(TopicPartition(TOPIC, partition))
            if offset is not None:
                found[partition] = offset
        return found
    finally:
        await consumer.stop()


@app.timer(0.2)  # type: ignore[untyped-decorator]
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


def stop_at_budget() -> None:
    """The pass at its time budget: what was applied, the tables with those offsets, then exit."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    recovery = app.tables.recovery
    serving = bool(ends) and recovery.completed.is_set() and not recovery.in_recovery
    offsets = {str(p): processed.get(p, committed.get(p, 0)) for p in range(PARTITIONS)}
    emit(
        bounded=True,
        processed=counter["events"],
        wall_s=round(time.monotonic() - STARTED, 3),
        cpu_s=round(usage.ru_utime + usage.ru_stime, 3),
        rss_kb=rss_kb(),
        serving=serving,
        offsets=offsets,
    )
    if EXPORT and serving:
        export(Path(EXPORT), offsets)
        emit(exported=EXPORT)
    os._exit(0)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def export(path: Path, offsets: dict[str, int] | None = None) -> None:
    tables = fold_tables.export()
    path.write_text(
        json.dumps(tables if offsets is None else {**tables, "offsets": offsets}), encoding="utf-8"
    )


if __name__ == "__main__":
    if DEADLINE_S:
        budget = threading.Timer(
            max(0.0, DEADLINE_S - (time.monotonic() - STARTED)),
            functools.partial(asyncio.get_event_loop().call_soon_threadsafe, stop_at_budget),
        )
        budget.daemon = True
        budget.start()
    app.main()
