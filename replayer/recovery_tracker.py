"""Recovery progress: a small state machine with steps, a percentage and an ETA.

States: HEALTHY -> FAILURE_DETECTED -> RECOVERY_IN_PROGRESS -> VALIDATING -> RECOVERED, or
RECOVERY_FAILED from any state before RECOVERED. RECOVERY_FAILED is final unless a retry was
scheduled (:meth:`RecoveryTracker.schedule_retry`): then the next attempt starts again at
FAILURE_DETECTED, with fresh steps and the attempt counted. The CLI draws it as a progress bar; the
service serves :meth:`RecoveryTracker.status` at ``/recovery/status`` and exports it as metrics.
Illegal transitions are assertion failures: a progress report that lies is worse than none.

Thread-safe: the recovery runs in one thread while HTTP handlers read the status from others.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class RecoveryState(StrEnum):
    HEALTHY = "HEALTHY"
    FAILURE_DETECTED = "FAILURE_DETECTED"
    RECOVERY_IN_PROGRESS = "RECOVERY_IN_PROGRESS"
    VALIDATING = "VALIDATING"
    RECOVERED = "RECOVERED"
    RECOVERY_FAILED = "RECOVERY_FAILED"


_ALLOWED = {
    RecoveryState.HEALTHY: {RecoveryState.FAILURE_DETECTED, RecoveryState.RECOVERY_IN_PROGRESS},
    RecoveryState.FAILURE_DETECTED: {RecoveryState.RECOVERY_IN_PROGRESS, RecoveryState.RECOVERY_FAILED},
    RecoveryState.RECOVERY_IN_PROGRESS: {RecoveryState.VALIDATING, RecoveryState.RECOVERY_FAILED},
    RecoveryState.VALIDATING: {RecoveryState.RECOVERED, RecoveryState.RECOVERY_FAILED},
    RecoveryState.RECOVERED: set(),
    RecoveryState.RECOVERY_FAILED: set(),
}

STEPS = ("detect", "restore", "replay", "validate")
# Share of the whole recovery each step accounts for in the percentage (replay dominates).
_WEIGHTS = {"detect": 0.02, "restore": 0.18, "replay": 0.70, "validate": 0.10}


@dataclass
class Step:
    name: str
    status: str = "pending"  # pending | running | done | failed
    started_at: float | None = None
    seconds: float | None = None
    done: int = 0
    total: int = 0
    detail: str = ""

    def fraction(self) -> float:
        if self.status == "done":
            return 1.0
        if self.status == "running" and self.total > 0:
            return min(1.0, self.done / self.total)
        return 0.0


@dataclass
class RecoveryTracker:
    """The progress of one recovery; every method may be called from any thread."""

    state: RecoveryState = RecoveryState.HEALTHY
    steps: dict[str, Step] = field(default_factory=lambda: {name: Step(name) for name in STEPS})
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    """Why the last attempt failed; kept while a retry runs, cleared once recovered."""
    attempt: int = 1
    """The number of the current (or last) attempt; above 1 after a retry."""
    retry_at: float | None = None
    """When the scheduled retry starts (epoch seconds); None when none is scheduled."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _move(self, target: RecoveryState) -> None:
        assert target in _ALLOWED[self.state], f"recovery cannot go from {self.state.value} to {target.value}"
        self.state = target

    def failure_detected(self, reason: str) -> None:
        """Start the recovery; after a failed attempt only once a retry was scheduled, as a new attempt.
        Announcing again a failure already detected (a rebuild accepted before its recovery starts)
        only records the reason."""
        with self._lock:
            if self.state == RecoveryState.FAILURE_DETECTED:
                pass
            elif self.state == RecoveryState.RECOVERY_FAILED and self.retry_at is not None:
                self.state = RecoveryState.FAILURE_DETECTED
                self.steps = {name: Step(name) for name in STEPS}
                self.started_at = self.finished_at = self.retry_at = None
                self.attempt += 1
            else:
                self._move(RecoveryState.FAILURE_DETECTED)
            self.steps["detect"].detail = reason

    def schedule_retry(self, delay_seconds: float) -> None:
        """After a failed attempt: another starts in ``delay_seconds`` (reported until it does)."""
        with self._lock:
            assert self.state == RecoveryState.RECOVERY_FAILED, f"nothing to retry in {self.state.value}"
            self.retry_at = time.time() + delay_seconds

    def begin(self) -> None:
        with self._lock:
            self._move(RecoveryState.RECOVERY_IN_PROGRESS)
            self.started_at = time.monotonic()

    def start_step(self, name: str, total: int = 0, detail: str = "") -> None:
        with self._lock:
            step = self.steps[name]
            assert step.status == "pending", f"step {name} already {step.status}"
            if name == "validate":
                self._move(RecoveryState.VALIDATING)
            step.status, step.started_at, step.total, step.detail = "running", time.monotonic(), total, detail

    def advance(self, name: str, done: int, total: int | None = None) -> None:
        with self._lock:
            step = self.steps[name]
            if total is not None:
                step.total = total
            step.done = done

    def finish_step(self, name: str, detail: str | None = None) -> None:
        with self._lock:
            step = self.steps[name]
            assert step.status in ("running", "pending"), f"step {name} already {step.status}"
            now = time.monotonic()
            step.seconds = 0.0 if step.started_at is None else now - step.started_at
            step.status = "done"
            step.done = step.total
            if detail is not None:
                step.detail = detail

    def recovered(self) -> None:
        with self._lock:
            self._move(RecoveryState.RECOVERED)
            self.finished_at = time.monotonic()
            self.error = None

    def failed(self, error: str) -> None:
        with self._lock:
            self._move(RecoveryState.RECOVERY_FAILED)
            self.error = error
            self.finished_at = time.monotonic()
            for step in self.steps.values():
                if step.status == "running":
                    step.status = "failed"

    def percent(self) -> float:
        with self._lock:
            return self._percent()

    def _percent(self) -> float:
        if self.state == RecoveryState.RECOVERED:
            return 100.0
        return round(100.0 * sum(_WEIGHTS[n] * s.fraction() for n, s in self.steps.items()), 1)

    def _eta_seconds(self) -> float | None:
        replay = self.steps["replay"]
        if replay.status != "running" or not replay.started_at or replay.done <= 0:
            return None
        elapsed = time.monotonic() - replay.started_at
        return round(elapsed / replay.done * (replay.total - replay.done), 2)

    def status(self) -> dict[str, object]:
        """The JSON document of ``/recovery/status`` and ``rewind recover --json``."""
        with self._lock:
            now = time.monotonic()
            current = next((s.name for s in self.steps.values() if s.status == "running"), None)
            end = self.finished_at or now
            return {
                "state": self.state.value,
                "progress_percent": self._percent(),
                "current_step": current,
                "completed_steps": [s.name for s in self.steps.values() if s.status == "done"],
                "remaining_steps": [
                    s.name for s in self.steps.values() if s.status in ("pending", "running")
                ],
                "eta_seconds": self._eta_seconds(),
                "elapsed_seconds": None if self.started_at is None else round(end - self.started_at, 3),
                "error": self.error,
                "attempt": self.attempt,
                "retrying": self.retry_at is not None,
                "next_attempt_at": None if self.retry_at is None else _iso(self.retry_at),
                "next_attempt_in_seconds": (
                    None if self.retry_at is None else round(max(0.0, self.retry_at - time.time()), 3)
                ),
                "steps": {
                    s.name: {
                        "status": s.status,
                        "seconds": None if s.seconds is None else round(s.seconds, 4),
                        "done": s.done,
                        "total": s.total,
                        "detail": s.detail,
                    }
                    for s in self.steps.values()
                },
            }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
