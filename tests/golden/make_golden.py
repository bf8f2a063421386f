"""Write the golden files: one event encoded by every schema version, kept forever.

``tests/golden/<type>/v<N>.bin`` is a single-object-encoded value written with exactly version N;
``v<N>.json`` is the event as written. Existing files are never rewritten: they stand for data already
in the log, which later versions of rewind must still decode (``tests/test_golden.py`` checks that).
Run it after adding a schema version: ``.venv/bin/python tests/golden/make_golden.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.catalog import default_catalog
from schemas.codec import default_codec

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_DIR = Path(__file__).resolve().parent
COMMON = {"occurred_at": 1_767_225_600_123_456, "account_id": "ACC-0042", "source": "oms"}

# Every field any version has; a version writes the ones its schema lists.
SAMPLES: dict[str, dict[str, Any]] = {
    "OrderSubmitted": {
        "event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a01",
        "order_id": "ORD-1",
        "client_order_id": "CL-1",
        "symbol": "AAPL",
        "side": "BUY",
        "order_type": "LIMIT",
        "limit_price": 18_950_000_000,
        "quantity": 10_000_000_000,
        "time_in_force": "DAY",
    },
    "OrderAccepted": {"event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a02", "order_id": "ORD-1"},
    "OrderRejected": {
        "event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a03",
        "order_id": "ORD-2",
        "reason": "insufficient buying power",
        "reject_code": "3",
    },
    "OrderReplaced": {
        "event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a04",
        "order_id": "ORD-1",
        "new_limit_price": 19_000_000_000,
        "new_quantity": None,
    },
    "OrderCanceled": {
        "event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a05",
        "order_id": "ORD-1",
        "reason": "user request",
    },
    "OrderExpired": {"event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a06", "order_id": "ORD-3"},
    "Fill": {
        "event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a07",
        "exec_id": "EX-1",
        "order_id": "ORD-1",
        "quantity": 4_000_000_000,
        "price": 18_949_000_000,
        "fee": 12_500_000,
        "liquidity": "MAKER",
        "venue": "XNAS",
    },
    "PositionAdjusted": {
        "event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a08",
        "symbol": "MSFT",
        "mode": "SET",
        "quantity": -2_500_000_000,
        "price": 41_012_345_678,
        "reason": "START_OF_DAY",
    },
    "BalanceChanged": {
        "event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a09",
        "currency": "USD",
        "amount": 100_000_000_000_000,
        "reason": "DEPOSIT",
    },
    "ConfigChanged": {
        "event_id": "1c0f0a52-34b6-4d8e-9a51-0c3f4f6b7a0a",
        "account_id": "*",
        "source": "operator:alice",
        "key": "risk.max_gross_exposure",
        "value_type": "DECIMAL",
        "value": 500_000_000_000_000,
        "version": 3,
        "changed_by": "operator:alice",
    },
}


def sample_for(type_name: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """The sample event of ``type_name`` restricted to ``fields``, in schema order."""
    full = {"event_type": type_name} | COMMON | SAMPLES[type_name]
    return {name: full[name] for name in fields if name in full}


def main() -> int:
    codec = default_codec()
    written = 0
    for version in default_catalog():
        folder = GOLDEN_DIR / version.snake_name
        binary, expected = folder / f"v{version.version}.bin", folder / f"v{version.version}.json"
        if binary.exists() and expected.exists():
            continue
        folder.mkdir(exist_ok=True)
        event = sample_for(version.type_name, version.field_names())
        binary.write_bytes(codec.encode(event, version=version.version))
        expected.write_text(json.dumps(event, indent=2) + "\n")
        print(f"wrote {binary.relative_to(ROOT)} and {expected.name}")
        written += 1
    print(f"{written} new golden file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
