"""What the local servers of development and tests share: a JDK, free loopback ports, and a process of
its own session that is found again through its pid file and stopped as a group.

The Kafka broker (:mod:`rewind.kafka_local`) and the S3 server (:mod:`rewind.s3_local`) each belong
to one ``REWIND_HOME``. A server is started in a session of its own, so that Ctrl-C in the terminal
that started it does not reach it and stopping it reaches every process it started; its pid file
names it only while a process of that pid runs the server's own main class (a pid reused by another
program is not taken for the server).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from rewind.ground.errors import RewindError

MIN_JAVA = 17
"""The oldest Java the local servers run on (Kafka 4 and S3Proxy 4 both need 17)."""


def find_java(elsewhere: str) -> str:
    """The java executable (``$JAVA_HOME`` first, then ``PATH``), checked to be :data:`MIN_JAVA` or
    newer. ``elsewhere`` ends each fix: how to get the server without a local JDK."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not os.access(candidate, os.X_OK):
        raise RewindError(
            "no Java runtime found (JAVA_HOME is unset or wrong, and `java` is not on PATH); "
            "the local Kafka broker and S3 server run on the JDK",
            f"install a JDK {MIN_JAVA}+ (Debian: apt-get install openjdk-17-jdk-headless), {elsewhere}",
        )
    try:
        out = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RewindError(
            f"cannot run {candidate}: {exc}", f"install a JDK {MIN_JAVA}+, {elsewhere}"
        ) from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise RewindError(
            f"{candidate} is Java {major or '(unknown version)'}; the local servers need Java {MIN_JAVA}+",
            f"install a JDK {MIN_JAVA}+ and put it first on PATH (or set JAVA_HOME), {elsewhere}",
        )
    return candidate


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1: nothing listens there.

    The probe binds as the servers do, with SO_REUSEADDR, so a port whose last connections are still
    in TIME_WAIT (a server killed a moment ago) counts as free: the server comes back on its own
    address instead of a new one.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        return bool(fields) and fields[0] != "Z"
    return True


def running_pid(pid_file: Path, marker: bytes) -> int | None:
    """The pid in ``pid_file`` if that process runs and its command line holds ``marker``; else None,
    and a stale pid file is removed."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if pid_alive(pid) and (not cmdline.exists() or marker in cmdline.read_bytes()):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def launch(command: list[str], log_file: Path, pid_file: Path, banner: str) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, its output appended to ``log_file`` after a line
    naming ``banner`` and the time, and its pid written to ``pid_file``."""
    with log_file.open("ab") as log:
        log.write(f"\n--- {banner} {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process


def stop_group(pid: int, pid_file: Path, timeout: float) -> None:
    """Stop the server ``pid`` and everything it started: SIGTERM, up to ``timeout`` seconds for it
    to exit, then SIGKILL; returns once it is gone and its pid file removed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)


def last_lines(log_file: Path, lines: int = 50) -> str:
    """The last ``lines`` lines of ``log_file`` ("" when it cannot be read)."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
