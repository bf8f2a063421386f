"""The console's jobs: time travels and histories, each run in a child process, polled by id.

A job is started by ``POST /timetravel`` or ``POST /history`` and read by ``GET /timetravel/{id}`` or
``GET /history/{id}``. Its work runs in :mod:`rewind.console_worker`, a process of its own, so the
service's projector and event loop never wait on it; a thread of this process only reads the
child's progress lines.

Guarantees:

* At most :data:`RUNNING_MAX` jobs run at once; starting another meanwhile is refused with a
  :class:`JobsBusy` naming the running ones (the API answers 429). A job still running after
  :data:`MAX_SECONDS` is stopped and fails, so a stalled one cannot block the others for ever. At
  most :data:`KEPT_MAX` finished jobs are kept; the oldest finished one is forgotten first.
* A time travel builds into a temporary directory of its own under ``$home/console`` (never the live
  state) that is removed once the job ends, whether it succeeded, failed or was stopped.
* :meth:`Jobs.close` kills every running child and removes every directory: none outlives the API.
* A job's document (:meth:`Job.document`) always has ``id``, ``kind``, ``status`` (``running``,
  ``done``, ``failed``), ``request``, ``progress`` (``phase``, ``done``, ``total``, ``percent``),
  ``started_at``, ``finished_at``, ``seconds``, and once ended ``result`` or ``error``/``fix``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings

__all__ = ["KEPT_MAX", "RUNNING_MAX", "Job", "Jobs", "JobsBusy"]

RUNNING_MAX: Final = 1
"""Jobs running at once: each replays the log on a core of its own."""
KEPT_MAX: Final = 8
"""Finished jobs kept for ``GET``; older ones are forgotten."""
STOP_SECONDS: Final = 2.0
MAX_SECONDS: Final = 3600.0
"""A job still running after this long is stopped (a stalled broker read, say)."""


class JobsBusy(RewindError):
    """Another job is running; this one was not started."""


class Job:
    """One job and its child process; thread-safe."""

    def __init__(self, kind: str, request: dict[str, str], out: Path | None) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.kind = kind
        self.request = request
        self.out = out
        self.status = "running"
        self.phase = "starting"
        self.done = 0
        self.total = 0
        self.started_at = time.time()
        self.finished_at: float | None = None
        self.result: Any = None
        self.error: str | None = None
        self.fix: str | None = None
        self.child: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def document(self) -> dict[str, Any]:
        with self._lock:
            percent = 100.0 * self.done / self.total if self.total else 0.0
            if self.status == "done":
                percent = 100.0
            end = self.finished_at or time.time()
            body: dict[str, Any] = {
                "id": self.id,
                "kind": self.kind,
                "status": self.status,
                "request": self.request,
                "progress": {
                    "phase": self.phase,
                    "done": self.done,
                    "total": self.total,
                    "percent": round(min(100.0, percent), 1),
                },
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "seconds": round(end - self.started_at, 3),
            }
            if self.status == "done":
                body["result"] = self.result
            if self.status == "failed":
                body["error"] = self.error
                body["fix"] = self.fix
            return body

    def _progress(self, progress: dict[str, Any]) -> None:
        with self._lock:
            self.phase = str(progress.get("phase", self.phase))
            self.done = int(progress.get("done", 0))
            self.total = int(progress.get("total", 0))

    def _finish(self, result: Any = None, error: str | None = None, fix: str | None = None) -> None:
        with self._lock:
            if self.status != "running":
                return
            self.finished_at = time.time()
            if error is None:
                self.status, self.result, self.phase = "done", result, "done"
            else:
                self.status, self.error, self.fix = "failed", error, fix

    @property
    def running(self) -> bool:
        with self._lock:
            return self.status == "running"


class Jobs:
    """The jobs of one API: started, followed and forgotten here."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closed = False

    def start(self, settings: Settings, kind: str, request: dict[str, str]) -> Job:
        """Start ``kind`` (``timetravel`` or ``history``) on ``request``; raises :class:`JobsBusy`
        when :data:`RUNNING_MAX` jobs already run."""
        environ = settings.child_environ()
        with self._lock:
            if self._closed:
                raise RewindError("the API is stopping", "start the job again once the service is up")
            running = [job.id for job in self._jobs.values() if job.running]
            if len(running) >= RUNNING_MAX:
                raise JobsBusy(
                    f"{len(running)} console job(s) already running ({', '.join(running)}); "
                    f"at most {RUNNING_MAX} at once",
                    "wait for it to end (GET /timetravel/{id} or /history/{id}), then start again",
                )
            out = None
            if kind == "timetravel":
                parent = settings.home / "console"
                parent.mkdir(parents=True, exist_ok=True)
                out = Path(tempfile.mkdtemp(prefix="timetravel-", dir=parent)) / "state"
            job = Job(kind, request, out)
            self._jobs[job.id] = job
            self._forget_old()
        child_request: dict[str, Any] = dict(request)
        if out is not None:
            child_request["out"] = str(out)
        try:
            job.child = subprocess.Popen(
                [sys.executable, "-m", "rewind.console_worker", kind, json.dumps(child_request)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environ,
            )
        except OSError as exc:
            job._finish(error=f"cannot start the job's process: {exc}", fix="see the service log")
            self._remove_out(job)
            return job
        threading.Thread(target=self._follow, args=(job,), name=f"rewind-job-{job.id}", daemon=True).start()
        limit = threading.Timer(MAX_SECONDS, self._overrun, args=(job,))
        limit.daemon = True
        limit.start()
        return job

    @staticmethod
    def _overrun(job: Job) -> None:
        """Stop a job that ran :data:`MAX_SECONDS`: it would keep every other job waiting."""
        child = job.child
        if child is None or child.poll() is not None:
            return
        job._finish(
            error=f"the job ran for {MAX_SECONDS:g} s and was stopped",
            fix="check the brokers (see /health); a narrower point or window replays less",
        )
        child.kill()

    def get(self, job_id: str, kind: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.kind == kind else None

    def close(self) -> None:
        """Kill every running child and remove every job's directory."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
        for job in jobs:
            job._finish(error="the API stopped", fix="start the job again once the service is up")
            child = job.child
            if child is not None and child.poll() is None:
                child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(STOP_SECONDS)
            self._remove_out(job)

    def _forget_old(self) -> None:
        finished = [job for job in self._jobs.values() if not job.running]
        for job in sorted(finished, key=lambda j: j.started_at)[: max(0, len(finished) - KEPT_MAX)]:
            del self._jobs[job.id]

    def _follow(self, job: Job) -> None:
        child = job.child
        if child is None or child.stdout is None or child.stderr is None:
            return
        last: dict[str, Any] = {}
        try:
            for line in child.stdout:
                try:
                    document = json.loads(line)
                except ValueError:
                    continue
                if "progress" in document:
                    job._progress(document["progress"])
                else:
                    last = document
            stderr = child.stderr.read()
            child.wait()
        finally:
            self._remove_out(job)
        if "result" in last:
            job._finish(result=last["result"])
        elif "error" in last:
            job._finish(error=str(last["error"]), fix=str(last.get("fix") or "see the service log"))
        else:
            tail = stderr.strip().splitlines()[-1:] or [f"exit status {child.returncode}"]
            job._finish(error=f"the job's process failed: {tail[0]}", fix="see the service log")

    @staticmethod
    def _remove_out(job: Job) -> None:
        if job.out is not None:
            shutil.rmtree(job.out.parent, ignore_errors=True)
