"""Benchmark of the fold alone: microseconds per event over a realistic stream, with MemoryState.

Run: ``.venv/bin/python bench/bench_fold.py [--events N] [--seed S]``. The stream is generated up
front (its cost is not measured): accounts trade a few hundred symbols through full order
lifecycles (submit, ack, partial fills, replaces, cancels), with position adjustments, balance
changes and a sprinkle of duplicates, the way a desk's feed looks. Also reports the cost of encoding
a row canonically, which the LMDB store pays once per dirty row per batch. Each event goes through
the projector's policy step (:class:`projector.policy.EventsStep`, ``quarantine``), as in its consume
loop, without the decoding. Times are the process's
CPU time (best of ``--repeat`` runs), so other work on a shared machine inflates them less; the fold
is timed with and without the cyclic garbage collector, whose scans of a growing heap are a large
share of the cost.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from typing import Any

from projector.encoding import encode_record
from projector.model import Entity
from projector.policy import RECORDED, EventsStep
from projector.state import MemoryState

Event = dict[str, Any]


def generate(count: int, seed: int) -> list[Event]:
    """About ``count`` events of a plausible trading day."""
    rng = random.Random(seed)
    accounts = [f"ACC{i:03d}" for i in range(50)]
    symbols = [f"SYM{i:03d}" for i in range(300)]
    events: list[Event] = []
    serial = 0

    def event(event_type: str, account: str, **fields: Any) -> None:
        nonlocal serial
        serial += 1
        events.append(
            {
                "event_id": f"00000000-0000-4000-8000-{serial:012x}",
                "event_type": event_type,
                "occurred_at": 1_700_000_000_000_000 + serial,
                "account_id": account,
                "source": "simulator",
                **fields,
            }
        )

    order_number = 0
    while len(events) < count:
        account = rng.choice(accounts)
        roll = rng.random()
        if roll < 0.03:
            event(
                "PositionAdjusted",
                account,
                symbol=rng.choice(symbols),
                mode=rng.choice(["SET", "DELTA"]),
                quantity=rng.randint(-500, 500) * 10**8 or 10**8,
                price=rng.randint(1_000, 50_000) * 10**6,
                reason="RECONCILIATION",
            )
            continue
        if roll < 0.05:
            event(
                "BalanceChanged",
                account,
                currency="USD",
                amount=rng.randint(1, 10**6) * 10**8,
                reason="DEPOSIT",
            )
            continue
        order_number += 1
        order_id = f"ORD-{order_number:09d}"
        quantity = rng.randint(1, 100) * 100 * 10**8
        limit = rng.randint(1_000, 50_000) * 10**6
        market = rng.random() < 0.1
        event(
            "OrderSubmitted",
            account,
            order_id=order_id,
            client_order_id=f"C-{order_number}",
            symbol=rng.choice(symbols),
            side=rng.choice(["BUY", "SELL"]),
            order_type="MARKET" if market else "LIMIT",
            limit_price=None if market else limit,
            quantity=quantity,
            time_in_force="DAY",
        )
        event("OrderAccepted", account, order_id=order_id)
        if not market and rng.random() < 0.1:
            quantity += 100 * 10**8
            event(
                "OrderReplaced",
                account,
                order_id=order_id,
                new_limit_price=limit + 10**6,
                new_quantity=quantity,
            )
        left = quantity
        for fill in range(rng.randint(0, 4)):
            size = min(left, rng.randint(1, 50) * 100 * 10**8)
            if size == 0:
                break
            left -= size
            fields = {
                "exec_id": f"EX-{order_number}-{fill}",
                "order_id": order_id,
                "quantity": size,
                "price": limit + rng.randint(-100, 100) * 10**4,
                "fee": rng.randint(0, 10**8),
                "liquidity": "MAKER",
                "venue": "XNAS",
            }
            event("Fill", account, **fields)
            if rng.random() < 0.02:
                event("Fill", account, **fields)
        if left and rng.random() < 0.7:
            event("OrderCanceled", account, order_id=order_id, reason=None)
    return events[:count]


def fold_all(events: list[Event], collect: bool) -> tuple[float, MemoryState, int]:
    """CPU µs per event of folding ``events`` into a fresh MemoryState, with or without the cyclic GC."""
    state = MemoryState()
    step = EventsStep(state, 0)
    anomalies = 0
    if not collect:
        gc.disable()
    try:
        started = time.process_time_ns()
        for offset, event in enumerate(events):
            if step.apply(event, offset) == RECORDED:
                anomalies += 1
        elapsed = time.process_time_ns() - started
    finally:
        gc.enable()
    return elapsed / 1000 / len(events), state, anomalies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs on fresh state; the best is reported")
    args = parser.parse_args()
    events = generate(args.events, args.seed)
    gc.collect()
    gc.freeze()  # the pre-generated stream is not the fold's garbage to scan
    results = {}
    for collect in (True, False):
        runs = [fold_all(events, collect) for _ in range(args.repeat)]
        results[collect] = min(run[0] for run in runs)
    _, state, anomalies = runs[-1]
    rows: list[Entity] = [*state.orders.values(), *state.positions.values(), *state.risks.values()]
    started = time.process_time_ns()
    for row in rows:
        encode_record(row)
    encode = (time.process_time_ns() - started) / 1000 / len(rows)
    print(f"events: {len(events)}  anomalies: {anomalies}  orders: {len(state.orders)}", end="  ")
    print(f"positions: {len(state.positions)}  accounts: {len(state.risks)}")
    for collect, best in results.items():
        label = "with the cyclic GC" if collect else "GC disabled"
        rate = f"{1e6 / best:,.0f} events/s"
        print(f"fold: {best:.2f} µs/event ({rate}), {label}, CPU time, best of {args.repeat}")
    print(f"canonical encoding: {encode:.2f} µs/row (paid once per dirty row per batch)")


if __name__ == "__main__":
    main()
