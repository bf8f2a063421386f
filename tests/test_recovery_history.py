"""The recovery history: its file (torn lines, bound), its reasons, `rewind recovery history`, and
`GET /recovery/history` after a SIGKILL, a corrupt snapshot and an API rebuild of a real service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from replayer.recovery_history import MAX_RECORDS, Cause, Reason, build_record, classify, format_table
from replayer.recovery_history_file import DAMAGE_MARKER, HISTORY_FILE_NAME, append_record, read_history
from tests.cli_runner import REWIND, run_rewind
from tests.fold_events import balance
from tests.http_helpers import free_port, get, wait_for
from tests.openapi_check import errors, response_schema
from tests.pipeline import Pipeline

TOKEN = "history-token"
PHASES = ["detect", "restore", "replay", "validate"]


def _record(number: int, reason: Reason = Reason.UNCLEAN_SHUTDOWN) -> dict[str, Any]:
    return build_record(
        record_id=f"r{number}",
        cause=Cause(reason, f"record {number}"),
        state_dir="/state",
        started=1_700_000_000.0 + number,
        ended=1_700_000_000.5 + number,
        last_commit_at=1_699_999_990.0 + number,
        attempts=1,
        phases=[],
        rejected=[],
        error=None,
        digest="d",
    )


def test_a_torn_last_line_is_skipped_with_a_warning_and_the_next_record_starts_a_line(tmp_path: Path) -> None:
    path = tmp_path / HISTORY_FILE_NAME
    append_record(path, _record(1))
    append_record(path, _record(2))
    whole = json.dumps(_record(3))
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(whole[: len(whole) // 2])  # a crash in the middle of an append

    records, warnings = read_history(path)
    assert [r["id"] for r in records] == ["r2", "r1"]
    assert warnings == ["line 3 of the recovery history is damaged and was skipped"]

    append_record(path, _record(4))
    records, warnings = read_history(path)
    assert [r["id"] for r in records] == ["r4", "r2", "r1"]
    assert len(warnings) == 1

    shown = run_rewind("recovery", "history", "--json", env={"REWIND_HOME": str(tmp_path)})
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr and "line 3 of the recovery history is damaged" in shown.stderr
    document = json.loads(shown.stdout)
    assert [r["id"] for r in document["history"]] == ["r4", "r2", "r1"]
    assert document["damaged_lines"] == 1


def test_the_history_keeps_the_newest_records_only(tmp_path: Path) -> None:
    path = tmp_path / HISTORY_FILE_NAME
    for number in range(MAX_RECORDS + 5):
        append_record(path, _record(number))
    records, warnings = read_history(path, limit=MAX_RECORDS + 50)
    assert not warnings
    assert len(records) == MAX_RECORDS
    assert records[0]["id"] == f"r{MAX_RECORDS + 4}" and records[-1]["id"] == "r5"
    assert len(path.read_text().splitlines()) == MAX_RECORDS


def test_the_reason_prefers_an_operator_then_damage_then_the_clean_shutdown_marker() -> None:
    assert classify(requested_by="api", clean_marker=True, damage="x").reason == Reason.OPERATOR_REQUEST
    assert classify(requested_by="cli", clean_marker=False, damage=None).requested_by == "cli"
    assert classify(requested_by=None, clean_marker=True, damage="row k").reason == Reason.CORRUPTION
    assert classify(requested_by=None, clean_marker=False, damage=None).reason == Reason.UNCLEAN_SHUTDOWN
    assert classify(requested_by=None, clean_marker=True, damage=None).reason == Reason.CLEAN_RESTART
    rejected = [{"store": "events-p0001", "reason": "checksum mismatch"}]
    unclean = classify(requested_by=None, clean_marker=False, damage=None)
    kept = build_record(
        record_id="x",
        cause=unclean,
        state_dir="/s",
        started=10.0,
        ended=12.0,
        last_commit_at=None,
        attempts=2,
        phases=[],
        rejected=rejected,
        error=None,
        digest="d",
    )
    assert kept["reason"] == "corruption" and "unclean shutdown" in kept["detail"]
    assert kept["downtime_seconds"] is None and kept["kind"] == "recovery"
    failed = build_record(
        record_id="y",
        cause=classify(requested_by="api", clean_marker=False, damage=None),
        state_dir="/s",
        started=10.0,
        ended=12.0,
        last_commit_at=5.0,
        attempts=1,
        phases=[],
        rejected=rejected,
        error="boom",
        digest="d",
    )
    assert failed["reason"] == "operator_request" and failed["kind"] == "rebuild"
    assert failed["outcome"] == "failed" and failed["error"] == "boom"
    assert failed["downtime_seconds"] is None and failed["digest"] is None
    table = format_table([failed, kept])
    assert table.splitlines()[0].split() == [
        "STARTED",
        "KIND",
        "REASON",
        "OUTCOME",
        "DURATION_S",
        "DOWNTIME_S",
        "ATTEMPTS",
    ]
    assert "rejected snapshot (events-p0001): checksum mismatch" in table and "error: boom" in table


# Real services


@pytest.fixture
def pipeline(bootstrap: str, unique_name: str, tmp_path: Path) -> Pipeline:
    made = Pipeline(bootstrap, unique_name, tmp_path / "home")
    made.create_topics()
    return made


def _serve(pipeline: Pipeline, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | pipeline.env | {"REWIND_HTTP_TOKEN": TOKEN}
    return subprocess.Popen(
        [REWIND, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait(predicate: Any, process: subprocess.Popen[bytes], what: str, limit: float = 120.0) -> Any:
    return wait_for(what, predicate, limit, process)


def _history(url: str) -> list[dict[str, Any]]:
    status, body = get(f"{url}/recovery/history")
    assert status == 200, body
    assert errors(response_schema("get", "/recovery/history", 200, "application/json"), body) == []
    assert body["damaged_lines"] == 0
    return list(body["history"])


def _post_rebuild(url: str) -> int:
    request = urllib.request.Request(
        f"{url}/rebuild", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _stop(service: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if service.poll() is None:
        service.send_signal(sig)
    service.wait(60)


def test_history_after_a_sigkill_and_an_api_rebuild(pipeline: Pipeline) -> None:
    pipeline.simulate(events=4_000, seed=91)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = _serve(pipeline, port)
    try:
        _wait(lambda: get(f"{url}/ready")[0] == 200, service, "first start ready")
        first = _history(url)
        assert len(first) == 1 and first[0]["reason"] == "unclean_shutdown"
        assert first[0]["last_commit_at"] is None and first[0]["downtime_seconds"] is None
    finally:
        _stop(service, signal.SIGKILL)

    service = _serve(pipeline, port)
    try:
        _wait(lambda: get(f"{url}/ready")[0] == 200, service, "ready after SIGKILL")
        records = _history(url)
        assert len(records) == 2
        killed = records[0]
        assert killed["reason"] == "unclean_shutdown" and killed["kind"] == "recovery"
        assert killed["outcome"] == "live" and killed["error"] is None
        assert killed["last_commit_at"] is not None and killed["downtime_seconds"] > 0
        assert [p["name"] for p in killed["phases"]] == PHASES
        assert all(p["status"] == "done" and p["seconds"] is not None for p in killed["phases"])
        assert killed["started_at"] <= killed["phases"][1]["started_at"] <= killed["ended_at"]

        assert _post_rebuild(url) == 202
        rebuilt = _wait(
            lambda: (r := _history(url)) and len(r) == 3 and get(f"{url}/ready")[0] == 200 and r[0],
            service,
            "rebuild recorded",
        )
        assert rebuilt["reason"] == "operator_request" and rebuilt["kind"] == "rebuild"
        assert rebuilt["requested_by"] == "api" and "POST /rebuild" in rebuilt["detail"]
        assert rebuilt["outcome"] == "live" and rebuilt["downtime_seconds"] > 0
        status, families = get(f"{url}/metrics")
        assert status == 200
        assert 'rewind_recovery_last_duration_seconds{outcome="live",reason="operator_request"}' in families
        assert 'rewind_recovery_last_downtime_seconds{reason="unclean_shutdown"}' in families
    finally:
        _stop(service, signal.SIGTERM)

    shown = run_rewind("recovery", "history", "--json", env=pipeline.env, check=True)
    assert [r["reason"] for r in json.loads(shown.stdout)["history"]] == [
        "operator_request",
        "unclean_shutdown",
        "unclean_shutdown",
    ]
    table = run_rewind("recovery", "history", env=pipeline.env, check=True).stdout
    assert table.splitlines()[0].startswith("STARTED") and "operator_request" in table
    assert "phases: detect" in table


def test_history_lists_a_corrupt_snapshot_it_passed_over(pipeline: Pipeline) -> None:
    pipeline.simulate(events=4_000, seed=92)
    run_rewind("project", "--until-caught-up", env=pipeline.env, timeout=300, check=True)
    run_rewind("snapshot", "--json", env=pipeline.env, check=True)
    pipeline.simulate(events=4_000, seed=93)
    run_rewind("project", "--until-caught-up", env=pipeline.env, timeout=300, check=True)
    newer = {r["store"]: r for r in json.loads(run_rewind("snapshot", "--json", env=pipeline.env).stdout)}
    data = Path(str(newer["events-p0001"]["path"])) / "data.mdb"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))

    run_rewind("recover", "--json", env=pipeline.env, timeout=300, check=True)
    (by_hand,) = json.loads(run_rewind("recovery", "history", "--json", env=pipeline.env).stdout)["history"]
    assert by_hand["reason"] == "operator_request" and by_hand["requested_by"] == "cli"
    assert by_hand["kind"] == "rebuild" and by_hand["outcome"] == "live"
    assert by_hand["downtime_seconds"] > 0
    assert [(r["store"], "checksum mismatch" in r["reason"]) for r in by_hand["rejected_snapshots"]] == [
        ("events-p0001", True)
    ]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = _serve(pipeline, port)
    try:
        _wait(lambda: get(f"{url}/ready")[0] == 200, service, "ready")
        started = _history(url)[0]
    finally:
        _stop(service, signal.SIGKILL)
    assert started["reason"] == "corruption" and started["kind"] == "recovery"
    assert "unclean shutdown" in started["detail"] and "1 corrupt snapshot passed over" in started["detail"]
    assert [r["store"] for r in started["rejected_snapshots"]] == ["events-p0001"]
    assert "checksum mismatch" in started["rejected_snapshots"][0]["reason"]


GOOD = b"[1,266519103000000]"
BAD = b"[1,296519103000000]"


def test_the_start_after_a_damaged_row_stopped_the_service_is_recorded_as_corruption(
    pipeline: Pipeline,
) -> None:
    with pipeline.producer() as producer:
        partition, _ = producer.emit(balance("CHF", "2665191.03", account="ACC-0001"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = _serve(pipeline, port)
    try:
        _wait(lambda: get(f"{url}/ready")[0] == 200, service, "ready")
        data = pipeline.home / "state" / f"events-p{partition:04d}" / "data.mdb"
        raw = data.read_bytes()
        assert raw.count(GOOD) == 1, "the balance row is stored exactly once"
        with open(data, "r+b") as handle:  # in place: the service has the file mapped
            handle.seek(raw.index(GOOD))
            handle.write(BAD)
        with pipeline.producer() as producer:
            producer.emit(balance("CHF", "1.00", account="ACC-0001"))
        service.wait(120)
    finally:
        _stop(service, signal.SIGKILL)
    assert (pipeline.home / "state" / DAMAGE_MARKER).exists()

    service = _serve(pipeline, port)
    try:
        _wait(lambda: get(f"{url}/ready")[0] == 200, service, "ready after the damage")
        after = _history(url)[0]
    finally:
        _stop(service, signal.SIGKILL)
    assert after["reason"] == "corruption" and after["outcome"] == "live"
    assert "the balances row with key b'ACC-0001\\x00CHF' is damaged" in after["detail"]
    assert not (pipeline.home / "state" / DAMAGE_MARKER).exists()
