"""systemd's notification protocol as rewind speaks it: datagrams on a real AF_UNIX socket standing
where systemd's would be (``NOTIFY_SOCKET``), from the module alone and from a real ``rewind serve``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from rewind.ground.settings import Settings, load_settings
from rewind.http_api import create_app, serve_http
from rewind.sd_notify import Supervisor, event_loop_answers, notify, notify_address, watchdog_seconds
from rewind.service_view import ServiceView
from tests.cli_runner import REWIND
from tests.http_helpers import free_port, get
from tests.pipeline import Pipeline

LIMIT_SECONDS = 90.0
"""How long a test waits for a datagram before it fails (a bound, not a measurement)."""


@pytest.fixture(autouse=True)
def _no_inherited_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test run under systemd must not notify the real supervisor."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


class NotifySocket:
    """A datagram socket where systemd's would be; ``environ`` points a process at it."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        self.environ = {"NOTIFY_SOCKET": name}
        self.received: list[dict[str, str]] = []

    def receive(
        self,
        until: Callable[[list[dict[str, str]]], bool],
        process: subprocess.Popen[bytes] | None = None,
    ) -> list[dict[str, str]]:
        """Read datagrams (each as its ``KEY=value`` lines) until ``until(every one so far)``."""
        deadline = time.monotonic() + LIMIT_SECONDS
        while not until(self.received):
            assert time.monotonic() < deadline, f"not within {LIMIT_SECONDS:.0f} s; got {self.received}"
            if process is not None:
                assert process.poll() is None, f"the process exited ({process.returncode}): {self.received}"
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            self.received.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        return self.received


