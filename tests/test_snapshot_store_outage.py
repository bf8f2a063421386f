"""The object store goes down while `rewind serve` snapshots every 2 s: the projector carries on, the
uploads queue (oldest dropped past the bound), retry, catch up once it is back, and nothing is lost.
Also the upload queue's own rules, on its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rewind.ground.settings import load_settings
from rewind.s3_local import LocalS3
from snapshotter.upload_queue import Attempt, Outcome, UploadQueue
from tests.cli_runner import REWIND, run_rewind
from tests.http_helpers import free_port, get
from tests.pipeline import Pipeline
from tests.s3_server import remote_env, s3_client


def _metrics(url: str) -> dict[str, float]:
    status, text = get(f"{url}/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return values


def _wait_for(predicate: Any, limit: float, what: str) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not reached within {limit:.0f} s")


def _remote_newest(endpoint: str, bucket: str) -> dict[str, int]:
    client: Any = s3_client(endpoint)
    newest: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="rewind/"):
        for item in page.get("Contents", []):
            _prefix, store, offset, name = item["Key"].split("/")
            if name == "MANIFEST.json":
                newest[store] = max(newest.get(store, -1), int(offset))
    return newest


def _local_newest(snapshots: Path) -> dict[str, int]:
    newest = {}
    for store in snapshots.iterdir() if snapshots.is_dir() else []:
        offsets = [int(p.name) for p in store.iterdir() if p.name.isdigit()]
        if offsets:
            newest[store.name] = max(offsets)
    return newest


@pytest.mark.slow
def test_uploads_survive_an_object_store_outage_without_stalling_the_projector(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    bucket = "outage"
    env = (
        pipeline.env
        | remote_env("local", bucket)
        | {
            "REWIND_SNAPSHOTS_EVERY_SECONDS": "2",
            "REWIND_SNAPSHOTS_EVERY_EVENTS": "0",
            "REWIND_SNAPSHOTS_REMOTE_QUEUE_MAX": "2",
            "REWIND_SNAPSHOTS_REMOTE_RETRY_MAX_SECONDS": "1",
        }
    )
    server = LocalS3(load_settings(environ=env))
    status = server.start(timeout=90)
    assert status.endpoint
    endpoint = status.endpoint
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = subprocess.Popen(
        [REWIND, "serve", "--port", str(port)],
        env=os.environ | env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    producing: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(lambda: _ready(url, service), 90, "the service is ready")
        producing = subprocess.Popen(
            [REWIND, "simulate", "--events", "30000", "--seed", "71", "--rate", "1500"],
            env=os.environ | env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: len(_remote_newest(endpoint, bucket)) >= 2, 30, "a first upload")

        server.stop()
        before = _metrics(url)["rewind_events_applied_total"]

        def queue_overflowed() -> bool:
            values = _metrics(url)
            return (
                values.get("rewind_snapshot_upload_failures_total", 0) >= 2
                and values.get("rewind_snapshot_upload_dropped_total", 0) >= 1
            )

        _wait_for(queue_overflowed, 60, "failed uploads and a dropped round")
        during = _metrics(url)
        assert during["rewind_events_applied_total"] > before, "the projector kept going"
        assert during["rewind_snapshot_upload_queue_length"] <= 2

        assert server.start(timeout=90).endpoint == endpoint
        producing.terminate()  # the outage is over: the flow has done its part
        producing.wait(30)

        def caught_up() -> bool:
            local = _local_newest(pipeline.home / "snapshots")
            return (
                bool(local)
                and _remote_newest(endpoint, bucket) == local
                and _metrics(url)["rewind_snapshot_upload_queue_length"] == 0
            )

        _wait_for(caught_up, 60, "the uploads caught up")
        after = _metrics(url)
        assert after["rewind_snapshot_upload_uploaded_total"] >= 2
        assert after["rewind_snapshot_upload_newest_remote_timestamp_seconds"] > 0
    except BaseException:
        server.stop()
        raise
    finally:
        if producing is not None and producing.poll() is None:
            producing.kill()
        service.send_signal(signal.SIGTERM)
        service.wait(60)

    # nothing lost: after losing the host, the bucket and the log rebuild exactly the full replay
    try:
        assert service.returncode == 0, service.stderr.read().decode() if service.stderr else ""
        fresh = tmp_path / "full-replay"
        run_rewind("project", "--until-caught-up", "--state", str(fresh), env=env, timeout=300, check=True)
        expected = json.loads(
            run_rewind("state", "digest", "--json", "--state", str(fresh), env=env, check=True).stdout
        )["digest"]
        shutil.rmtree(pipeline.home / "snapshots")
        shutil.rmtree(pipeline.home / "state")
        report = json.loads(run_rewind("recover", "--json", env=env, timeout=300, check=True).stdout)
        assert {s["snapshot_location"] for n, s in report["stores"].items()} == {"remote"}
        assert report["digest"] == expected
    finally:
        server.stop()


def _ready(url: str, service: subprocess.Popen[bytes]) -> bool:
    assert service.poll() is None, service.stderr.read().decode() if service.stderr else "exited"
    try:
        return get(f"{url}/ready")[0] == 200
    except OSError:
        return False


def test_the_queue_drops_the_oldest_past_its_bound_retries_and_catches_up_in_order() -> None:
    store_up = threading.Event()
    shipped: list[list[int]] = []

    def ship(batch: list[int]) -> Attempt:
        if not store_up.is_set():
            return Attempt(Outcome.RETRY, "store down")
        if batch == [7]:
            return Attempt(Outcome.GIVE_UP, "local copy gone")
        shipped.append(batch)
        return Attempt(Outcome.SHIPPED)

    queue: UploadQueue[int] = UploadQueue(ship, bound=3, retry_max_seconds=0.05, first_retry_seconds=0.01)
    queue.start()
    try:
        for item in range(1, 7):
            queue.offer(item)  # never blocks, whatever the store does
        assert len(queue) == 3
        assert queue.counts.dropped == 3
        assert not queue.wait_idle(0.2), "nothing ships while the store is down"
        assert queue.counts.failed_attempts >= 1 and queue.last_error == "store down"
        store_up.set()
        assert queue.wait_idle(10)
        assert shipped == [[4, 5, 6]], "the backlog in one attempt, oldest first"
        queue.offer(7)
        assert queue.wait_idle(10)
    finally:
        queue.stop(timeout=5)
    assert queue.counts.shipped == 3 and queue.counts.given_up == 1
    assert queue.last_error == ""
