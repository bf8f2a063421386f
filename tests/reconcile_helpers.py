"""Statements for reconciliation tests, computed by the independent reference model (never the
projector) from the events in the log."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from schemas.codec import decode
from schemas.errors import EventDecodeError
from tests.kafka_helpers import read_partition
from tests.pipeline import Pipeline
from tests.reference_model import OPEN, ReferenceModel

E8 = Decimal(10**8)


def reference_models(pipeline: Pipeline) -> list[ReferenceModel]:
    """One reference model per events partition, fed every decodable event of the log."""
    models = []
    for partition in range(pipeline.partitions):
        model = ReferenceModel()
        for message in read_partition(pipeline.bootstrap, pipeline.events, partition):
            offset = message.offset()
            assert offset is not None
            try:
                event = decode(message.value())
            except EventDecodeError:
                model.offset = offset
                continue
            if event["event_type"] == "ConfigChanged" or message.key() != event["account_id"].encode():
                model.offset = offset
                continue
            model.apply(event, partition, offset)
        models.append(model)
    return models


def statement_rows(models: list[ReferenceModel]) -> dict[str, dict[Any, dict[str, str]]]:
    """Positions (held), balances (non-zero) and open orders of the models, as statement rows with
    exact decimal text; average prices to 12 places."""
    positions: dict[Any, dict[str, str]] = {}
    balances: dict[Any, dict[str, str]] = {}
    orders: dict[Any, dict[str, str]] = {}
    for model in models:
        for (account, symbol), p in model.positions.items():
            if p["quantity"] == 0:
                continue
            average = (Decimal(abs(p["cost_basis"])) / (Decimal(abs(p["quantity"])) * E8)).quantize(
                Decimal("1e-12")
            )
            positions[(account, symbol)] = {
                "account": account,
                "symbol": symbol,
                "quantity": str(Decimal(p["quantity"]) / E8),
                "avg_price": str(average),
            }
        for (account, currency), amount in model.balances.items():
            if amount != 0:
                balances[(account, currency)] = {
                    "account": account,
                    "currency": currency,
                    "amount": str(Decimal(amount) / E8),
                }
        for order_id, order in model.orders.items():
            if order["status"] in OPEN:
                orders[order_id] = {
                    "order_id": order_id,
                    "remaining": str(Decimal(order["quantity"] - order["filled"]) / E8),
                }
    return {"positions": positions, "balances": balances, "orders": orders}


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_json(path: Path, rows: list[dict[str, str]], as_of: str | None = None) -> Path:
    document: object = rows if as_of is None else {"as_of": as_of, "rows": rows}
    path.write_text(json.dumps(document, indent=1))
    return path
