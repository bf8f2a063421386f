"""The HTTP front process (``http.front``): the same answers as the service's own server, state read
only while the service says it is readable, the API's hardening at the front's socket, and a front
that ends with the service and is replaced when it dies.

Real front processes on 127.0.0.1, real LMDB state built by the real fold, real HTTP clients and raw
sockets; the last test runs ``rewind serve`` against the test broker.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from projector.state_directory import StateDirectory
from rewind.front_status import STATUS_FILE_NAME, NotReadable, StatusReader, StatusWriter
from rewind.front_supervision import PRIVATE_SOCKET_NAME, HttpFront, private_socket, unix_event_loop_answers
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings, load_settings
from rewind.http_api import create_app, listen_socket, serve_http
from rewind.state_readers import DOCUMENTS, render
from tests.cli_runner import REWIND
from tests.http_helpers import exchange, free_port, get, read_reply, seconds_until_closed, wait_for
from tests.pipeline import Pipeline
from tests.process_helpers import child_pids, is_alive
from tests.test_http_hardening import (
    _HEAD,
    _MALFORMED,
    MARGIN,
    READ_TOKEN,
    SECRET,
    TOKEN,
    Minimal,
    _trickle,
    refused,
)
from tests.test_state_readers import _build, _eventually, _View

STATE_PATHS = [
    "/state/positions",
    "/state/positions?account=ACC-0001",
    "/state/positions?account=ACC-0002&symbol=MSFT",
    "/state/positions?account=NOBODY",
    "/state/positions?acount=ACC-0001",
    "/state/orders/O-1",
    "/state/orders/O-NONE",
    "/state/accounts/ACC-0001",
    "/state/accounts/NOBODY",
    "/config",
]


@dataclass
class Fronted:
    port: int
    status: StatusWriter
    front: HttpFront
    log: Path
    """The front's standard error."""


@contextmanager
def fronted(view: Any, settings: Settings, scratch: Path) -> Iterator[Fronted]:
    """``view``'s application served on a Unix socket in ``scratch``, behind a front process that
    owns a free port of 127.0.0.1, as ``rewind serve`` arranges them."""
    scratch.mkdir(parents=True, exist_ok=True)
    upstream = scratch / "http.sock"
    private = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    private.bind(str(upstream))
    private.listen(16)
    inner = serve_http(create_app(view), "127.0.0.1", 0, listen=private)
    status = StatusWriter(scratch / STATUS_FILE_NAME)
    public = listen_socket(settings, "127.0.0.1", 0)
    log = scratch / "front.log"
    with log.open("wb") as written:
        front = HttpFront(settings, public, upstream, status.path, log=written)
        try:
            front.start()
            yield Fronted(int(public.getsockname()[1]), status, front, log)
        finally:
            front.stop(10)
            inner.stop()
            status.close()


def _settings(home: Path, **values: object) -> Settings:
    flags = {"http.token": TOKEN, "kafka.bootstrap": "127.0.0.1:9", **values}  # the front needs no broker
    return load_settings(flags=flags, environ={"REWIND_HOME": str(home)})


def _answer(port: int, path: str, method: str = "GET") -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (but Date) in name order, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        headers = sorted((k, v) for k, v in response.getheaders() if k != "Date")
        return response.status, headers, response.read()
    finally:
        connection.close()


# What the front answers


