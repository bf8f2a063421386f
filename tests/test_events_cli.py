"""``rewind simulate``, ``rewind config set`` and ``rewind position adjust`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from producers.simulator import SimulationParams, simulate
from schemas.codec import decode
from tests.kafka_helpers import create_topic, read_topic

# The commands as registered in the rewind CLI (idempotent when rewind/cli.py already registers them).
_ENTRY = (
    "from rewind import cli; from rewind.commands import events_cmd, topics_cmd; "
    "cli.cli.add_command(events_cmd.simulate); cli.cli.add_command(events_cmd.position); "
    "topics_cmd.config.add_command(events_cmd.config_set); cli.main()"
)


@pytest.fixture
def rewind(bootstrap: str, unique_name: str, tmp_path: Path) -> dict[str, str]:
    env = {
        "REWIND_BOOTSTRAP": bootstrap,
        "REWIND_HOME": str(tmp_path),
        "REWIND_TOPICS_EVENTS": f"{unique_name}-events",
        "REWIND_TOPICS_CONFIG": f"{unique_name}-config",
        "USER": "alice",
    }
    create_topic(bootstrap, env["REWIND_TOPICS_EVENTS"], partitions=3)
    create_topic(bootstrap, env["REWIND_TOPICS_CONFIG"])
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _ENTRY, *args],
        capture_output=True,
        text=True,
        env=os.environ | env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_config_set_versions_types_and_refusals(bootstrap: str, rewind: dict[str, str]) -> None:
    first = run(rewind, "config", "set", "desk.note", "quiet day", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) | {"event_id": None} == {
        "key": "desk.note",
        "value": "quiet day",
        "value_type": "STRING",
        "version": 1,
        "previous": None,
        "event_id": None,
        "topic": rewind["REWIND_TOPICS_CONFIG"],
        "partition": 0,
        "offset": 0,
    }
    second = run(rewind, "config", "set", "risk.max_gross", "1_000_000.5", "--type", "decimal")
    assert second.returncode == 0, second.stderr
    assert "risk.max_gross = 1000000.5 (DECIMAL, version 1)" in second.stdout
    third = run(rewind, "config", "set", "risk.max_gross", "2000000", "--json")
    assert json.loads(third.stdout)["value_type"] == "DECIMAL"  # the key's current type
    assert json.loads(third.stdout)["version"] == 2

    refused = run(rewind, "config", "set", "risk.max_gross", "1.123456789")
    assert refused.returncode == 1
    assert "VALUE has more than 8 decimal places" in refused.stderr
    not_bool = run(rewind, "config", "set", "trading.enabled", "maybe", "--type", "boolean")
    assert not_bool.returncode == 1 and "VALUE must be true or false" in not_bool.stderr
    bad_key = run(rewind, "config", "set", "bad key", "1")
    assert bad_key.returncode == 1 and "ConfigChanged.key must not contain whitespace" in bad_key.stderr
    usage = run(rewind, "config", "set", "only-a-key")
    assert usage.returncode == 2

    events = [decode(m.value()) for m in read_topic(bootstrap, rewind["REWIND_TOPICS_CONFIG"])]
    assert [(e["key"], e["version"], e["value"]) for e in events] == [
        ("desk.note", 1, "quiet day"),
        ("risk.max_gross", 1, 100_000_050_000_000),
        ("risk.max_gross", 2, 200_000_000_000_000),
    ]
    assert {e["changed_by"] for e in events} == {"operator:alice"}


def test_position_adjust_set_delta_and_refusals(bootstrap: str, rewind: dict[str, str]) -> None:
    set_ = run(
        rewind, "position", "adjust", "--account", "ACC-7", "--symbol", "AAPL",
        "--qty", "-150.5", "--price", "187.25", "--reason", "reconciliation",
    )  # fmt: skip
    assert set_.returncode == 0, set_.stderr
    assert "ACC-7 AAPL position set to -150.5 @ 187.25 (RECONCILIATION)" in set_.stdout
    delta = run(
        rewind, "position", "adjust", "--account", "ACC-7", "--symbol", "AAPL",
        "--delta", "10", "--price", "190", "--reason", "TRANSFER", "--json",
    )  # fmt: skip
    assert delta.returncode == 0, delta.stderr
    assert json.loads(delta.stdout)["mode"] == "DELTA"

    base = ["position", "adjust", "--account", "ACC-7", "--symbol", "AAPL", "--reason", "TRANSFER"]
    both = run(rewind, *base, "--qty", "1", "--delta", "1", "--price", "1")
    neither = run(rewind, *base, "--price", "1")
    assert (both.returncode, neither.returncode) == (2, 2)
    assert "exactly one of --qty" in both.stderr
    zero_price = run(rewind, *base, "--qty", "1", "--price", "0")
    assert zero_price.returncode == 1 and "PositionAdjusted.price must be > 0" in zero_price.stderr
    fine_price = run(rewind, *base, "--qty", "1", "--price", "0.000000001")
    assert fine_price.returncode == 1 and "--price has more than 8 decimal places" in fine_price.stderr
    zero_delta = run(rewind, *base, "--delta", "0", "--price", "1")
    assert zero_delta.returncode == 1 and "PositionAdjusted.quantity must be non-zero" in zero_delta.stderr
    desk = run(rewind, *[a if a != "ACC-7" else "*" for a in base], "--qty", "1", "--price", "1")
    assert desk.returncode == 1 and "account_id '*' is reserved" in desk.stderr

    messages = read_topic(bootstrap, rewind["REWIND_TOPICS_EVENTS"])
    assert [m.key() for m in messages] == [b"ACC-7", b"ACC-7"]
    events = [decode(m.value()) for m in messages]
    assert [(e["mode"], e["quantity"], e["price"]) for e in events] == [
        ("SET", -15_050_000_000, 18_725_000_000),
        ("DELTA", 1_000_000_000, 19_000_000_000),
    ]
    assert events[0]["source"] == "operator:alice"


def test_simulate_produces_the_deterministic_day(bootstrap: str, rewind: dict[str, str]) -> None:
    done = run(
        rewind, "simulate", "--events", "1500", "--seed", "5", "--accounts", "4",
        "--start-time", "2026-01-02T14:30:00Z", "--anomaly-rate", "0.01", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events"] == 1500 and summary["start_time"] == 1_767_364_200_000_000
    assert sum(summary["by_type"].values()) == 1500

    params = SimulationParams(
        events=1500, accounts=4, symbols=20, seed=5, start_time=1_767_364_200_000_000, anomaly_rate=0.01
    )
    expected = {e["event_id"]: e for e in simulate(params)}
    messages = read_topic(bootstrap, rewind["REWIND_TOPICS_EVENTS"]) + read_topic(
        bootstrap, rewind["REWIND_TOPICS_CONFIG"]
    )
    assert sorted(decode(m.value())["event_id"] for m in messages) == sorted(expected)
    for message in messages:
        assert decode(message.value()) == expected[decode(message.value())["event_id"]]

    readable = run(rewind, "simulate", "--events", "10", "--start-time", "2026-01-02")
    assert readable.returncode == 1 and "has no time zone" in readable.stderr
    assert run(rewind, "simulate", "--events", "0").returncode == 2
    assert run(rewind, "simulate", "--events", "5", "--anomaly-rate", "2").returncode == 2
