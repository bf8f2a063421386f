"""`/health` of a real `rewind serve`: every check passes on a healthy service, and each check fails on
its own (a disk threshold above the free space, snapshots that cannot be written at a tiny cadence, a
recovery kept from the state directory, a projector kept from committing while there is lag). The
probes need no read token; a rebuild shows from its 202 on. Real broker, real LMDB, real HTTP."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from tests.cli_runner import REWIND
from tests.http_helpers import free_port, wait_for
from tests.pipeline import Pipeline

READ_TOKEN = "health-read-token"
TOKEN = "health-token"
CHECKS = {"broker", "projector", "disk", "snapshots", "recovery"}


def _request(url: str, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Served:
    """A `rewind serve` subprocess with the API's read token and token set."""

    def __init__(self, pipeline: Pipeline, extra: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = os.environ | pipeline.env | {"REWIND_HTTP_READ_TOKEN": READ_TOKEN, "REWIND_HTTP_TOKEN": TOKEN}
        self.process = subprocess.Popen(
            [REWIND, "serve", "--port", str(self.port)],
            env=env | {"REWIND_LAG_WINDOW_SECONDS": "5"} | extra,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return _request(self.url + path, token=token)

    def wait_for(self, what: str, predicate: Callable[[], Any], limit: float = 90.0) -> Any:
        return wait_for(what, predicate, limit, self.process)

    def wait_ready(self) -> None:
        self.wait_for("/ready 200", lambda: self.get("/ready")[0] == 200)

    def wait_failing(
        self, failing: list[str], meanwhile: Callable[[], object] = lambda: None
    ) -> dict[str, Any]:
        """The first /health 503 whose failing checks are exactly ``failing``; ``meanwhile`` is called
        after each /health that is not."""

        seen: list[Any] = []

        def health() -> dict[str, Any] | None:
            status, body = self.get("/health")
            seen[:] = [status, body]
            meanwhile()
            return body if status == 503 and body["failing"] == failing else None

        try:
            found: dict[str, Any] = self.wait_for(f"/health failing {failing}", health)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the last /health: {seen}") from None
        assert set(found["checks"]) == CHECKS
        for name in failing:
            check = found["checks"][name]
            assert check["ok"] is False and check["error"] and check["fix"], check
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def _serving(pipeline: Pipeline, **extra: str) -> Iterator[Served]:
    served = Served(pipeline, extra)
    try:
        yield served
    finally:
        served.stop()


def _pipeline(bootstrap: str, unique_name: str, tmp_path: Path, events: int = 2_000) -> Pipeline:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    pipeline.simulate(events=events, seed=17)
    return pipeline


def test_a_healthy_service_passes_every_check_and_a_rebuild_shows_from_its_202(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = _pipeline(bootstrap, unique_name, tmp_path)
    with _serving(pipeline) as served:
        served.wait_ready()
        status, health = served.get("/health")
        assert status == 200 and set(health["checks"]) == CHECKS, health
        assert all(check["ok"] for check in health["checks"].values())
        assert health["checks"]["projector"]["running"] is True
        assert set(health["checks"]["disk"]["directories"]) == {"state", "snapshot"}
        assert served.get("/live") == (200, {"status": "alive"})
        assert served.get("/recovery/status")[0] == 401, "the recovery document needs the read token"

        status, scheduled = _request(served.url + "/rebuild", "POST", TOKEN)
        assert status == 202, scheduled
        status, recovery = served.get("/recovery/status", READ_TOKEN)
        assert recovery["state"] != "RECOVERED", recovery
        assert recovery["steps"]["detect"]["detail"] == "rebuild requested through the API"
        status, ready = served.get("/ready")
        assert status == 503 and "state is not recovered yet (see /recovery/status)" in ready["reasons"]

        served.wait_ready()
        recovery = served.get("/recovery/status", READ_TOKEN)[1]
        assert recovery["state"] == "RECOVERED"
        assert recovery["steps"]["detect"]["detail"] == "rebuild requested through the API"
        assert served.get("/health")[0] == 200


def test_disk_fails_alone_below_the_free_space_threshold_and_naming_both_directories(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = _pipeline(bootstrap, unique_name, tmp_path)
    above_free = shutil.disk_usage(tmp_path).free // (1 << 20) + 1_000_000
    with _serving(pipeline, REWIND_HEALTH_MIN_FREE_MB=str(above_free)) as served:
        served.wait_ready()
        disk = served.wait_failing(["disk"])["checks"]["disk"]
        assert f"health.min_free_mb={above_free}" in disk["error"]
        assert str(pipeline.home / "state") in disk["error"]
        assert str(pipeline.home / "snapshots") in disk["error"]
        assert served.get("/ready")[0] == 200, "a full disk threatens the next recovery, not the reads"


def test_snapshots_fail_alone_when_none_is_taken_within_three_times_the_cadence(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = _pipeline(bootstrap, unique_name, tmp_path)
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("snapshots cannot be written under a file\n")
    with _serving(
        pipeline,
        REWIND_SNAPSHOTS_EVERY_SECONDS="1",
        REWIND_SNAPSHOTS_DIR=str(not_a_directory / "snapshots"),
    ) as served:
        served.wait_ready()
        snapshots = served.wait_failing(["snapshots"])["checks"]["snapshots"]
        assert snapshots["max_age_seconds"] == 3
        assert "no snapshot was taken" in snapshots["error"]


def test_recovery_fails_alone_while_another_process_holds_the_state_then_passes(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = _pipeline(bootstrap, unique_name, tmp_path, events=200)
    state = pipeline.home / "state"
    state.mkdir(parents=True)
    with open(state / "WRITER.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("the test\n")
        lock.flush()
        with _serving(pipeline) as served:
            recovery = served.wait_failing(["recovery"])["checks"]["recovery"]
            assert recovery["state"] == "RECOVERY_FAILED" and recovery["retrying"] is True
            assert served.get("/live")[0] == 200
            fcntl.flock(lock, fcntl.LOCK_UN)
            served.wait_ready()
            assert served.get("/health")[0] == 200


def test_projector_fails_alone_when_it_cannot_commit_while_there_is_lag(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = _pipeline(bootstrap, unique_name, tmp_path)
    with _serving(pipeline, REWIND_HEALTH_STALL_SECONDS="2") as served:
        served.wait_ready()
        store = lmdb.open(str(pipeline.home / "state" / "events-p0000"), max_dbs=0)
        try:
            blocked = store.begin(write=True)
            seeds = iter(range(18, 1_000))
            try:
                # Events keep coming: once a batch of them waits on the held lock, the rest are lag.
                projector = served.wait_failing(
                    ["projector"], lambda: pipeline.simulate(events=100, seed=next(seeds))
                )["checks"]["projector"]
                assert projector["running"] is True and projector["lag_messages"] > 0
                assert "health.stall_seconds=2" in projector["error"]
            finally:
                blocked.abort()
            served.wait_for("/health 200 once it commits again", lambda: served.get("/health")[0] == 200)
        finally:
            store.close()
