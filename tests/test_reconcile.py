"""`rewind reconcile` end to end: real broker, real LMDB, the real CLI, and statements computed by the
independent reference model (tests/reference_model.py), never by the projector."""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from producers import builders
from tests.cli_runner import run_rewind
from tests.pipeline import Pipeline
from tests.reconcile_helpers import reference_models, statement_rows, write_csv, write_json

E8 = 10**8
POSITION_COLUMNS = ["account", "symbol", "quantity", "avg_price"]


@pytest.fixture
def pipeline(bootstrap: str, unique_name: str, tmp_path: Path) -> Pipeline:
    made = Pipeline(bootstrap, unique_name, tmp_path / "home")
    made.create_topics()
    return made


def _project(pipeline: Pipeline) -> None:
    run_rewind("project", "--until-caught-up", env=pipeline.env, timeout=300, check=True)


def _reconcile(pipeline: Pipeline, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_rewind("reconcile", "--json", *args, env=pipeline.env, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _found(document: dict[str, Any]) -> set[tuple[str, str, str | None, str]]:
    return {(b["kind"], b["entity"], b["account"], b["key"]) for b in document["breaks"]}


def _digests(pipeline: Pipeline) -> dict[str, str]:
    shown = json.loads(run_rewind("state", "digest", "--json", env=pipeline.env, check=True).stdout)
    return {name: store["digest"] for name, store in shown["stores"].items()}


def test_every_injected_break_is_found_and_none_is_invented(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.simulate(events=3000, seed=5, accounts=6)
    _project(pipeline)
    rows = statement_rows(reference_models(pipeline))
    positions, balances, orders = rows["positions"], rows["balances"], rows["orders"]
    assert len(positions) > 10 and len(balances) > 3 and len(orders) > 3

    clean = _reconcile(
        pipeline,
        "--positions",
        str(write_csv(tmp_path / "p0.csv", list(positions.values()), POSITION_COLUMNS)),
        "--balances",
        str(write_json(tmp_path / "b0.json", list(balances.values()))),
        "--orders",
        str(write_csv(tmp_path / "o0.csv", list(orders.values()), ["order_id", "remaining"])),
    )
    assert clean[0] == 0 and clean[1]["breaks"] == [], clean[1]["breaks"]
    assert clean[1]["matches"] == {
        "positions": len(positions),
        "balances": len(balances),
        "orders": len(orders),
    }

    expected: set[tuple[str, str, str | None, str]] = set()
    keys = sorted(positions)
    gone, more, repriced, within = keys[0], keys[1], keys[2], keys[3]
    del positions[gone]
    expected.add(("missing_in_statement", "position", *gone))
    positions[more] = dict(positions[more], quantity=str(float_free_add(positions[more]["quantity"], "1.5")))
    expected.add(("quantity_differs", "position", *more))
    positions[repriced] = dict(
        positions[repriced], avg_price=float_free_add(positions[repriced]["avg_price"], "0.01")
    )
    expected.add(("price_differs", "position", *repriced))
    positions[within] = dict(
        positions[within], avg_price=float_free_add(positions[within]["avg_price"], "0.0000005")
    )
    positions[("ACC-GHOST", "ZZZ")] = {
        "account": "ACC-GHOST",
        "symbol": "ZZZ",
        "quantity": "7",
        "avg_price": "3",
    }
    expected.add(("missing_in_rewind", "position", "ACC-GHOST", "ZZZ"))

    bkeys = sorted(balances)
    moved, dropped, nearly = bkeys[0], bkeys[1], bkeys[2]
    balances[moved] = dict(balances[moved], amount=float_free_add(balances[moved]["amount"], "-1"))
    expected.add(("balance_differs", "balance", *moved))
    del balances[dropped]
    expected.add(("missing_in_statement", "balance", *dropped))
    balances[nearly] = dict(balances[nearly], amount=float_free_add(balances[nearly]["amount"], "0.005"))
    account = bkeys[0][0]
    balances[(account, "CHF")] = {"account": account, "currency": "CHF", "amount": "250"}
    expected.add(("missing_in_rewind", "balance", account, "CHF"))

    okeys = sorted(orders)
    short, unlisted = okeys[0], okeys[1]
    orders[short] = dict(orders[short], remaining=float_free_add(orders[short]["remaining"], "1"))
    del orders[unlisted]
    orders["O-NOT-IN-REWIND"] = {"order_id": "O-NOT-IN-REWIND", "remaining": "10"}

    code, document = _reconcile(
        pipeline,
        "--positions",
        str(write_csv(tmp_path / "p.csv", list(positions.values()), POSITION_COLUMNS)),
        "--balances",
        str(write_json(tmp_path / "b.json", list(balances.values()))),
        "--orders",
        str(write_csv(tmp_path / "o.csv", list(orders.values()), ["order_id", "remaining"])),
        "--csv",
        str(tmp_path / "breaks.csv"),
    )
    assert code == 1
    found = _found(document)
    order_breaks = {b for b in found if b[1] == "order"}
    assert {(k, key) for k, _e, _a, key in order_breaks} == {
        ("remaining_differs", short),
        ("missing_in_statement", unlisted),
        ("missing_in_rewind", "O-NOT-IN-REWIND"),
    }
    assert found - order_breaks == expected
    by_kind = document["breaks_by_kind"]
    assert by_kind == {
        "missing_in_rewind": 3,
        "missing_in_statement": 3,
        "quantity_differs": 1,
        "price_differs": 1,
        "balance_differs": 1,
        "remaining_differs": 1,
    }
    assert document["matches"]["positions"] == document["compared"]["positions"] - 4
    for item in document["breaks"]:
        if (
            item["entity"] in ("position", "balance")
            and item["account"] != "ACC-GHOST"
            and item["key"] != "CHF"
        ):
            assert item["last_events"], f"no history for {item}"
            last = item["last_events"][-1]
            assert last["account_id"] == item["account"]
    with (tmp_path / "breaks.csv").open() as handle:
        shown = list(csv.DictReader(handle))
    assert {(r["kind"], r["entity"], r["key"]) for r in shown} == {(k, e, key) for k, e, _a, key in found}

    text = run_rewind("reconcile", "--positions", str(tmp_path / "p.csv"), env=pipeline.env, timeout=300)
    assert text.returncode == 1
    assert "quantity_differs" in text.stdout and "last:" in text.stdout


def float_free_add(text: str, delta: str) -> str:
    """``text + delta`` in exact decimals."""
    return str(Decimal(text) + Decimal(delta))


def test_a_statement_as_of_a_past_time_matches_after_later_events(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.simulate(events=1500, seed=9, accounts=4)
    time.sleep(0.05)
    moment = datetime.now(UTC)
    time.sleep(0.05)
    earlier = statement_rows(reference_models(pipeline))
    statement = write_json(tmp_path / "eod.json", list(earlier["positions"].values()), moment.isoformat())
    balances = write_json(
        tmp_path / "eod-balances.json", list(earlier["balances"].values()), moment.isoformat()
    )
    (account, symbol) = sorted(earlier["positions"])[0]
    (b_account, currency) = sorted(earlier["balances"])[0]
    later = [
        builders.position_adjusted(
            account_id=account,
            symbol=symbol,
            mode="DELTA",
            quantity=5 * E8,
            price=2 * E8,
            reason="TRANSFER",
            source="test",
        ),
        builders.balance_changed(
            account_id=b_account, currency=currency, amount=-3 * E8, reason="WITHDRAWAL", source="test"
        ),
        builders.position_adjusted(
            account_id=account,
            symbol="NEW-SYM",
            mode="SET",
            quantity=4 * E8,
            price=E8,
            reason="TRANSFER",
            source="test",
        ),
    ]
    with pipeline.producer() as producer:
        for event in later:
            producer.emit(event)
    _project(pipeline)

    code, document = _reconcile(pipeline, "--positions", str(statement), "--balances", str(balances))
    assert code == 0, document["breaks"]
    assert document["compared_with"]["source"].startswith("time travel to ")

    code, document = _reconcile(
        pipeline, "--positions", str(statement), "--balances", str(balances), "--as-of", "live"
    )
    assert code == 1
    now_rows = statement_rows(reference_models(pipeline))
    changed = {
        key
        for key in set(earlier["positions"]) | set(now_rows["positions"])
        if earlier["positions"].get(key) != now_rows["positions"].get(key)
    }
    assert {(b["account"], b["key"]) for b in document["breaks"] if b["entity"] == "position"} == changed
    assert (account, symbol) in changed and (account, "NEW-SYM") in changed
    assert {(b["kind"], b["account"], b["key"]) for b in document["breaks"] if b["entity"] == "balance"} == {
        ("balance_differs", b_account, currency)
    }
    newest = {b["key"]: b["last_events"][-1]["event_type"] for b in document["breaks"]}
    assert newest["NEW-SYM"] == "PositionAdjusted" and newest[currency] == "BalanceChanged"

    code, same = _reconcile(
        pipeline, "--positions", str(statement), "--balances", str(balances), "--as-of", "now"
    )
    assert code == 1 and _found(same) == _found(document)


def test_propose_apply_and_reconcile_again_is_clean_and_equals_a_full_replay(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.simulate(events=2000, seed=3, accounts=5)
    _project(pipeline)
    rows = statement_rows(reference_models(pipeline))
    positions, balances = rows["positions"], rows["balances"]
    keys = sorted(positions)
    del positions[keys[0]]
    positions[keys[1]] = dict(
        positions[keys[1]], quantity=float_free_add(positions[keys[1]]["quantity"], "-2")
    )
    positions[keys[2]] = dict(
        positions[keys[2]], avg_price=float_free_add(positions[keys[2]]["avg_price"], "0.5")
    )
    positions[("ACC-NEW", "XYZ")] = {
        "account": "ACC-NEW",
        "symbol": "XYZ",
        "quantity": "-12.5",
        "avg_price": "40.123456789",
    }
    bkey = sorted(balances)[0]
    balances[bkey] = dict(balances[bkey], amount=float_free_add(balances[bkey]["amount"], "123.45"))
    balances[("ACC-NEW", "EUR")] = {"account": "ACC-NEW", "currency": "EUR", "amount": "1000"}
    files = [
        "--positions",
        str(write_csv(tmp_path / "positions.csv", list(positions.values()), POSITION_COLUMNS)),
        "--balances",
        str(write_csv(tmp_path / "balances.csv", list(balances.values()), ["account", "currency", "amount"])),
    ]
    proposal = tmp_path / "proposal.json"
    code, document = _reconcile(pipeline, *files, "--propose", str(proposal))
    assert code == 1 and len(document["breaks"]) == 6
    proposed = json.loads(proposal.read_text())
    assert len(proposed["events"]) == 6 and proposed["uncorrected"] == []
    checksum = proposed["statement"]["checksum"]
    for event in proposed["events"]:
        assert event["source"] == f"reconciliation:positions.csv+balances.csv:{checksum[:16]}"
        assert event["reason"] in ("RECONCILIATION", "ADJUSTMENT")

    refused = run_rewind("reconcile", "--apply", str(proposal), env=pipeline.env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    applied = run_rewind(
        "reconcile", "--apply", str(proposal), "--yes", "--json", env=pipeline.env, check=True
    )
    assert json.loads(applied.stdout)["applied"] == 6
    _project(pipeline)
    code, again = _reconcile(pipeline, *files)
    assert code == 0, again["breaks"]
    digests = _digests(pipeline)
    assert digests == pipeline.reference_digests()
    fresh = tmp_path / "full-replay"
    run_rewind(
        "project", "--until-caught-up", "--state", str(fresh), env=pipeline.env, timeout=300, check=True
    )
    replayed = json.loads(
        run_rewind("state", "digest", "--json", "--state", str(fresh), env=pipeline.env, check=True).stdout
    )
    assert {name: store["digest"] for name, store in replayed["stores"].items()} == digests

    # the same file again: the projector drops every id it already applied
    run_rewind("reconcile", "--apply", str(proposal), "--yes", env=pipeline.env, check=True)
    _project(pipeline)
    code, twice = _reconcile(pipeline, *files)
    assert code == 0 and twice["breaks"] == []
    state = json.loads(run_rewind("state", "positions", "--json", env=pipeline.env, check=True).stdout)
    assert {(p["account_id"], p["symbol"]) for p in state if p["quantity"] != "0"} == set(positions)
    anomalies = json.loads(run_rewind("state", "anomalies", "--json", env=pipeline.env, check=True).stdout)
    duplicates = [a for a in anomalies if a["kind"] == "DUPLICATE_EVENT"]
    assert len(duplicates) == 6
    assert _digests(pipeline) == pipeline.reference_digests()
