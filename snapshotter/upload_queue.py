"""The bounded queue of snapshots waiting to be shipped to the remote store, and its worker thread.

The service offers each round of local snapshots as it is written and goes on at once: nothing here
ever blocks the caller (the projector's batches, the snapshotter). One worker ships every waiting
round at once, oldest first (one attempt, so a backlog costs one start of the shipping process, not
one per round); a failure that can pass (store down or slow) keeps them all waiting and retries after
1 s, 2 s, 4 s, ... at most ``retry_max_seconds`` apart, so the queue catches up in order once the
store answers again. The queue holds at most ``bound`` rounds: past it the oldest waiting round
is dropped (counted, logged), since a newer snapshot makes it redundant for recovery.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

log = logging.getLogger("rewind.upload")

Item = TypeVar("Item")


class Outcome(Enum):
    SHIPPED = "shipped"
    RETRY = "retry"
    """It can pass (the store is down or slow): keep the round, try again later."""
    GIVE_UP = "give_up"
    """Retrying cannot help (the local snapshot is gone or damaged, the store refuses): drop it."""


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    detail: str = ""


@dataclass
class QueueCounts:
    shipped: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    given_up: int = 0


class UploadQueue(Generic[Item]):
    """Rounds waiting for upload, oldest first, at most ``bound`` of them."""

    def __init__(
        self,
        ship: Callable[[list[Item]], Attempt],
        bound: int,
        retry_max_seconds: float,
        on_change: Callable[[UploadQueue[Item], str], None] | None = None,
        first_retry_seconds: float = 1.0,
    ) -> None:
        if bound < 1:
            raise ValueError("an upload queue holds at least one round")
        self._ship = ship
        self._bound = bound
        self._retry_max = retry_max_seconds
        self._first_retry = first_retry_seconds
        self._on_change = on_change
        self._waiting: deque[Item] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.counts = QueueCounts()
        self.last_error = ""
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)

    def offer(self, item: Item) -> None:
        """Queue ``item``; never blocks. Drops the oldest waiting rounds past the bound."""
        dropped = 0
        with self._lock:
            self._waiting.append(item)
            self._idle.clear()
            while len(self._waiting) > self._bound:
                self._waiting.popleft()
                dropped += 1
            self.counts.dropped += dropped
        if dropped:
            log.warning(
                "snapshot upload queue full (%d rounds): dropped the oldest %d waiting", self._bound, dropped
            )
        self._changed("dropped" if dropped else "offered")
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="snapshot-upload", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once nothing waits (every round offered so far shipped, dropped or given up)."""
        return self._idle.wait(timeout)

    def _changed(self, what: str) -> None:
        if self._on_change is not None:
            self._on_change(self, what)

    def _run(self) -> None:
        delay = self._first_retry
        while not self._stop.is_set():
            with self._lock:
                batch = list(self._waiting)
                if not batch:
                    self._idle.set()
                    self._wake.clear()
            if not batch:
                self._wake.wait()
                continue
            try:
                attempt = self._ship(batch)
            except Exception as exc:  # a bug in shipping must not end the worker
                attempt = Attempt(Outcome.RETRY, f"{type(exc).__name__}: {exc}")
            if attempt.outcome is Outcome.RETRY:
                self.counts.failed_attempts += 1
                if attempt.detail != self.last_error:
                    log.warning(
                        "snapshot upload failed (retried every %.0f s at most): %s",
                        self._retry_max,
                        attempt.detail,
                    )
                self.last_error = attempt.detail
                self._changed("failed")
                self._stop.wait(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            delay = self._first_retry
            with self._lock:
                done = {id(item) for item in batch}
                self._waiting = deque(item for item in self._waiting if id(item) not in done)
            if attempt.outcome is Outcome.SHIPPED:
                self.counts.shipped += len(batch)
                if self.last_error:
                    log.info("snapshot uploads work again")
                self.last_error = ""
                self._changed("shipped")
            else:
                self.counts.given_up += len(batch)
                log.error("snapshot upload given up: %s", attempt.detail)
                self._changed("given_up")
