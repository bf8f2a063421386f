"""Reconciliation speed: a statement of N positions against rewind's state, beside reading the file.

Puts N positions into rewind (one PositionAdjusted SET each, spread over accounts of 100 symbols),
projects them, writes a CSV statement of the same N positions (with ``--breaks`` of them changed),
and times, best of R passes:

- ``read csv rows``: the file through ``csv.DictReader`` and nothing else (the floor);
- ``read statement``: :func:`replayer.statement.read_statement` (mapping, exact decimals, checks);
- ``reconcile live``: :func:`replayer.reconcile_report.reconcile_files` against the live state
  (statement, LMDB rows, comparison), without and with the last events of each break;
- ``reconcile as-of (time travel)``: the same at a moment, the state built by time travel.

    .venv/bin/python -m bench.bench_reconcile --positions 100000 [--bootstrap HOST:PORT]

Writes ``bench/results/reconcile.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import bench_broker, bench_topics
from producers import builders
from producers.event_producer import EventProducer
from projector.runner import Projector
from replayer.reconcile_report import reconcile_files
from replayer.statement import read_statement
from rewind.ground.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
SYMBOLS_PER_ACCOUNT = 100
E8 = 10**8


def put_positions(settings: Settings, count: int) -> list[dict[str, str]]:
    """``count`` positions as events on the topic; their statement rows."""
    rows: list[dict[str, str]] = []
    with EventProducer(
        settings.client_config(), events_topic=settings.events_topic, config_topic=settings.config_topic
    ) as producer:
        for n in range(count):
            account, symbol = f"ACC-{n // SYMBOLS_PER_ACCOUNT:05d}", f"SYM{n % SYMBOLS_PER_ACCOUNT:03d}"
            quantity = (n % 977 + 1) * (1 if n % 3 else -1)
            price = 10 * E8 + n % 9973
            producer.emit_async(
                builders.position_adjusted(
                    account_id=account,
                    symbol=symbol,
                    mode="SET",
                    quantity=quantity * E8,
                    price=price,
                    reason="START_OF_DAY",
                    source="bench",
                    event_id=str(uuid.UUID(int=n + 1)),
                    occurred_at=1_800_000_000_000_000 + n,
                )
            )
            rows.append(
                {
                    "account": account,
                    "symbol": symbol,
                    "quantity": str(quantity),
                    "avg_price": f"{price // E8}.{price % E8:08d}",
                }
            )
    return rows


def best_seconds(work: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--breaks", type=int, default=10, help="statement rows changed (breaks reported)")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bootstrap", help="an existing broker (default: a local one of its own)")
    args = parser.parse_args()

    with (
        bench_broker(args.bootstrap) as (bootstrap, scratch),
        bench_topics(bootstrap, scratch, args.partitions) as settings,
    ):
        started = time.perf_counter()
        rows = put_positions(settings, args.positions)
        print(f"  produced {len(rows):,} positions in {time.perf_counter() - started:.1f} s", flush=True)
        time.sleep(0.05)
        moment = datetime.now(UTC)
        started = time.perf_counter()
        projector = Projector(settings, range(args.partitions))
        try:
            projector.run(until_caught_up=True)
        finally:
            projector.close()
        print(f"  projected in {time.perf_counter() - started:.1f} s", flush=True)
        for row in rows[: args.breaks]:
            row["quantity"] = str(int(row["quantity"]) + 1)
        statement = scratch / "positions.csv"
        with statement.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["account", "symbol", "quantity", "avg_price"])
            writer.writeheader()
            writer.writerows(rows)
        files = {"positions": statement}

        def read_rows() -> int:
            with statement.open(newline="") as handle:
                return sum(1 for _ in csv.DictReader(handle))

        def check(history: int, as_of: str) -> Callable[[], object]:
            def run() -> object:
                report = reconcile_files(settings, files, as_of, history)
                if len(report.outcome.breaks) != args.breaks:
                    raise SystemExit(f"expected {args.breaks} breaks, got {len(report.outcome.breaks)}")
                return report

            return run

        figures = {
            "read csv rows": best_seconds(read_rows, args.repeat),
            "read statement": best_seconds(lambda: read_statement(settings, files), args.repeat),
            "reconcile live, no history": best_seconds(check(0, "live"), args.repeat),
            "reconcile live, last 3 events per break": best_seconds(check(3, "live"), args.repeat),
            "reconcile as-of (time travel), no history": best_seconds(
                check(0, moment.isoformat()), args.repeat
            ),
        }
    print(f"{args.positions:,} positions, {args.breaks} breaks, best of {args.repeat}:")
    for name, seconds in figures.items():
        print(f"  {name:<45} {seconds:8.3f} s  ({args.positions / seconds:,.0f} positions/s)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "reconcile.json"
    out.write_text(
        json.dumps(
            {
                "positions": args.positions,
                "breaks": args.breaks,
                "partitions": args.partitions,
                "repeat": args.repeat,
                "seconds": figures,
                "python": platform.python_version(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
