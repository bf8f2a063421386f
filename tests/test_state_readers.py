"""State reads answered by reader processes: the same bytes and errors as the in-process path, a
reader that dies replaced, a swapped state directory read afresh, and no reader outliving a stop.

Real LMDB state built by the real fold, real reader processes; the HTTP comparisons run the real
API on 127.0.0.1. The last test runs ``rewind serve`` against the test broker.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from projector.lmdb_state import EntityCache, LmdbConfigState, LmdbPartitionState
from projector.policy import QUARANTINE, ConfigStep, EventsStep
from projector.state_directory import StateDirectory
from projector.store import DATA_FILE
from rewind.ground.errors import DamagedState, RewindError
from rewind.ground.settings import Settings, load_settings
from rewind.http_api import create_app, serve_http
from rewind.state_readers import DOCUMENTS, ReaderGone, StateReaders, render
from tests import fold_events as ev
from tests.cli_runner import REWIND
from tests.http_helpers import free_port, get, wait_for
from tests.pipeline import Pipeline
from tests.process_helpers import child_pids, is_alive

GOOD = b"[1,266519103000000]"
BAD = b"[1,296519103000000]"
D = 10**8


def _build(root: Path, orders: list[str], amount: str = "2665191.03") -> Settings:
    """ACC-0001 (a CHF balance of ``amount``, ``orders``, a fill) on partition 0, ACC-0002 on
    partition 1, two config entries."""
    settings = load_settings(environ={"REWIND_HOME": str(root.parent / "home")})
    with StateDirectory.open(root, settings, durable=False) as directory:
        store = directory.partition(0)
        state = LmdbPartitionState(store, EntityCache())
        step = EventsStep(state, 0, QUARANTINE, store.offset())
        events = [ev.balance("CHF", amount, account="ACC-0001")]
        events += [ev.submitted(order, "10", "5", account="ACC-0001") for order in orders]
        events.append(ev.fill("E1", orders[0], "10", "5", account="ACC-0001"))
        ev.apply_in_order(step, events)
        store.commit(state.changes(), step.offset, len(events))
        store = directory.partition(1)
        state = LmdbPartitionState(store, EntityCache())
        step = EventsStep(state, 1, QUARANTINE, store.offset())
        events = [
            ev.balance("EUR", "500", account="ACC-0002"),
            ev.adjusted("MSFT", "SET", "20", "250", account="ACC-0002"),
        ]
        ev.apply_in_order(step, events)
        store.commit(state.changes(), step.offset, len(events))
        config = directory.config()
        config_state = LmdbConfigState(config)
        config_step = ConfigStep(config_state, QUARANTINE, config.offset())
        entries = [ev.config("risk.max_gross_exposure", 10_000 * D, 1, "DECIMAL"), ev.config("desk", "eq", 1)]
        ev.apply_in_order(config_step, entries)
        config.commit(config_state.changes(), config_step.offset, len(entries))
    return settings


def _eventually(predicate: Callable[[], object], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "not within the limit"
        time.sleep(0.05)


READS: list[tuple[str, tuple[str | None, ...]]] = [
    ("positions", (None, None)),
    ("positions", ("ACC-0001", None)),
    ("positions", ("ACC-0002", "MSFT")),
    ("positions", ("NOBODY", None)),
    ("order", ("O-1",)),
    ("order", ("O-NONE",)),
    ("account", ("ACC-0001",)),
    ("account", ("ACC-0002",)),
    ("account", ("NOBODY",)),
    ("config", ()),
]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDirectory]:
    _build(tmp_path / "state", ["O-1", "O-2"])
    with StateDirectory.open_readonly(tmp_path / "state") as directory:
        yield directory


@pytest.fixture
def readers() -> Iterator[StateReaders]:
    pool = StateReaders(2)
    try:
        yield pool
    finally:
        pool.close()


def _in_process(directory: StateDirectory, route: str, args: tuple[str | None, ...]) -> bytes | None:
    document = DOCUMENTS[route](directory, *args)
    return None if document is None else render(document)


def test_readers_answer_the_same_bytes_as_the_in_process_path(
    state: StateDirectory, readers: StateReaders
) -> None:
    for route, args in READS:
        assert readers.read(state, route, *args) == _in_process(state, route, args), (route, args)
    assert len(readers.pids()) >= 1


def test_a_damaged_row_is_the_same_damaged_state(tmp_path: Path, readers: StateReaders) -> None:
    _build(tmp_path / "state", ["O-1"])
    data = tmp_path / "state" / "events-p0000" / DATA_FILE
    raw = data.read_bytes()
    assert raw.count(GOOD) == 1
    data.write_bytes(raw.replace(GOOD, BAD))
    with StateDirectory.open_readonly(tmp_path / "state") as directory:
        with pytest.raises(DamagedState) as here:
            DOCUMENTS["account"](directory, "ACC-0001")
        with pytest.raises(DamagedState) as there:
            readers.read(directory, "account", "ACC-0001")
        assert (there.value.what, there.value.fix, there.value.damage) == (
            here.value.what,
            here.value.fix,
            here.value.damage,
        )
        assert readers.read(directory, "order", "O-1") == _in_process(directory, "order", ("O-1",))


def test_a_missing_state_is_a_rewind_error_with_a_fix(tmp_path: Path, readers: StateReaders) -> None:
    with pytest.raises(RewindError) as refused:
        readers.read(StateDirectory(tmp_path / "nothing", readonly=True), "config")
    assert refused.value.fix


def test_a_killed_reader_is_replaced(state: StateDirectory) -> None:
    readers = StateReaders(1)
    try:
        expected = _in_process(state, "positions", (None, None))
        assert readers.read(state, "positions", None, None) == expected
        [first] = readers.pids()
        os.kill(first, signal.SIGKILL)
        os.waitid(os.P_PID, first, os.WEXITED | os.WNOWAIT)
        answers = []
        for _ in range(2):
            try:
                answers.append(readers.read(state, "positions", None, None))
            except ReaderGone as exc:
                assert exc.fix
        assert answers and answers[-1] == expected
        [second] = readers.pids()
        assert second != first
    finally:
        readers.close()


def _waiting_input(pid: int) -> int:
    """Bytes sent to reader ``pid`` that it has not read yet."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    finally:
        os.close(fd)


