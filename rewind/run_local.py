"""``make run``: from a fresh clone to a running service, in one command.

Starts the local Kafka broker (unless one already runs for this REWIND_HOME), creates the topics,
feeds a simulated live trading flow at a modest steady rate, and runs ``rewind serve``. Prints the
URLs once the service is ready. Ctrl-C (or SIGTERM) stops everything it started — the simulator, the
service (which takes a final snapshot) and the broker — and leaves no process behind.

``REWIND_RUN_INSTANCES=3`` starts three services instead, the members of one cluster
(docs/cluster.md): on ``http.port``, ``http.port`` + 1 and + 2, each with its own home under
REWIND_HOME.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType

from confluent_kafka.admin import AdminClient

from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings, load_settings
from rewind.ground.topics import desired_topics, ensure_topics
from rewind.kafka_local import LocalKafka
from rewind.s3_local import LocalS3

REWIND = str(Path(sys.executable).with_name("rewind"))
FLOW_RATE = os.environ.get("REWIND_RUN_RATE", "200")
LOCAL_BUCKET = "rewind-snapshots"
"""The bucket `make run` ships snapshots to on its local S3 server, unless snapshots.remote.bucket is set."""
READY_TIMEOUT = 120.0
INSTANCES_ENV = "REWIND_RUN_INSTANCES"
"""How many ``rewind serve`` instances `make run` starts: more than 1 makes them a cluster."""


def _wait_ready(
    url: str, service: subprocess.Popen[bytes], stop: threading.Event, read_token: str = ""
) -> bool:
    """Wait for ``/ready`` (it needs no token) to answer 200; False when the service exits, its
    recovery fails (``/recovery/status``, asked with ``read_token`` when one is set) or time runs out."""
    headers = {"Authorization": f"Bearer {read_token}"} if read_token else {}
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and not stop.is_set():
        if service.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        try:
            request = urllib.request.Request(f"{url}/recovery/status", headers=headers)
            with urllib.request.urlopen(request, timeout=2) as response:
                status = json.load(response)
            if status.get("state") == "RECOVERY_FAILED":
                print(f"error: recovery failed: {status.get('error')}", file=sys.stderr, flush=True)
                return False
        except (OSError, ValueError):
            pass
        stop.wait(0.5)
    return False


def _stop_child(name: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within {timeout:.0f}s; killing it", flush=True)
            process.kill()
            process.wait()


def _instances() -> int:
    raw = os.environ.get(INSTANCES_ENV, "1").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise RewindError(f"{INSTANCES_ENV}={raw!r} is not a number of instances", f"set {INSTANCES_ENV}=3")
    return int(raw)


def _service_url(settings: Settings, index: int) -> str:
    return f"http://{settings['http.host']}:{int(settings['http.port']) + index}"


def _start_services(
    settings: Settings, env: dict[str, str], s3_endpoint: str
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """One ``rewind serve``, or with ``REWIND_RUN_INSTANCES=N`` the N members of a cluster: each its
    own home (``$REWIND_HOME/member-<i>``) and port (``http.port`` + i), all shipping snapshots to
    the one local S3 server."""
    count = _instances()
    if count == 1:
        return [("service", subprocess.Popen([REWIND, "serve"], env=env, start_new_session=True))]
    members = []
    for index in range(count):
        member_env = env | {
            "REWIND_HOME": str(settings.home / f"member-{index}"),
            "REWIND_HTTP_PORT": str(int(settings["http.port"]) + index),
            "REWIND_CLUSTER_ENABLED": "1",
            "REWIND_CLUSTER_SESSION_TIMEOUT_MS": env.get("REWIND_CLUSTER_SESSION_TIMEOUT_MS", "3000"),
        }
        if member_env.get("REWIND_SNAPSHOTS_REMOTE_ENDPOINT") == "local":
            member_env["REWIND_SNAPSHOTS_REMOTE_ENDPOINT"] = s3_endpoint
        process = subprocess.Popen([REWIND, "serve"], env=member_env, start_new_session=True)
        members.append((f"member {index}", process))
    return members


def run(settings: Settings) -> int:
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    broker = LocalKafka(settings.home)
    started_broker = broker.pid() is None
    status = broker.start()
    print(
        f"kafka: {status.address} (pid {status.pid}{', started' if started_broker else ', already running'})"
    )
    env = dict(os.environ, REWIND_HOME=str(settings.home), REWIND_BOOTSTRAP=str(status.address))
    s3 = LocalS3(settings)
    started_s3 = s3.pid() is None
    s3_status = s3.start()
    print(
        f"s3: {s3_status.endpoint} (pid {s3_status.pid}{', started' if started_s3 else ', already running'})"
    )
    if not str(settings["snapshots.remote.bucket"]):
        env |= {
            "REWIND_SNAPSHOTS_REMOTE_BUCKET": LOCAL_BUCKET,
            "REWIND_SNAPSHOTS_REMOTE_ENDPOINT": "local",
            "AWS_ACCESS_KEY_ID": str(settings["s3.access_key_id"]),
            "AWS_SECRET_ACCESS_KEY": str(settings["s3.secret_access_key"]),
        }
        (s3.data / LOCAL_BUCKET).mkdir(parents=True, exist_ok=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        ensure_topics(AdminClient({"bootstrap.servers": str(status.address)}), desired_topics(settings))
        # Children get their own process group: Ctrl-C reaches this orchestrator only, which then
        # stops them in order (flow first, then the service so its final snapshot sees everything).
        flow = subprocess.Popen(
            [
                REWIND,
                "simulate",
                "--events",
                "1000000000",
                "--rate",
                FLOW_RATE,
                "--anomaly-rate",
                "0.001",
                "--json",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        children.append(("simulator", flow))
        services = _start_services(settings, env, str(s3_status.endpoint))
        children += services
        urls = [_service_url(settings, index) for index in range(len(services))]
        url = urls[0]
        for (name, service), each in zip(services, urls, strict=True):
            if not _wait_ready(each, service, stop, str(settings["http.read_token"])):
                if stop.is_set():
                    return 0
                print(f"error: {name} did not become ready at {each}/ready", file=sys.stderr, flush=True)
                return 1
        if len(services) > 1:
            print(f"\ncluster of {len(services)} members: {'  '.join(urls)}  (`rewind cluster status`)")
        print(
            "\nrewind is running:\n"
            f"  API          {url}/state/positions   {url}/lag   {url}/snapshots\n"
            f"  health       {url}/health   {url}/ready   {url}/recovery/status\n"
            f"  metrics      {url}/metrics   (Prometheus and Grafana: `docker compose up`)\n"
            f"  OpenAPI      {url}/openapi.yaml\n"
            f"  flow         simulated trading at {FLOW_RATE} events/s into {settings.events_topic}\n"
            "  CLI          .venv/bin/rewind state positions | rewind lag | rewind history ...\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stop.wait(1.0):
            for name, child in children:
                if child.poll() is not None:
                    print(f"error: {name} exited with code {child.returncode}", file=sys.stderr, flush=True)
                    return 1
        return 0
    finally:
        print("stopping ...", flush=True)
        for name, child in children:
            _stop_child(name, child)
        if started_s3:
            s3.stop()
        if started_broker:
            broker.stop()
        print("stopped: nothing left running", flush=True)


def main() -> None:
    try:
        sys.exit(run(load_settings()))
    except RewindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
