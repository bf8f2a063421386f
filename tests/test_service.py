"""`rewind serve` and `make run` end to end: real broker, real LMDB, real processes, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli_runner import REWIND, run_rewind
from tests.http_helpers import free_port, get
from tests.make_run import make_run, nothing_left_behind
from tests.pipeline import Pipeline

TOKEN = "test-token-123"


def _post(url: str, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_ready(url: str, process: subprocess.Popen[bytes], limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited"
        try:
            if get(f"{url}/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url}/ready did not answer 200 within {limit:.0f}s")


def _serve(pipeline: Pipeline, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | pipeline.env | {"REWIND_HTTP_TOKEN": TOKEN, "REWIND_LAG_WINDOW_SECONDS": "5"}
    return subprocess.Popen(
        [REWIND, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _metrics(url: str) -> dict[str, list[Any]]:
    status, text = get(f"{url}/metrics")
    assert status == 200
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.samples
    return families


def _wait_for(predicate: Any, limit: float = 30.0) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError("condition not reached in time")


def test_serve_reports_recovers_after_sigkill_and_snapshots_on_sigterm(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    summary = pipeline.simulate(events=6_000, seed=71, anomaly_rate=0.01)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    service = _serve(pipeline, port)
    try:
        _wait_ready(url, service)
        lag = _wait_for(
            lambda: (r := get(f"{url}/lag"))[0] == 200 and r[1]["total_lag_messages"] == 0 and r[1]
        )
        assert lag["status"] == "OK"

        assert _post(f"{url}/snapshots", "wrong")[0] == 403
        status, taken = _post(f"{url}/snapshots", TOKEN)
        assert status == 200 and {row["store"] for row in taken["snapshots"]} >= {"events-p0000", "config"}

        families = _wait_for(lambda: (m := _metrics(url)).get("rewind_snapshot_last_size_bytes") and m)
        applied = sum(s.value for s in families["rewind_events_applied"] if s.name.endswith("_total"))
        assert applied == summary.events
        lag_series = {s.labels["partition"]: s.value for s in families["rewind_consumer_lag_messages"]}
        assert set(lag_series.values()) == {0.0}
        assert "rewind_consumer_lag_seconds" in families
        recovered = [s for s in families["rewind_recovery_state"] if s.labels.get("state") == "RECOVERED"]
        assert recovered and recovered[0].value == 1.0
        assert families["rewind_recovery_progress_percent"][0].value == 100.0
        assert "rewind_batch_apply_seconds" in families

        status, error = get(f"{url}/state/positions?account=")
        assert status == 400 and error["parameter"] == "account"
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait(30)

    more = pipeline.simulate(events=3_000, seed=72)
    service = _serve(pipeline, port)
    try:
        _wait_ready(url, service)
        status, recovery = get(f"{url}/recovery/status")
        assert recovery["state"] == "RECOVERED"
        assert "unclean shutdown" in recovery["steps"]["detect"]["detail"]
        _wait_for(lambda: (r := get(f"{url}/lag"))[0] == 200 and r[1]["total_lag_messages"] == 0)
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0, service.stderr.read() if service.stderr else ""

    digest = json.loads(run_rewind("state", "digest", "--json", env=pipeline.env, check=True).stdout)
    stores = digest["stores"]
    assert sum(int(s["events_applied"]) for s in stores.values()) == summary.events + more.events
    snapshots = json.loads(run_rewind("snapshots", "list", "--json", env=pipeline.env, check=True).stdout)
    newest = {}
    for row in snapshots:
        newest.setdefault(row["store"], row)
    for name, store in stores.items():
        if int(store["offset"]) >= 0:
            assert newest[name]["offset"] == store["offset"], (
                f"{name}: the final snapshot is at the state's offset"
            )
    fresh = tmp_path / "full-replay"
    run_rewind("project", "--until-caught-up", "--state", str(fresh), env=pipeline.env, check=True)
    replayed = json.loads(
        run_rewind("state", "digest", "--json", "--state", str(fresh), env=pipeline.env, check=True).stdout
    )
    assert digest["digest"] == replayed["digest"]
    assert (pipeline.home / "state" / "CLEAN_SHUTDOWN").exists()


@pytest.mark.slow
@pytest.mark.kafka
def test_make_run_serves_ready_with_a_read_token_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    environ = {
        "REWIND_HTTP_PORT": str(port),
        "REWIND_RUN_RATE": "100",
        "REWIND_HTTP_READ_TOKEN": "make-run-read-token",
    }
    with make_run(tmp_path, home, environ, 120) as run:
        assert get(f"http://127.0.0.1:{port}/ready")[0] == 200, "/ready needs no token"
        assert get(f"http://127.0.0.1:{port}/state/positions")[0] == 401
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/state/positions",
            headers={"Authorization": "Bearer make-run-read-token"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200 and "positions" in json.loads(response.read())
    assert run.returncode == 0, run.output
    assert "stopped: nothing left running" in run.output
    assert nothing_left_behind(home), "make run left processes behind"