def test_a_reader_that_dies_while_answering_fails_that_read_with_a_fix(state: StateDirectory) -> None:
    readers = StateReaders(1)
    try:
        readers.read(state, "config")
        [first] = readers.pids()
        os.kill(first, signal.SIGSTOP)
        with ThreadPoolExecutor(1) as pool:
            read = pool.submit(readers.read, state, "config")
            _eventually(lambda: _waiting_input(first) > 0)
            os.kill(first, signal.SIGKILL)
            with pytest.raises(ReaderGone) as gone:
                read.result()
        assert "retry" in (gone.value.fix or "")
        assert readers.read(state, "config") == _in_process(state, "config", ())
        assert readers.pids() != [first]
    finally:
        readers.close()


def test_after_a_swap_the_readers_serve_the_new_state(tmp_path: Path, readers: StateReaders) -> None:
    """Recovery builds the new stores beside the live ones and renames them into place; the service
    then hands out another directory, and no reader may go on serving the replaced files."""
    live = tmp_path / "state"
    _build(live, ["O-1"])
    old = StateDirectory.open_readonly(live)
    for _ in range(2):  # both readers have the old stores open
        assert readers.read(old, "order", "O-2") is None
    _build(tmp_path / "rebuilt", ["O-1", "O-2"], amount="7")
    for name in ("events-p0000", "events-p0001", "config"):
        (live / name).rename(tmp_path / f"{name}.replaced")
        (tmp_path / "rebuilt" / name).rename(live / name)
    new = StateDirectory.open_readonly(live)
    try:
        for _ in range(4):
            assert readers.read(new, "order", "O-2") == _in_process(new, "order", ("O-2",))
            assert readers.read(new, "account", "ACC-0001") == _in_process(new, "account", ("ACC-0001",))
    finally:
        old.close()
        new.close()


