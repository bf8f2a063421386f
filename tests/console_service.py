"""A real ``rewind serve`` and a real Chromium for the console's tests, screenshots and benchmark.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven by Playwright for Python;
Playwright's own browser download is not used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cli_runner import REWIND
from tests.http_helpers import free_port, get
from tests.pipeline import Pipeline

CHROMIUM = "/usr/bin/chromium"
TOKEN = "console-token-7"
START_SECONDS = 120.0


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is absent: install Debian's chromium package (.ci/run does, as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed: run `make setup` (it is in the dev extra)"
    return None


@dataclass
class Service:
    """One running ``rewind serve``; ``url`` has no trailing slash."""

    pipeline: Pipeline
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    state_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir = self.pipeline.home / "state"

    def wait_until(self, what: str, predicate: Any, limit: float = START_SECONDS) -> Any:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise AssertionError(f"rewind serve exited while waiting for {what}:\n{stderr[-3000:]}")
            try:
                found = predicate()
            except OSError:
                found = None
            if found:
                return found
            time.sleep(0.3)
        raise AssertionError(f"{what}: not reached within {limit:.0f}s")

    def wait_caught_up(self) -> None:
        """Ready, and every partition's lag measured at 0."""
        self.wait_until("ready", lambda: get(f"{self.url}/ready")[0] == 200)
        self.wait_until(
            "no lag",
            lambda: (
                (r := get(f"{self.url}/lag"))[0] == 200
                and r[1]["total_lag_messages"] == 0
                and all(p["lag_messages"] == 0 for p in r[1]["partitions"])
            ),
        )


@contextmanager
def serve(pipeline: Pipeline, **settings: str) -> Iterator[Service]:
    """``rewind serve`` on a free loopback port over ``pipeline``, with http.token :data:`TOKEN` and
    ``settings`` as ``REWIND_*`` variables; stopped with SIGTERM (SIGKILL after 30 s) afterwards."""
    port = free_port()
    env = (
        os.environ | pipeline.env | {"REWIND_HTTP_TOKEN": TOKEN, "REWIND_LAG_WINDOW_SECONDS": "5"} | settings
    )
    process = subprocess.Popen(
        [REWIND, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    service = Service(pipeline, f"http://127.0.0.1:{port}", process, env)
    try:
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, under Playwright."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"], headless=True
    )


class PageLog:
    """Every console message and uncaught error of a page, to assert the page stayed clean."""

    def __init__(self, page: Any) -> None:
        self.messages: list[tuple[str, str]] = []
        self.page_errors: list[str] = []
        page.on("console", lambda message: self.messages.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def errors(self, expected_statuses: tuple[int, ...] = ()) -> list[str]:
        """Page errors and console errors, except the browser's own line for a response whose status
        is one of ``expected_statuses`` (e.g. /health's 503 while a rebuild runs)."""
        allowed = tuple(f"the server responded with a status of {status}" for status in expected_statuses)
        found = [f"pageerror: {error}" for error in self.page_errors]
        for kind, text in self.messages:
            if kind in ("error", "assert") and not (allowed and any(a in text for a in allowed)):
                found.append(f"{kind}: {text}")
        return found
