"""What ``rewind serve`` tells systemd: the notification protocol of sd_notify(3), in the standard
library (a datagram on an ``AF_UNIX`` socket; no libsystemd).

Under a unit with ``Type=notify`` (``deploy/systemd/rewind.service``) systemd passes the socket in
``NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``) and, with ``WatchdogSec=``,
the watchdog timeout in ``WATCHDOG_USEC``. :class:`Supervisor` then sends:

* ``READY=1`` once, when the recovered state is live and served: the start is done for systemd, so
  ``TimeoutStartSec=`` bounds the recovery;
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC``, only after the HTTP API's event loop has answered a
  ``GET /live`` (answered on the loop itself, checking nothing else and needing no token; any status
  counts): a hung loop stops the pings, and systemd kills and restarts the process ``WatchdogSec=``
  after the last one. Lost brokers or a failing ``/health`` check never stop them: a restart would
  not bring the brokers back;
* ``STATUS=`` what the service is doing, whenever that changes (``systemctl status`` shows it);
* ``STOPPING=1`` once, when it begins to stop.

Without ``NOTIFY_SOCKET`` (not run by systemd) nothing is sent and no thread runs. A notification
that cannot be delivered is logged once and never stops the service: supervision watches the service,
it is not part of what it does.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["Supervisor", "event_loop_answers", "notify", "notify_address", "watchdog_seconds"]

STATUS_INTERVAL_SECONDS: Final = 5.0
"""How often ``STATUS=`` is brought up to date when systemd runs no watchdog."""

log = logging.getLogger("rewind.sd_notify")


def notify_address(environ: Mapping[str, str]) -> str | bytes | None:
    """The socket address in ``NOTIFY_SOCKET``: a filesystem path, or an abstract name (``@name``,
    returned as ``b"\\0name"``); None when unset or not an ``AF_UNIX`` address (``vsock:...``)."""
    value = environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``KEY=value`` lines) to the supervisor in ``NOTIFY_SOCKET`` as one datagram.

    True when it was sent; False when there is no supervisor to tell or the socket refused it."""
    address = notify_address(os.environ if environ is None else environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True


def watchdog_seconds(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog timeout systemd set for this process (``WATCHDOG_USEC``) in seconds; None when it
    set none, or set it for another process (``WATCHDOG_PID``)."""
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def event_loop_answers(host: str, port: int, timeout: float) -> bool:
    """True when the HTTP API on ``host:port`` answers ``GET /live`` within ``timeout`` seconds,
    whatever the status: the handler runs on the API's event loop, so an answer means the loop turns.
    A wildcard ``host`` (``0.0.0.0``, ``::``, empty) is asked on the loopback address. No proxy is
    involved, whatever the environment says."""
    target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return live_answered(http.client.HTTPConnection(target, port, timeout=timeout))


def live_answered(connection: http.client.HTTPConnection) -> bool:
    """True when ``GET /live`` on ``connection`` gets any answer; the connection is closed."""
    try:
        connection.request("GET", "/live")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


class Supervisor:
    """The service's side of systemd's supervision; every method may be called from any thread and
    does nothing when systemd is not supervising (no ``NOTIFY_SOCKET``).

    ``environ`` defaults to the process environment, read once here."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        timeout = watchdog_seconds(self._environ)
        self.watchdog_interval: float | None = None if timeout is None else timeout / 2
        """Seconds between two ``WATCHDOG=1``: half the timeout, as sd_watchdog_enabled(3) advises."""
        self._lock = threading.Lock()
        self._sent: set[str] = set()
        self._failed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def supervised(self) -> bool:
        return notify_address(self._environ) is not None

    def start(self, alive: Callable[[float], bool], doing: Callable[[], str]) -> None:
        """Start the thread that sends ``WATCHDOG=1`` while ``alive(timeout)`` is true and ``STATUS=``
        whenever ``doing()`` changes. At most one such thread runs; none without a supervisor."""
        with self._lock:
            if not self.supervised or self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, args=(alive, doing), name="sd-notify", daemon=True
            )
        self._thread.start()

    def ready(self, status: str = "") -> None:
        """``READY=1`` (with ``status``), the first time only: a rebuild is not a new start."""
        self._once("READY=1", status)

    def stopping(self, status: str = "stopping") -> None:
        """``STOPPING=1`` (with ``status``), the first time only."""
        self._once("STOPPING=1", status)

    def close(self) -> None:
        """Stop the thread; the process exiting ends it too."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()

    def _once(self, line: str, status: str) -> None:
        with self._lock:
            if line in self._sent:
                return
            self._sent.add(line)
        self._send(line + (f"\nSTATUS={status}" if status else ""))

    def _send(self, message: str) -> bool:
        if not self.supervised:
            return False
        if notify(message, self._environ):
            return True
        if not self._failed:
            self._failed = True
            log.warning(
                "cannot notify systemd at NOTIFY_SOCKET=%s (%s); the service goes on unsupervised",
                self._environ.get("NOTIFY_SOCKET"),
                message.splitlines()[0],
            )
        return False

    def _run(self, alive: Callable[[float], bool], doing: Callable[[], str]) -> None:
        period = self.watchdog_interval or STATUS_INTERVAL_SECONDS
        reported = ""
        next_at = time.monotonic()
        while True:
            lines = []
            status = doing()
            if status != reported:
                lines.append(f"STATUS={status}")
            if self.watchdog_interval is not None and alive(period / 2):
                lines.append("WATCHDOG=1")
            if lines and self._send("\n".join(lines)):
                reported = status
            next_at = max(next_at + period, time.monotonic())
            if self._stop.wait(next_at - time.monotonic()):
                return
