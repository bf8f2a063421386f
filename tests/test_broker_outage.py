"""`rewind serve` and `rewind project` when the brokers go away: a stop that always ends, a lost broker
reported once and survived, a recovery retried until the brokers are back.

Each test that stops or kills a broker runs its own (``rewind.kafka_local.LocalKafka`` in a temporary
home, stopped at the end), never the session's. Real processes, real LMDB, real HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from rewind.kafka_local import LocalKafka
from tests.cli_runner import REWIND, run_rewind
from tests.http_helpers import free_port, get, wait_for
from tests.pipeline import Pipeline

STOP_LIMIT_SECONDS = 12.0
"""The promise is 10 s from SIGTERM to exit; the rest is this machine's scheduling slack."""


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own, which its tests stop, kill and start again (same ports)."""
    broker = LocalKafka(tmp_path_factory.mktemp("private-broker"))
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(private_broker: LocalKafka) -> LocalKafka:
    """The private broker, running (a test before may have left it stopped)."""
    if private_broker.pid() is None:
        private_broker.start(timeout=120)
    return private_broker


def _address(broker: LocalKafka) -> str:
    address = broker.address()
    assert address, "the private broker wrote its address"
    return address


def _metric(url: str, name: str, **labels: str) -> float | None:
    status, text = get(f"{url}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _kill_broker(broker: LocalKafka) -> None:
    pid = broker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while broker.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert broker.pid() is None, "the broker is gone"


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [REWIND, *args],
            env=os.environ | env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )


def _stop(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM ``process``; its exit status and how long it took (killed after 120 s, failing)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
        raise AssertionError("SIGTERM did not end the process within 120 s") from None
    return code, time.monotonic() - started


def _partition_of(store: str) -> str:
    return "config" if store == "config" else str(int(store.removeprefix("events-p")))


def _digest(pipeline: Pipeline, *state: str) -> dict[str, Any]:
    args = ["state", "digest", "--json", *(["--state", state[0]] if state else [])]
    document: dict[str, Any] = json.loads(run_rewind(*args, env=pipeline.env, check=True).stdout)
    return document


def _applied(pipeline: Pipeline) -> int:
    """Events applied to the live state so far (0 before it exists)."""
    result = run_rewind("state", "digest", "--json", env=pipeline.env)
    if result.returncode != 0:
        return 0
    stores = json.loads(result.stdout)["stores"]
    return sum(int(store["events_applied"]) for store in stores.values())


# 1. A stop always ends


@pytest.mark.kafka
def test_sigterm_ends_the_process_within_10_s_after_the_broker_was_killed_and_the_state_is_intact(
    broker: LocalKafka, tmp_path: Path
) -> None:
    """Killed in the middle of a flow of events, the broker leaves offset commits in flight: closing
    the consumer then waited for them, minutes. Both `rewind serve` and `rewind project` run through
    the same broker kill, each on its own topics. The state each left equals a replay of exactly the
    events it holds: nothing was lost or applied twice."""
    commands = {
        "serve": ["serve", "--port", str(free_port())],
        "project": ["project", "--no-progress"],
    }
    pipelines = {name: Pipeline(_address(broker), f"stop-{name}", tmp_path / name) for name in commands}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    flows: list[subprocess.Popen[bytes]] = []
    stops: dict[str, tuple[int, float]] = {}
    first_events = 2_000
    try:
        for name, pipeline in pipelines.items():
            pipeline.create_topics()
            assert pipeline.simulate(events=first_events, seed=81).events == first_events
            processes[name] = _start(commands[name], pipeline.env, tmp_path / f"{name}.log")
        for name, pipeline in pipelines.items():
            wait_for(
                f"the first events applied by {name}",
                lambda p=pipeline: _applied(p) >= first_events,
                90,
                processes[name],
            )
            flows.append(
                subprocess.Popen(
                    [REWIND, "simulate", "--events", "1000000", "--seed", "82", "--rate", "400"],
                    env=os.environ | pipeline.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for name, pipeline in pipelines.items():
            wait_for(
                f"events of the flow applied by {name}",
                lambda p=pipeline: _applied(p) > first_events + 400,
                60,
                processes[name],
            )
        _kill_broker(broker)
        for flow in flows:
            flow.kill()
            flow.wait(30)
        time.sleep(2)
        for name, process in processes.items():
            stops[name] = _stop(process)
    finally:
        for running in [*flows, *processes.values()]:
            if running.poll() is None:
                running.kill()
                running.wait(30)
    for name, (code, seconds) in stops.items():
        log = (tmp_path / f"{name}.log").read_text(errors="replace")
        assert seconds <= STOP_LIMIT_SECONDS, f"{name}: SIGTERM took {seconds:.1f} s:\n{log[-3000:]}"
        assert code == 0, f"{name}: {log[-3000:]}"
        assert "Traceback" not in log, f"{name}: {log[-3000:]}"

    left = {name: _digest(pipeline) for name, pipeline in pipelines.items()}
    address = _address(broker)
    broker.start(timeout=120)
    assert broker.address() == address, "the broker is back on its own address"
    for name, pipeline in pipelines.items():
        counts = ",".join(
            f"{_partition_of(store)}:{int(row['offset']) + 1}"
            for store, row in sorted(left[name]["stores"].items())
        )
        fresh = tmp_path / f"{name}-replayed"
        empty_snapshots = pipeline.env | {"REWIND_SNAPSHOTS_DIR": str(tmp_path / f"{name}-no-snapshots")}
        run_rewind(
            "replay",
            "--to",
            counts,
            "--out",
            str(fresh),
            "--json",
            env=empty_snapshots,
            check=True,
            timeout=300,
        )
        replayed = _digest(pipeline, str(fresh))
        assert {store: row["digest"] for store, row in replayed["stores"].items()} == {
            store: row["digest"] for store, row in left[name]["stores"].items()
        }, f"{name}: the state differs from a replay of the events it holds ({counts})"


# 2. A lost broker is reported once and survived


@pytest.mark.kafka
def test_a_lost_broker_fails_health_once_logged_and_projecting_resumes_when_it_is_back(
    broker: LocalKafka, tmp_path: Path
) -> None:
    address = _address(broker)
    pipeline = Pipeline(address, "lost", tmp_path / "home")
    pipeline.create_topics()
    first = pipeline.simulate(events=1_500, seed=91)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = pipeline.env | {"REWIND_BROKER_LOST_AFTER_SECONDS": "3", "REWIND_LAG_WINDOW_SECONDS": "5"}
    log_file = tmp_path / "serve.log"
    process = _start(["serve", "--port", str(port)], env, log_file)
    try:
        wait_for("/ready", lambda: get(f"{url}/ready")[0] == 200, 90, process)
        status, health = get(f"{url}/health")
        assert status == 200 and health["status"] == "ok" and health["checks"]["broker"]["ok"] is True
        assert _metric(url, "rewind_broker_reachable") == 1.0

        broker.stop()
        status, health = wait_for(
            "/health 503", lambda: (r := get(f"{url}/health"))[0] == 503 and r, 30, process
        )
        assert health["status"] == "failing" and health["failing"] == ["broker"]
        check = health["checks"]["broker"]
        assert check["ok"] is False and check["bootstrap"] == address
        assert f"the Kafka brokers at {address} have not answered for" in check["error"]
        assert "kafka.bootstrap" in check["fix"] and check["last_contact_seconds_ago"] >= 3
        assert _metric(url, "rewind_broker_reachable") == 0.0
        assert (_metric(url, "rewind_broker_contact_age_seconds") or 0.0) >= 3
        status, ready = get(f"{url}/ready")
        assert status == 503 and any("have not answered" in reason for reason in ready["reasons"])
        time.sleep(4)  # more retries, still one line

        broker.start(timeout=120)
        assert broker.address() == address, "the broker is back on its own address"
        more = pipeline.simulate(events=700, seed=92)
        total = first.events + more.events
        wait_for("the new events applied", lambda: _applied(pipeline) == total, 90, process)
        wait_for("/health 200", lambda: get(f"{url}/health")[0] == 200, 30, process)
        assert _metric(url, "rewind_broker_reachable") == 1.0
        wait_for("/ready", lambda: get(f"{url}/ready")[0] == 200, 60, process)
    finally:
        code, seconds = _stop(process)
    log = log_file.read_text(errors="replace")
    assert code == 0 and seconds <= STOP_LIMIT_SECONDS, log[-3000:]
    lost = [line for line in log.splitlines() if "lost the Kafka brokers" in line]
    assert len(lost) == 1, log[-5000:]
    assert address in lost[0] and "fix: check that the brokers in kafka.bootstrap" in lost[0]
    assert sum("answer again" in line for line in log.splitlines()) == 1, log[-5000:]
    assert "Traceback" not in log, log[-3000:]


# 3. A failed recovery is retried


@pytest.mark.kafka
def test_a_recovery_that_fails_while_the_broker_is_down_is_retried_until_it_is_back(
    broker: LocalKafka, tmp_path: Path
) -> None:
    address = _address(broker)
    pipeline = Pipeline(address, "retry", tmp_path / "home")
    pipeline.create_topics()
    summary = pipeline.simulate(events=1_500, seed=95)
    broker.stop()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = pipeline.env | {"REWIND_BROKER_LOST_AFTER_SECONDS": "3", "REWIND_LAG_WINDOW_SECONDS": "5"}
    log_file = tmp_path / "serve.log"
    process = _start(["serve", "--port", str(port)], env, log_file)
    try:
        _, recovery = wait_for(
            "RECOVERY_FAILED after three attempts",
            lambda: (
                (r := get(f"{url}/recovery/status"))[0] == 200
                and r[1]["attempt"] >= 3
                and r[1]["state"] == "RECOVERY_FAILED"
                and r
            ),
            60,
            process,
        )
        assert recovery["retrying"] is True and recovery["next_attempt_at"].endswith("Z")
        assert 0 <= recovery["next_attempt_in_seconds"] <= 30
        assert f"the Kafka brokers at {address} do not answer" in recovery["error"]
        assert "fix: check that the brokers in kafka.bootstrap" in recovery["error"]
        assert get(f"{url}/ready")[0] == 503
        assert _metric(url, "rewind_recovery_state", state="RECOVERY_FAILED") == 1.0
        wait_for(
            "rewind_recovery_attempts >= 3",
            lambda: (_metric(url, "rewind_recovery_attempts") or 0) >= 3,
            10,
            process,
        )

        broker.start(timeout=120)
        wait_for("/ready", lambda: get(f"{url}/ready")[0] == 200, 90, process)
        status, recovery = get(f"{url}/recovery/status")
        assert recovery["state"] == "RECOVERED" and recovery["error"] is None and recovery["attempt"] >= 3
        status, positions = get(f"{url}/state/positions")
        assert status == 200 and positions["positions"], "the recovered state is served"
        assert _applied(pipeline) == summary.events
    finally:
        code, seconds = _stop(process)
    log = log_file.read_text(errors="replace")
    assert code == 0 and seconds <= STOP_LIMIT_SECONDS, log[-3000:]
    unanswered = [line for line in log.splitlines() if "recovery attempt" in line and "do not answer" in line]
    assert len(unanswered) == 1 and "recovery attempt 1 failed" in unanswered[0], log[-5000:]
    assert "recovered on attempt" in log, log[-3000:]


def test_a_failure_that_needs_a_person_is_not_retried(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """Retention deleted events the state needs: recovery stays failed with the reason, one attempt."""
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    pipeline.simulate(events=600, seed=97)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(pipeline.events, 1, 5)]).values():
        future.result()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _start(["serve", "--port", str(port)], pipeline.env, tmp_path / "serve.log")
    try:
        _, recovery = wait_for(
            "RECOVERY_FAILED",
            lambda: (r := get(f"{url}/recovery/status"))[1]["state"] == "RECOVERY_FAILED" and r,
            60,
            process,
        )
        time.sleep(2)
        _, recovery = get(f"{url}/recovery/status")
        assert recovery["state"] == "RECOVERY_FAILED" and recovery["attempt"] == 1
        assert recovery["retrying"] is False and recovery["next_attempt_at"] is None
        assert f"data loss on {pipeline.events}[1]" in recovery["error"]
    finally:
        code, _ = _stop(process)
    assert code == 1, "a service stopped without its state recovered exits 1"


def test_a_stop_that_overruns_its_deadline_exits_and_says_what_it_was_doing() -> None:
    script = (
        "import time\n"
        "from rewind.commands import stop_deadline\n"
        "stop_deadline.arm('rewind test', lambda: 'waiting for nothing', 0.5)\n"
        "time.sleep(30)\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert (
        "error: `rewind test` had not stopped 0.5 s after the stop signal (it was waiting for nothing)"
        in (result.stderr)
    )
    assert "  fix: " in result.stderr


def test_a_stop_ends_even_while_a_c_library_holds_the_interpreter_lock() -> None:
    # libc's sleep called through PyDLL keeps the GIL: no Python thread can run the report and exit,
    # so the kernel's SIGALRM ends the process.
    script = (
        "import ctypes, signal\n"
        "from rewind.commands import stop_deadline\n"
        "stop_deadline.arm('rewind test', lambda: 'stuck', 0.5)\n"
        "ctypes.PyDLL(None).sleep(30)\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 10
    assert result.returncode == -signal.SIGALRM