def test_close_ends_every_reader_and_refuses_later_reads(state: StateDirectory) -> None:
    readers = StateReaders(2)
    readers.read(state, "config")
    pids = readers.pids()
    readers.close()
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    with pytest.raises(RewindError):
        readers.read(state, "config")
    readers.close()


# Through the API


class _View:
    """Just enough of a service for the state routes, /lag and /metrics."""

    def __init__(self, directory: StateDirectory, settings: Settings) -> None:
        self.directory = directory
        self.config = settings
        self.registry = CollectorRegistry()
        self.counter = Counter("reads_test", "a counter the test moves", registry=self.registry)

    def settings(self) -> Settings:
        return self.config

    def state_directory(self) -> StateDirectory:
        return self.directory

    def recovery_status(self) -> dict[str, Any]:
        return {"state": "RECOVERED"}

    def recovered(self) -> bool:
        return True

    def health_checks(self) -> dict[str, dict[str, Any]]:
        return {}

    def projector_lag(self) -> dict[str, Any]:
        raise RewindError("lag has not been evaluated yet", "retry in a few seconds")

    def lag_seconds_max(self) -> float | None:
        return None

    def snapshots(self) -> list[dict[str, Any]]:
        return []

    def metrics_registry(self) -> CollectorRegistry:
        return self.registry

    def take_snapshot(self) -> list[dict[str, Any]]:
        return []

    def request_rebuild(self) -> dict[str, Any]:
        raise RewindError("no rebuild here", "none")


def _exchange(port: int, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        headers = [(k, v) for k, v in response.getheaders() if k != "Date"]
        return response.status, headers, response.read()
    finally:
        connection.close()


def test_the_api_answers_the_same_bytes_and_headers_with_and_without_readers(
    state: StateDirectory, tmp_path: Path
) -> None:
    paths = [
        "/state/positions",
        "/state/positions?account=ACC-0001",
        "/state/positions?account=ACC-0002&symbol=MSFT",
        "/state/positions?account=NOBODY",
        "/state/orders/O-1",
        "/state/orders/O-NONE",
        "/state/accounts/ACC-0001",
        "/state/accounts/NOBODY",
        "/config",
        "/lag",
    ]
    answers = {}
    for readers in (0, 2):
        settings = load_settings(flags={"http.readers": readers}, environ={"REWIND_HOME": str(tmp_path)})
        server = serve_http(create_app(_View(state, settings)), "127.0.0.1", 0)
        try:
            answers[readers] = [_exchange(server.port, path) for path in paths]
        finally:
            server.stop()
    assert answers[0] == answers[2]
    assert [status for status, _, _ in answers[2]] == [200, 200, 200, 200, 200, 404, 200, 404, 200, 503]


def test_metrics_show_a_change_within_a_few_seconds(state: StateDirectory, tmp_path: Path) -> None:
    view = _View(state, load_settings(environ={"REWIND_HOME": str(tmp_path)}))
    server = serve_http(create_app(view), "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert "reads_test_total 0.0" in get(url)[1]
        view.counter.inc()
        _eventually(lambda: "reads_test_total 1.0" in get(url)[1], 10)
    finally:
        server.stop()


# The service


def test_sigterm_stops_the_service_and_its_readers(bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    pipeline.simulate(events=2_000, seed=5)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | pipeline.env | {"REWIND_HTTP_READERS": "2", "REWIND_HTTP_FRONT": "false"}
    service = subprocess.Popen(
        [REWIND, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for("the recovered state", lambda: get(f"{url}/state/positions")[0] == 200, 90, service)
        paths = ["/state/positions", "/state/orders/NOPE", "/config", "/state/accounts/ACC-0001"] * 5
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(lambda path: get(f"{url}{path}")[0], paths)) <= {200, 404}
        readers = child_pids(service.pid)
        assert readers, "the readers run as children of the service"
        service.send_signal(signal.SIGTERM)
        assert service.wait(30) == 0, service.stderr.read() if service.stderr else ""
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
    _eventually(lambda: not any(is_alive(pid) for pid in readers), 10)
