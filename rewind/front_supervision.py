"""The service's side of the HTTP front (:mod:`rewind.http_front`): its sockets, its start, its
replacement when it dies, its stop.

Guarantees:

* The service binds the public address itself (:func:`rewind.http_api.listen_socket`: the same
  checks and errors as the in-process server) and keeps it open for its whole life; the front
  inherits it. Connections that arrive while a front starts (or is being replaced) wait in the
  socket's backlog instead of being refused.
* The service's own application listens on a Unix socket, ``http.sock`` in ``REWIND_HOME`` (in a
  private temporary directory when that path is too long for a socket), mode 0600. A socket file
  left by a service that was killed is removed; one that still answers is refused with a fix.
* :meth:`HttpFront.start` returns once the front accepts connections, or raises
  :class:`~rewind.ground.errors.RewindError`.
* A front that exits while the service runs is logged and replaced, after 0.1 s, then twice as long
  after each exit in a row, at most :data:`LONGEST_RESTART_SECONDS`.
* The front never outlives the service: it ends when its standard input (a pipe from the service)
  ends, which the kernel does when the service exits for any reason, SIGKILL included.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Final

from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from rewind.http_front import FRONT_READY
from rewind.sd_notify import live_answered

__all__ = ["HttpFront", "private_socket", "unix_event_loop_answers", "url_of"]

PRIVATE_SOCKET_NAME: Final = "http.sock"
START_SECONDS: Final = 60.0
"""Longest wait for a front to accept connections (imports on a busy machine)."""
FIRST_RESTART_SECONDS: Final = 0.1
LONGEST_RESTART_SECONDS: Final = 5.0
STEADY_SECONDS: Final = 60.0
"""A front that ran this long before exiting restarts the count of exits in a row."""
_MAX_SOCKET_PATH: Final = 100

_log = logging.getLogger(__name__)


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def private_socket(settings: Settings) -> tuple[socket.socket, Path]:
    """A listening Unix socket for the service's own application, and its path."""
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home.resolve() / PRIVATE_SOCKET_NAME
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH:
        path = Path(tempfile.mkdtemp(prefix="rewind-http-")) / PRIVATE_SOCKET_NAME
    if path.exists() or path.is_symlink():
        if _answers(path):
            raise RewindError(
                f"another rewind serve answers on {path}",
                "stop it first: one service per REWIND_HOME",
            )
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise RewindError(
            f"cannot listen on {path}: {exc.strerror or exc}",
            "make REWIND_HOME writable by the service's user",
        ) from exc
    return listener, path


def unix_event_loop_answers(path: Path, timeout: float) -> bool:
    """True when the application on the Unix socket ``path`` answers ``GET /live`` within
    ``timeout`` seconds, whatever the status: the service's own event loop turns."""
    return live_answered(_UnixConnection(path, timeout))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("rewind", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self._path))


class HttpFront:
    """The front process of a service: started by :meth:`start`, replaced when it dies, ended by
    :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        public: socket.socket,
        upstream: Path,
        status: Path,
        *,
        forward_state: bool = False,
        log: IO[bytes] | None = None,
    ) -> None:
        """``log``: where the front's standard error goes (default: the service's)."""
        self._settings = settings
        self._log = log
        self._public = public
        self._upstream = upstream
        self._status = status
        self._forward_state = forward_state
        self._lock = threading.Lock()
        self._stopping = False
        self._process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        """How many fronts were started after the first."""

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self._public.fileno()
        command = [sys.executable, "-m", "rewind.http_front", "--listen-fd", str(fd)]
        command += ["--upstream", str(self._upstream), "--status", str(self._status)]
        if self._forward_state:
            command.append("--forward-state")
        return subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            pass_fds=(fd,),
            env=self._settings.child_environ(),
        )

    def _await_ready(self, process: subprocess.Popen[bytes]) -> bool:
        stdout = process.stdout
        if stdout is None:
            return False
        readable, _, _ = select.select([stdout], [], [], START_SECONDS)
        ready = bool(readable) and stdout.readline() == FRONT_READY
        stdout.close()
        return ready

    def start(self) -> None:
        """Start the front; returns once it accepts connections."""
        process = self._spawn()
        if not self._await_ready(process):
            process.kill()
            process.wait()
            raise RewindError(
                f"the HTTP front process did not start (exit status {process.returncode})",
                "the lines above say why; set http.front = false to serve from the service's own process",
            )
        with self._lock:
            self._process = process
        threading.Thread(target=self._watch, name="http-front", daemon=True).start()

    def _watch(self) -> None:
        in_a_row = 0
        while True:
            with self._lock:
                process = self._process
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            with self._lock:
                if self._stopping:
                    return
            in_a_row = 1 if time.monotonic() - started >= STEADY_SECONDS else in_a_row + 1
            delay = min(FIRST_RESTART_SECONDS * 2 ** min(in_a_row - 1, 10), LONGEST_RESTART_SECONDS)
            _log.error(
                "the HTTP front (pid %d) exited with status %s; starting another in %.1f s",
                process.pid,
                code,
                delay,
            )
            time.sleep(delay)
            with self._lock:
                if self._stopping:
                    return
                fresh = self._spawn()
                self._process = fresh
                self.restarts += 1
            if self._await_ready(fresh):
                _log.info("the HTTP front (pid %d) serves again", fresh.pid)

    def stop(self, timeout: float) -> None:
        """End the front: its input closed, then killed after ``timeout`` seconds. Safe to call more
        than once."""
        with self._lock:
            self._stopping = True
            process = self._process
        if process is not None:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._public.close()
