"""The peers' final state must equal rewind's, so their throughputs are for the same work.

Every system exports the same JSON shape (integers as decimal strings, exact at any size):

    {"orders":    {order_id: [status, quantity, filled, filled notional (scale 16)]},
     "positions": {"account/symbol": [quantity, cost basis, realized P&L, fees, last price]},
     "balances":  {"account/currency": amount}}

:func:`rewind_export` reads rewind's state directory through :mod:`projector.queries` (checksums
checked); :func:`differences` lists what differs. As a command:

    .venv/bin/python -m bench.peers.crosscheck --state DIR PEER.json [PEER.json ...]

exits 0 when every peer equals rewind, 1 otherwise (and prints the first differences).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from projector import queries
from projector.state_directory import StateDirectory

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
    parser.add_argument("peers", type=Path, nargs="+", help="peer exports (JSON)")
    args = parser.parse_args()
    expected = rewind_export(args.state)
    print(f"rewind: {summary(expected)}")
    failed = False
    for path in args.peers:
        found = differences(expected, load_export(path))
        print(f"{path}: {'equal' if not found else 'DIFFERENT'}")
        for line in found:
            print(f"  {line}")
        failed = failed or bool(found)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
