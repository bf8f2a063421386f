"""The HTTP API's limits, at the level of the wire: a real server on 127.0.0.1, raw sockets for the
requests no HTTP client sends, ``http.client`` for the rest. No Kafka and no state: a service view
that answers /health and takes no-op snapshots is enough."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from replayer.recovery_tracker import RecoveryTracker
from rewind.ground.errors import ConfigError, RewindError
from rewind.ground.settings import Settings, load_settings
from rewind.http_api import HttpServer, create_app, serve_http
from tests.cli_runner import run_rewind
from tests.http_helpers import RawReply, exchange, read_reply, seconds_until_closed
from tests.openapi_check import errors, spec

TOKEN = "wr1te-token"
READ_TOKEN = "r3ad-token"
SECRET = b"S3CRET-bearer-value"
MARGIN = 8.0
"""Seconds a timeout may overrun in these tests (a loaded machine), on top of the configured one."""


@dataclass
class Minimal:
    """Just enough of :class:`rewind.service_view.ServiceView` for requests that never reach state."""

    config: Settings
    snapshots_taken: int = 0

    def settings(self) -> Settings:
        return self.config

    def state_directory(self) -> Any:
        raise RewindError("no state in this test", "none")

    def recovery_status(self) -> dict[str, Any]:
        return RecoveryTracker().status()

    def recovered(self) -> bool:
        return True

    def health_checks(self) -> dict[str, dict[str, Any]]:
        return {"broker": {"ok": True}}

    def projector_lag(self) -> dict[str, Any]:
        raise RewindError("no lag in this test", "none")

    def lag_seconds_max(self) -> float | None:
        return None

    def snapshots(self) -> list[dict[str, Any]]:
        return []

    def metrics_registry(self) -> CollectorRegistry:
        return CollectorRegistry()

    def take_snapshot(self) -> list[dict[str, Any]]:
        self.snapshots_taken += 1
        return []

    def request_rebuild(self) -> dict[str, Any]:
        return {"scheduled": "rebuild"}


def _settings(**values: object) -> Settings:
    return load_settings(flags={"http.token": TOKEN, **values}, environ={})


@contextmanager
def _serving(service: Minimal, host: str = "127.0.0.1") -> Iterator[HttpServer]:
    server = serve_http(create_app(service), host, 0)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def service() -> Minimal:
    return Minimal(_settings())


@pytest.fixture
def server(service: Minimal) -> Iterator[HttpServer]:
    with _serving(service) as running:
        yield running


# Requests the parser refuses

_HEAD = b"Host: rewind\r\n"
_MALFORMED = {
    "request line over 8190 bytes": (b"GET /health?" + b"a" * 9000 + b" HTTP/1.1\r\n" + _HEAD + b"\r\n", 414),
    "path over 8190 bytes": (b"GET /" + b"p" * 9000 + b" HTTP/1.1\r\n" + _HEAD + b"\r\n", 414),
    "Authorization over 8190 bytes": (
        b"GET /health HTTP/1.1\r\n" + _HEAD + b"Authorization: Bearer " + SECRET + b"t" * 9000 + b"\r\n\r\n",
        431,
    ),
    "header name over 8190 bytes": (b"GET /health HTTP/1.1\r\n" + _HEAD + b"X" * 9000 + b": 1\r\n\r\n", 431),
    "200 headers": (
        b"GET /health HTTP/1.1\r\n" + _HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
        431,
    ),
    "control byte in Authorization": (
        b"GET /health HTTP/1.1\r\n" + _HEAD + b"Authorization: Bearer " + SECRET + b"\x01\r\n\r\n",
        400,
    ),
    "NUL in Authorization": (
        b"GET /health HTTP/1.1\r\n" + _HEAD + b"Authorization: Bearer \x00" + SECRET + b"\r\n\r\n",
        400,
    ),
    "control byte in the path": (b"GET /hea\x01lth HTTP/1.1\r\n" + _HEAD + b"\r\n", 400),
    "unknown method": (b"FETCH /health HTTP/1.1\r\n" + _HEAD + b"\r\n", 400),
    "TLS to the HTTP port": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + SECRET + b"\r\n\r\n", 400),
    "unknown HTTP version": (b"GET /health HTTP/9.9\r\n" + _HEAD + b"\r\n", 400),
    "two Content-Lengths": (
        b"POST /snapshots HTTP/1.1\r\n" + _HEAD + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    "Content-Length not a number": (
        b"POST /snapshots HTTP/1.1\r\n" + _HEAD + b"Content-Length: x\r\n\r\n",
        400,
    ),
    "HTTP/1.1 without Host": (b"GET /health HTTP/1.1\r\nAuthorization: Bearer " + SECRET + b"\r\n\r\n", 400),
}


def refused(port: int, case: str) -> tuple[RawReply, int]:
    """Send the malformed request ``case`` to ``port``: the reply, checked to be a JSON refusal with
    its status and a fix that never echoes the request, and the status."""
    request, status = _MALFORMED[case]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        reply = read_reply(sock)
        assert seconds_until_closed(sock, 30) is not None, "the connection stays open"
    assert reply.status == status
    assert reply.headers["content-type"].startswith("application/json")
    assert set(reply.json) == {"error", "fix"}
    assert SECRET not in reply.raw
    return reply, status


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_a_request_the_parser_refuses_is_json_with_a_fix_logged_in_one_line_and_never_echoed(
    server: HttpServer, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    reply, status = refused(server.port, case)
    assert not errors(spec()["components"]["schemas"]["Error"], reply.json)
    records = [
        r for r in caplog.records if r.name.startswith(("rewind", "aiohttp")) and r.name != "aiohttp.access"
    ]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.name == "rewind.http_api" and record.levelno == logging.INFO
    assert record.exc_info is None and len(record.getMessage()) < 200
    assert f"({status})" in record.getMessage() and reply.json["error"] in record.getMessage()
    assert SECRET.decode() not in caplog.text


def test_the_server_answers_normally_after_refusing_a_request(server: HttpServer) -> None:
    assert exchange(server.port, _MALFORMED["unknown method"][0]).status == 400
    reply = exchange(server.port, b"GET /health HTTP/1.1\r\n" + _HEAD + b"Connection: close\r\n\r\n")
    assert (reply.status, reply.json["status"]) == (200, "ok")


def test_the_longest_valid_request_line_is_within_the_limit(server: HttpServer) -> None:
    four_bytes = "%F0%9F%98%80" * 255
    target = f"/state/positions?account={four_bytes}&symbol={four_bytes}"
    reply = exchange(
        server.port, f"GET {target} HTTP/1.1\r\n".encode() + _HEAD + b"Connection: close\r\n\r\n"
    )
    assert reply.status == 200, reply.json
    assert reply.json == {"positions": []}


# Slow and idle connections


def _trickle(sock: socket.socket, stop: threading.Event) -> None:
    """A slowloris: one more header line every 0.2 s, never the blank line that ends the head."""
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\n" + _HEAD)
        while not stop.wait(0.2):
            sock.sendall(b"X-Slow: 1\r\n")
    except OSError:
        pass


def test_a_head_trickled_slower_than_the_header_timeout_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rewind.http_api")
    with (
        _serving(Minimal(_settings(**{"http.header_timeout_seconds": 1}))) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        stop = threading.Event()
        sender = threading.Thread(target=_trickle, args=(sock, stop), daemon=True)
        sender.start()
        try:
            closed_after = seconds_until_closed(sock, 1 + MARGIN)
        finally:
            stop.set()
            sender.join(10)
    assert closed_after is not None, "a trickled head kept the connection open"
    assert "no whole request line and headers within 1 s (http.header_timeout_seconds)" in caplog.text


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() -> None:
    settings = _settings(**{"http.header_timeout_seconds": 1, "http.keepalive_seconds": 600})
    with (
        _serving(Minimal(settings)) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        assert seconds_until_closed(sock, 1 + MARGIN) is not None


def test_the_next_head_on_a_kept_alive_connection_has_the_header_timeout_too() -> None:
    settings = _settings(**{"http.header_timeout_seconds": 1, "http.keepalive_seconds": 600})
    with (
        _serving(Minimal(settings)) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        sock.sendall(b"GET /health HTTP/1.1\r\n" + _HEAD + b"\r\n")
        assert read_reply(sock).status == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n" + _HEAD)
        assert seconds_until_closed(sock, 1 + MARGIN) is not None


def test_a_head_sent_in_pieces_within_the_header_timeout_is_served() -> None:
    with (
        _serving(Minimal(_settings(**{"http.header_timeout_seconds": 30}))) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        for piece in (b"GET /hea", b"lth HTTP/1.1\r\n", _HEAD, b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.05)
        assert read_reply(sock).status == 200
        sock.sendall(b"GET /ready HTTP/1.1\r\n" + _HEAD + b"\r\n")
        assert read_reply(sock).status == 503


def test_an_idle_keep_alive_connection_is_closed_after_keepalive_seconds() -> None:
    settings = _settings(**{"http.header_timeout_seconds": 600, "http.keepalive_seconds": 1})
    with (
        _serving(Minimal(settings)) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock,
    ):
        sock.sendall(b"GET /health HTTP/1.1\r\n" + _HEAD + b"\r\n")
        reply = read_reply(sock)
        assert reply.status == 200 and reply.headers.get("connection") != "close"
        assert seconds_until_closed(sock, 1 + MARGIN) is not None


# Bodies


def _post(
    port: int, path: str, body: bytes | None, *, chunked: bool = False
) -> tuple[int, dict[str, Any], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        sent: Any = iter([body]) if chunked and body is not None else body
        connection.request("POST", path, body=sent, headers=headers, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, json.loads(response.read()), response.headers.get("Connection", "")
    finally:
        connection.close()


def test_a_body_over_1024_bytes_is_a_413_and_closes_the_connection(
    server: HttpServer, service: Minimal
) -> None:
    status, body, connection = _post(server.port, "/snapshots", b"x" * 1025)
    assert status == 413
    assert body["error"] == "the request body is 1025 bytes; at most 1024 are accepted"
    assert connection == "close"
    assert service.snapshots_taken == 0
    assert _post(server.port, "/snapshots", b"{" + b" " * 1022 + b"}")[0] == 200
    assert service.snapshots_taken == 1


def test_a_large_body_is_refused_before_it_is_sent(server: HttpServer, service: Minimal) -> None:
    head = b"POST /snapshots HTTP/1.1\r\n" + _HEAD + f"Authorization: Bearer {TOKEN}\r\n".encode()
    reply = exchange(server.port, head + b"Content-Length: 10000000000\r\n\r\n")
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    assert service.snapshots_taken == 0


def test_reads_refuse_bodies_over_the_limit_too(server: HttpServer) -> None:
    reply = exchange(
        server.port, b"GET /health HTTP/1.1\r\n" + _HEAD + b"Content-Length: 2000\r\n\r\n" + b"x" * 2000
    )
    assert reply.status == 413


def test_a_chunked_body_is_a_411(server: HttpServer, service: Minimal) -> None:
    status, body, _ = _post(server.port, "/snapshots", b"{}", chunked=True)
    assert status == 411
    assert "Content-Length" in body["fix"]
    assert service.snapshots_taken == 0


# Binding


def test_binding_beyond_loopback_needs_a_read_token() -> None:
    with pytest.raises(ConfigError) as refused:
        serve_http(create_app(Minimal(_settings())), "0.0.0.0", 0)
    assert "0.0.0.0 is not a loopback address" in refused.value.what
    assert refused.value.fix is not None and "http.read_token (REWIND_HTTP_READ_TOKEN)" in refused.value.fix


def test_with_a_read_token_any_address_is_served_and_reads_need_it() -> None:
    with _serving(Minimal(_settings(**{"http.read_token": READ_TOKEN})), "0.0.0.0") as server:
        assert exchange(server.port, b"GET /recovery/status HTTP/1.1\r\n" + _HEAD + b"\r\n").status == 401
        authorized = f"Authorization: Bearer {READ_TOKEN}\r\n".encode()
        reply = exchange(server.port, b"GET /recovery/status HTTP/1.1\r\n" + _HEAD + authorized + b"\r\n")
        assert reply.status == 200
        assert exchange(server.port, b"GET /health HTTP/1.1\r\n" + _HEAD + b"\r\n").status == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_is_served_without_a_read_token(host: str) -> None:
    with _serving(Minimal(_settings()), host) as server:
        assert exchange(server.port, b"GET /health HTTP/1.1\r\n" + _HEAD + b"\r\n").status == 200


def test_rewind_serve_refuses_to_start_beyond_loopback_without_a_read_token(tmp_path: Path) -> None:
    env = {"REWIND_HOME": str(tmp_path), "REWIND_BOOTSTRAP": "127.0.0.1:9", "REWIND_HTTP_HOST": "0.0.0.0"}
    result = run_rewind("serve", "--port", "0", env=env, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("error: http.host 0.0.0.0 is not a loopback address"), result.stderr
    assert lines[-1].startswith("  fix: set http.read_token (REWIND_HTTP_READ_TOKEN)"), result.stderr