@contextmanager
def notify_socket(path: Path | None = None) -> Iterator[NotifySocket]:
    """At ``path``, or in the abstract namespace without one (``@name``, as systemd may pass it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if path is None:
            name = f"@rewind-test-{uuid.uuid4().hex}"
            sock.bind(b"\0" + name[1:].encode())
        else:
            name = str(path)
            sock.bind(name)
        sock.settimeout(0.5)
        yield NotifySocket(sock, name)


def _with(messages: list[dict[str, str]], key: str, value: str | None = None) -> list[dict[str, str]]:
    return [m for m in messages if key in m and (value is None or m[key] == value)]


# The module


def test_notify_reaches_a_socket_by_path_and_by_abstract_name(tmp_path: Path) -> None:
    for where in (tmp_path / "notify", None):
        with notify_socket(where) as systemd:
            assert notify("READY=1\nSTATUS=testing", systemd.environ)
            (message,) = systemd.receive(lambda got: len(got) == 1)
            assert message == {"READY": "1", "STATUS": "testing"}


def test_nothing_is_sent_and_no_thread_runs_without_notify_socket() -> None:
    assert notify_address({}) is None and notify_address({"NOTIFY_SOCKET": "vsock:2:1"}) is None
    assert not notify("READY=1", {})
    supervisor = Supervisor({"WATCHDOG_USEC": "1000000"})
    assert not supervisor.supervised
    supervisor.start(lambda timeout: True, lambda: "doing")
    supervisor.ready("serving")
    supervisor.stopping()
    assert "sd-notify" not in {thread.name for thread in threading.enumerate()}


def test_the_watchdog_is_this_processs_only_when_systemd_says_so() -> None:
    assert watchdog_seconds({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert watchdog_seconds({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert watchdog_seconds({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_seconds({}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_seconds({"WATCHDOG_USEC": "ten"}) is None
    assert Supervisor({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "10000000"}).watchdog_interval == 5.0


def test_ready_and_stopping_are_sent_once_each(tmp_path: Path) -> None:
    with notify_socket(tmp_path / "notify") as systemd:
        supervisor = Supervisor(systemd.environ)
        supervisor.ready("serving the recovered state")
        supervisor.ready("serving the recovered state")
        supervisor.stopping()
        supervisor.stopping()
        notify("END=1", systemd.environ)
        got = systemd.receive(lambda got: bool(_with(got, "END")))
    assert got == [
        {"READY": "1", "STATUS": "serving the recovered state"},
        {"STOPPING": "1", "STATUS": "stopping"},
        {"END": "1"},
    ]


def test_the_watchdog_is_fed_only_while_the_loop_answers_and_status_follows_what_it_does(
    tmp_path: Path,
) -> None:
    asked: list[float] = []
    doing = ["recovering"]

    def alive(timeout: float) -> bool:
        asked.append(timeout)
        return len(asked) > 3

    with notify_socket(tmp_path / "notify") as systemd:
        supervisor = Supervisor(systemd.environ | {"WATCHDOG_USEC": "200000"})
        supervisor.start(alive, lambda: doing[0])
        try:
            got = systemd.receive(lambda got: len(_with(got, "WATCHDOG")) >= 2)
            doing[0] = "following the log"
            got = systemd.receive(lambda got: bool(_with(got, "STATUS", "following the log")))
        finally:
            supervisor.close()
    assert got[0] == {"STATUS": "recovering"}, "the first three asks went unanswered: no WATCHDOG=1"
    assert len(_with(got, "WATCHDOG")) <= len(asked) - 3
    assert [m["STATUS"] for m in _with(got, "STATUS")] == ["recovering", "following the log"]
    assert set(asked) == {0.05}, "each ask may take half the ping interval"


class _Failing:
    """An API whose only check fails: /health answers 503."""

    def settings(self) -> Settings:
        return load_settings(environ={})

    def health_checks(self) -> dict[str, dict[str, Any]]:
        return {"broker": {"ok": False, "error": "the Kafka brokers do not answer", "fix": "start them"}}

    def metrics_registry(self) -> CollectorRegistry:
        return CollectorRegistry()


def test_the_event_loop_answers_with_a_503_too_and_not_once_stopped() -> None:
    server = serve_http(create_app(cast(ServiceView, _Failing())), "127.0.0.1", 0)
    try:
        assert get(f"{server.url}/health")[0] == 503
        assert event_loop_answers(server.host, server.port, 5.0)
    finally:
        server.stop()
    assert not event_loop_answers(server.host, server.port, 5.0)


# A real rewind serve


def _serve(pipeline: Pipeline, port: int, systemd: NotifySocket, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | pipeline.env | systemd.environ | {"WATCHDOG_USEC": "1000000"}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [REWIND, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def _metric(url: str, name: str) -> float | None:
    status, text = get(f"{url}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def test_serve_says_ready_once_recovered_feeds_the_watchdog_and_says_stopping(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    pipeline.simulate(events=500, seed=31)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with notify_socket(tmp_path / "notify") as systemd:
        process = _serve(pipeline, port, systemd, tmp_path / "serve.log")
        try:
            systemd.receive(lambda got: bool(_with(got, "READY", "1")), process)
            status, recovery = get(f"{url}/recovery/status")
            assert status == 200 and recovery["state"] == "RECOVERED", "READY=1 comes after the recovery"
            assert get(f"{url}/state/positions")[0] == 200, "and the state is served by then"
            ready_at = len(systemd.received)
            systemd.receive(lambda got: bool(_with(got[ready_at:], "WATCHDOG", "1")), process)
            process.send_signal(signal.SIGTERM)
            got = systemd.receive(lambda got: bool(_with(got, "STOPPING", "1")))
        finally:
            code = _stop(process)
    assert code == 0, (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
    assert len(_with(got, "READY")) == 1
    assert _with(got, "STATUS"), "systemctl status shows what it is doing"
    assert got.index(_with(got, "READY")[0]) < got.index(_with(got, "STOPPING")[0])


def test_serve_whose_recovery_needs_a_person_never_says_ready_but_stays_watched(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """Retention deleted events the state needs: no READY=1 (systemd's start timeout then restarts
    it), the watchdog fed while it reports the failure, and the data-loss series its alert reads."""
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    pipeline.simulate(events=300, seed=37)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(pipeline.events, 1, 5)]).values():
        future.result()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with notify_socket(tmp_path / "notify") as systemd:
        process = _serve(pipeline, port, systemd, tmp_path / "serve.log")
        try:
            failed = "reporting a failed recovery"
            systemd.receive(lambda got: bool(_with(got, "STATUS", failed)), process)
            after = len(systemd.received)
            got = systemd.receive(lambda got: bool(_with(got[after:], "WATCHDOG", "1")), process)
            assert not _with(got, "READY"), got
            _, recovery = get(f"{url}/recovery/status")
            assert recovery["state"] == "RECOVERY_FAILED" and recovery["retrying"] is False
            assert _metric(url, "rewind_recovery_data_loss") == 1.0
            assert _metric(url, "rewind_recovery_rto_target_seconds") == 2.0
        finally:
            code = _stop(process)
    assert code == 1, "stopped without its state recovered"
