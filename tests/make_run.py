"""`make run` (``python -m rewind.run_local``) in a test: started in its own home, its output
collected, stopped with Ctrl-C (SIGINT) as a person would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class MakeRun:
    """The running ``make run``: its output so far; its exit status once stopped."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.banner = threading.Event()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


def processes_with_home(home: Path) -> list[int]:
    """The processes (other than this one) whose environment or command line names ``home``."""
    needle = f"REWIND_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (
                needle in (proc / "environ").read_bytes()
                or str(home).encode() in (proc / "cmdline").read_bytes()
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@contextlib.contextmanager
def make_run(tmp_path: Path, home: Path, environ: dict[str, str], banner_seconds: float) -> Iterator[MakeRun]:
    """Start ``make run`` with ``environ`` over the test's environment (its own broker: no
    REWIND_BOOTSTRAP), wait for its "rewind is running" banner, and stop it with SIGINT on leaving."""
    env = os.environ | {"REWIND_HOME": str(home)} | environ
    env.pop("REWIND_BOOTSTRAP", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "rewind.run_local"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    run = MakeRun(process)

    def read_output() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            run.lines.append(raw.decode(errors="replace"))
            if "rewind is running" in run.lines[-1]:
                run.banner.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        assert run.banner.wait(banner_seconds), "make run did not print its URLs:\n" + run.output
        yield run
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(90)
        reader.join(30)


def nothing_left_behind(home: Path, seconds: float = 20) -> bool:
    """Whether every process of ``home`` has ended within ``seconds`` (a final snapshot's upload a
    stopping service started may end just after it)."""
    deadline = time.monotonic() + seconds
    while processes_with_home(home):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