def test_the_front_answers_the_same_bytes_and_headers_as_the_service_itself(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _build(settings.state_dir, ["O-1", "O-2"])
    paths = [*STATE_PATHS, "/lag", "/live", "/health", "/ready", "/openapi.yaml", "/nowhere", "/snapshots"]
    with StateDirectory.open_readonly(settings.state_dir) as directory:
        view = _View(directory, settings)
        inner = serve_http(create_app(view), "127.0.0.1", 0)
        try:
            expected = [_answer(inner.port, path) for path in paths]
            expected += [_answer(inner.port, "/state/orders/O-1", "HEAD")]
            expected += [_answer(inner.port, "/state/positions", "POST")]
        finally:
            inner.stop()
        with fronted(view, settings, tmp_path / "front") as front:
            front.status.publish(True)
            answers = [_answer(front.port, path) for path in paths]
            answers += [_answer(front.port, "/state/orders/O-1", "HEAD")]
            answers += [_answer(front.port, "/state/positions", "POST")]
    assert answers == expected
    statuses = [status for status, _, _ in answers]
    assert statuses[:10] == [200, 200, 200, 200, 400, 200, 404, 200, 404, 200]  # the state routes
    assert statuses[10:] == [503, 200, 200, 503, 200, 404, 200, 200, 405]


def test_state_reads_are_the_document_functions_bytes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _build(settings.state_dir, ["O-1", "O-2"])
    with (
        StateDirectory.open_readonly(settings.state_dir) as directory,
        fronted(_View(directory, settings), settings, tmp_path / "front") as front,
    ):
        front.status.publish(True)
        for path, route, arguments in [
            ("/state/positions?account=ACC-0001", "positions", ("ACC-0001", None)),
            ("/state/accounts/ACC-0002", "account", ("ACC-0002",)),
            ("/config", "config", ()),
        ]:
            assert _answer(front.port, path)[2] == render(DOCUMENTS[route](directory, *arguments))


# Readable or not


def test_the_front_reads_only_while_the_service_says_the_state_is_readable(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _build(settings.state_dir, ["O-1", "O-2"])
    with fronted(Minimal(settings), settings, tmp_path / "front") as front:
        url = f"http://127.0.0.1:{front.port}"
        not_yet = get(f"{url}/state/orders/O-1")
        assert not_yet == (
            503,
            {"error": "the state is not readable yet: recovery is in progress", "fix": "retry in a moment"},
        )
        front.status.publish(True)
        assert get(f"{url}/state/orders/O-1")[0] == 200
        before = _answer(front.port, "/state/accounts/ACC-0001")[2]
        front.status.publish(False)  # what the service does before it closes the stores
        assert get(f"{url}/state/orders/O-1")[0] == 503
        shutil.rmtree(settings.state_dir)
        _build(settings.state_dir, ["O-NEW"], amount="7")  # a rebuild replaced every store
        assert get(f"{url}/config")[0] == 503
        front.status.publish(True)
        assert get(f"{url}/state/orders/O-1")[0] == 404
        assert get(f"{url}/state/orders/O-NEW")[0] == 200
        after = _answer(front.port, "/state/accounts/ACC-0001")[2]
        with StateDirectory.open_readonly(settings.state_dir) as rebuilt:
            assert after == render(DOCUMENTS["account"](rebuilt, "ACC-0001"))
        assert after != before


def test_a_read_is_confirmed_only_if_nothing_was_published_meanwhile(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path / STATUS_FILE_NAME)
    reader = StatusReader(writer.path)
    try:
        with pytest.raises(NotReadable):
            reader.begin()
        writer.publish(True)
        sequence, generation = reader.begin()
        assert reader.unchanged(sequence)
        writer.publish(False)
        assert not reader.unchanged(sequence)
        with pytest.raises(NotReadable):
            reader.begin()
        writer.publish(True)
        again, newer = reader.begin()
        assert again != sequence and newer == generation + 1
    finally:
        reader.close()
        writer.close()


def test_a_new_writer_starts_a_new_file_not_readable(tmp_path: Path) -> None:
    first = StatusWriter(tmp_path / STATUS_FILE_NAME)
    first.publish(True)
    second = StatusWriter(tmp_path / STATUS_FILE_NAME)
    reader = StatusReader(second.path)
    try:
        with pytest.raises(NotReadable):
            reader.begin()
    finally:
        reader.close()
        first.close()
        second.close()


# The hardening, at the front's socket


@pytest.fixture
def minimal(tmp_path: Path) -> Minimal:
    return Minimal(_settings(tmp_path))


@pytest.fixture
def front(minimal: Minimal, tmp_path: Path) -> Iterator[Fronted]:
    with fronted(minimal, minimal.config, tmp_path / "front") as running:
        yield running


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_a_request_the_parser_refuses_at_the_front_is_json_and_never_echoed(
    front: Fronted, case: str
) -> None:
    _, status = refused(front.port, case)
    logged = front.log.read_text()
    assert SECRET.decode() not in logged
    lines = [line for line in logged.splitlines() if "refused an HTTP request" in line]
    assert len(lines) == 1 and f"({status})" in lines[0] and "Traceback" not in logged


def test_the_front_closes_a_trickled_head_and_an_idle_connection(tmp_path: Path) -> None:
    settings = _settings(tmp_path, **{"http.header_timeout_seconds": 1, "http.keepalive_seconds": 1})
    with fronted(Minimal(settings), settings, tmp_path / "front") as front:
        with socket.create_connection(("127.0.0.1", front.port), timeout=30) as sock:
            stop = threading.Event()
            sender = threading.Thread(target=_trickle, args=(sock, stop), daemon=True)
            sender.start()
            try:
                assert seconds_until_closed(sock, 1 + MARGIN) is not None, "a trickled head kept it open"
            finally:
                stop.set()
                sender.join(10)
        with socket.create_connection(("127.0.0.1", front.port), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\n" + _HEAD + b"\r\n")
            assert read_reply(sock).status == 200
            assert seconds_until_closed(sock, 1 + MARGIN) is not None, "an idle keep-alive stayed open"


def _post(port: int, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_bodies_tokens_and_mutations_through_the_front(front: Fronted, minimal: Minimal) -> None:
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    assert _post(front.port, "/snapshots", b"x" * 1025, authorized)[0] == 413
    assert _post(front.port, "/snapshots", None, {})[0] == 401
    assert _post(front.port, "/snapshots", None, {"Authorization": "Bearer wrong"})[0] == 403
    assert minimal.snapshots_taken == 0
    assert _post(front.port, "/snapshots", b"{}", authorized) == (200, {"snapshots": []})
    assert minimal.snapshots_taken == 1
    chunked = (
        b"POST /snapshots HTTP/1.1\r\n" + _HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    assert exchange(front.port, chunked).status == 411
    twice = b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"
    assert exchange(front.port, b"GET /health HTTP/1.1\r\n" + _HEAD + twice + b"\r\n").status == 400
    assert minimal.snapshots_taken == 1


def test_with_a_read_token_the_front_wants_it_and_asks_the_service_with_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path, **{"http.read_token": READ_TOKEN})
    with fronted(Minimal(settings), settings, tmp_path / "front") as front:
        url = f"http://127.0.0.1:{front.port}"
        assert get(f"{url}/recovery/status")[0] == 401
        assert get(f"{url}/metrics")[0] == 401
        assert get(f"{url}/live")[0] == 200
        bearer = f"Authorization: Bearer {READ_TOKEN}\r\n".encode()
        for path in (b"/recovery/status", b"/metrics"):
            reply = exchange(front.port, b"GET " + path + b" HTTP/1.1\r\n" + _HEAD + bearer + b"\r\n")
            assert reply.status == 200, reply.body


# The front of `rewind serve`


def _fronts_of(pid: int) -> set[int]:
    found = set()
    for child in child_pids(pid):
        try:
            if b"rewind.http_front" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(child)
        except OSError:
            continue
    return found


def test_rewind_serve_answers_from_its_front_which_is_replaced_and_ends_with_it(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    summary = pipeline.simulate(events=2_000, seed=5)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = os.environ | pipeline.env | {"REWIND_HTTP_TOKEN": TOKEN}
    service = subprocess.Popen(
        [REWIND, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    fronts: set[int] = set()
    try:
        wait_for("the recovered state", lambda: get(f"{url}/state/positions")[0] == 200, 90, service)
        (first,) = fronts = _fronts_of(service.pid)
        state = load_settings(environ=pipeline.env).state_dir

        def caught_up() -> bool:
            with StateDirectory.open_readonly(state) as directory:
                applied = sum(directory.store(name).offset() + 1 for name in directory.store_names())
                expected = render(DOCUMENTS["positions"](directory, None, None))
            return applied >= summary.events and _answer(port, "/state/positions")[2] == expected

        wait_for("the front's positions equal to the state's", caught_up, 90, service)

        os.kill(first, signal.SIGKILL)
        wait_for("another front", lambda: _fronts_of(service.pid) - {first}, 60, service)
        fronts = _fronts_of(service.pid)
        wait_for("reads again", lambda: get(f"{url}/state/positions")[0] == 200, 60, service)

        reply = _post(port, "/rebuild", None, {"Authorization": f"Bearer {TOKEN}"})
        assert reply[0] == 202, reply
        assert get(f"{url}/ready")[0] == 503, "the 202 changes /ready at once"
        wait_for("the rebuilt state", lambda: get(f"{url}/ready")[0] == 200, 90, service)
        assert get(f"{url}/state/positions")[0] == 200

        service.send_signal(signal.SIGKILL)
        service.wait(30)
        _eventually(lambda: not any(is_alive(pid) for pid in fronts), 20)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        for pid in fronts:
            if is_alive(pid):
                os.kill(pid, signal.SIGKILL)


# The service's side


def test_a_socket_left_by_a_killed_service_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(tmp_path / PRIVATE_SOCKET_NAME))
    left.close()  # its file stays, nobody listens: what a SIGKILL leaves
    listener, path = private_socket(settings)
    try:
        assert path == tmp_path.resolve() / PRIVATE_SOCKET_NAME
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(RewindError) as refused:
            private_socket(settings)
        assert refused.value.what == f"another rewind serve answers on {path}"
    finally:
        listener.close()


def test_the_watchdog_asks_the_services_own_loop_over_its_socket(tmp_path: Path) -> None:
    listener, path = private_socket(_settings(tmp_path))
    inner = serve_http(create_app(Minimal(_settings(tmp_path))), "127.0.0.1", 0, listen=listener)
    try:
        assert unix_event_loop_answers(path, 10)
    finally:
        inner.stop()
    assert not unix_event_loop_answers(path, 1)
