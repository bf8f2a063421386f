"""A free loopback port, a GET that answers (status, JSON or text) for error statuses too, waiting
on a running process's answers, and raw HTTP/1.1 exchanges on a socket for requests no HTTP client
would send."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body, status = response.read(), response.status
    except urllib.error.HTTPError as error:
        body, status = error.read(), error.code
    text = body.decode()
    return status, (json.loads(text) if text.startswith(("{", "[")) else text)


def wait_for(what: str, predicate: Callable[[], Any], limit: float, process: subprocess.Popen[bytes]) -> Any:
    """``predicate()``'s first truthy value, asked every 0.3 s for up to ``limit`` seconds (an
    ``OSError``, such as a refused connection, counts as not yet); fails at once, with its stderr when
    piped, if ``process`` exits meanwhile."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise AssertionError(
                f"the process exited ({process.returncode}) while waiting for {what}: {error}"
            )
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {limit:.0f} s")


@dataclass(frozen=True)
class RawReply:
    """One response as it came off the socket."""

    status: int
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes
    raw: bytes
    """Everything read: status line, headers and body."""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def read_reply(sock: socket.socket, timeout: float = 30) -> RawReply:
    """Read one response from ``sock``: its head, then as many body bytes as Content-Length says."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
        data += chunk
    return RawReply(int(status_line.split()[1]), headers, body, data)


def exchange(port: int, request: bytes, timeout: float = 30) -> RawReply:
    """Send ``request`` exactly as given on a new connection to 127.0.0.1 and read the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_reply(sock, timeout)


def seconds_until_closed(sock: socket.socket, within: float) -> float | None:
    """Wait for the server to close ``sock`` (end of stream or reset), discarding what it sends;
    the seconds it took, or None if it was still open after ``within`` seconds."""
    started = time.monotonic()
    while (left := within - (time.monotonic() - started)) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            return None
        except ConnectionResetError:
            return time.monotonic() - started
    return None
