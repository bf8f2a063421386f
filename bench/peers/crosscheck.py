"""The peers' final state must equal rewind's, so their throughputs are for the same work.

Every system exports the same JSON shape (integers as decimal strings, exact at any size):

    {"orders":    {order_id: [status, quantity, filled, filled notional (scale 16)]},
     "positions": {"account/symbol": [quantity, cost basis, realized P&L, fees, last price]},
     "balances":  {"account/currency": amount}}

:func:`rewind_export` reads rewind's state directory through :mod:`projector.queries` (checksums
checked); :func:`differences` lists what differs. As a command:

    .venv/bin/python -m bench.peers.crosscheck --state DIR PEER.json [PEER.json ...]

exits 0 when every peer equals rewind, 1 otherwise (and prints the first differences).

A pass stopped at its time budget exports, beside its tables, the offsets it had applied
(``"offsets": {partition: events applied}``); it is compared with rewind's state at exactly those
offsets, which :func:`rewind_export_at` builds with rewind's own time travel
(:func:`replayer.timetravel.build_state_at`, as ``rewind replay --to P:OFFSET,...`` does). As a
command, ``--at-offsets`` does the same (it needs the broker of the events topic):

    .venv/bin/python -m bench.peers.crosscheck --state DIR --at-offsets PEER.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from projector import queries
from projector.state_directory import StateDirectory
from projector.store import partition_dir_name
from replayer.timetravel import build_state_at
from rewind.ground.settings import Settings, load_settings

Export = dict[str, dict[str, Any]]
TABLES = ("orders", "positions", "balances")


def rewind_export(state_dir: Path) -> Export:
    """rewind's orders, positions and balances in the shared export shape."""
    with StateDirectory.open_readonly(state_dir) as directory:
        orders = {
            o.order_id: [o.status, str(o.quantity), str(o.filled), str(o.filled_notional)]
            for o in queries.orders(directory)
        }
        positions = {
            f"{p.account_id}/{p.symbol}": [
                str(p.quantity),
                str(p.cost_basis),
                str(p.realized_pnl),
                str(p.fees),
                str(p.last_price),
            ]
            for p in queries.positions(directory)
        }
        balances = {f"{b.account_id}/{b.currency}": str(b.amount) for b in queries.balances(directory)}
    return {"orders": orders, "positions": positions, "balances": balances}


def load_export(path: Path) -> Export:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or any(not isinstance(data.get(t), dict) for t in TABLES):
        raise ValueError(f"{path}: not a peers export (needs the tables {', '.join(TABLES)})")
    return {t: data[t] for t in TABLES}


def load_offsets(path: Path) -> dict[int, int] | None:
    """The offsets a bounded pass exported with its tables (events applied per partition), or None
    for an export of a pass that ran to the end."""
    data = json.loads(path.read_text(encoding="utf-8"))
    offsets = data.get("offsets") if isinstance(data, dict) else None
    if offsets is None:
        return None
    if not isinstance(offsets, dict):
        raise ValueError(f"{path}: 'offsets' must map partitions to events applied")
    return {int(partition): int(applied) for partition, applied in offsets.items()}


def points_at_offsets(offsets: Mapping[int, int], ends: Mapping[int, int]) -> dict[str, int]:
    """rewind's time-travel point (store -> events to include) for a peer's applied offsets.

    Every partition of the topic (``ends``: partition -> log end) must be named, with an offset
    between 0 and its end: a peer that skipped a partition or ran past the log is not comparable.
    The config store is left out, as the peers do not read the config topic.
    """
    if set(offsets) != set(ends):
        raise ValueError(
            f"offsets name partitions {sorted(offsets)}, the topic has {sorted(ends)}: not comparable"
        )
    for partition, applied in offsets.items():
        if not 0 <= applied <= ends[partition]:
            raise ValueError(
                f"partition {partition}: {applied} events applied, its log holds {ends[partition]}"
            )
    return {partition_dir_name(p): offsets[p] for p in sorted(offsets)}


def rewind_export_at(settings: Settings, out_dir: Path, points: Mapping[str, int]) -> Export:
    """rewind's state after the first ``points[store]`` events of each store, built by time travel
    into ``out_dir`` (replayed from the log start: no snapshots are looked for)."""
    replay = dataclasses.replace(
        settings, values={**settings.values, "snapshots.dir": str(out_dir.with_name(out_dir.name + "-none"))}
    )
    build_state_at(replay, out_dir, dict(points))
    return rewind_export(out_dir)


def differences(expected: Export, got: Export, limit: int = 10) -> list[str]:
    """Up to ``limit`` differences of ``got`` from ``expected``, table by table; empty when equal."""
    found: list[str] = []
    for table in TABLES:
        want, have = expected[table], got[table]
        for key in sorted(want.keys() | have.keys()):
            if want.get(key) != have.get(key):
                found.append(f"{table}[{key}]: rewind {want.get(key)}, peer {have.get(key)}")
                if len(found) >= limit:
                    return found
    return found


def summary(export: Export) -> dict[str, int]:
    return {table: len(export[table]) for table in TABLES}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state", type=Path, required=True, help="rewind's state directory")
    parser.add_argument(
        "--at-offsets",
        action="store_true",
        help="compare each bounded export with rewind's state at the offsets it carries (time travel)",
    )
    parser.add_argument("peers", type=Path, nargs="+", help="peer exports (JSON)")
    args = parser.parse_args()
    expected = rewind_export(args.state)
    print(f"rewind: {summary(expected)}")
    failed = False
    for path in args.peers:
        want = expected
        offsets = load_offsets(path) if args.at_offsets else None
        if offsets is not None:
            with StateDirectory.open_readonly(args.state) as directory:
                ends = {p: directory.partition(p).offset() + 1 for p in directory.partitions()}
            with tempfile.TemporaryDirectory(prefix="peers-at-") as scratch:
                points = points_at_offsets(offsets, ends)
                want = rewind_export_at(load_settings(), Path(scratch) / "state", points)
            print(f"{path}: against rewind at {offsets}: {summary(want)}")
        found = differences(want, load_export(path))
        print(f"{path}: {'equal' if not found else 'DIFFERENT'}")
        for line in found:
            print(f"  {line}")
        failed = failed or bool(found)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
