"""The local broker: its lifecycle against a real JVM, and every error path of `rewind kafka start`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from rewind.kafka_local import new_cluster_id
from rewind.local_process import port_is_free
from tests.cli_runner import run_rewind
from tests.kafka_helpers import create_topic, read_topic


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {"REWIND_HOME": str(home)}
    env.update(extra)
    return env


def test_start_without_a_jdk_names_the_problem_and_the_fix(tmp_path: Path) -> None:
    env = _env(tmp_path, PATH=str(tmp_path / "empty-bin"), JAVA_HOME="")
    result = run_rewind("kafka", "start", env=env)
    assert result.returncode == 1
    assert "no Java runtime found" in result.stderr
    assert "install a JDK 17+" in result.stderr and "docker compose up" in result.stderr


def test_start_without_maven_and_no_cache_names_the_problem(tmp_path: Path) -> None:
    java = shutil.which("java")
    assert java, "the test machine has a JDK"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(os.path.realpath(java))
    env = _env(tmp_path / "home", PATH=str(bin_dir), JAVA_HOME="", REWIND_CACHE=str(tmp_path / "cache"))
    result = run_rewind("kafka", "start", env=env)
    assert result.returncode == 1
    assert "Maven (`mvn`) is not on PATH" in result.stderr
    assert "install Maven" in result.stderr


def test_a_failed_fetch_names_the_version_and_the_fix(tmp_path: Path) -> None:
    env = _env(tmp_path / "home", REWIND_CACHE=str(tmp_path / "cache"), REWIND_KAFKA_VERSION="0.0.1-nosuch")
    result = run_rewind("kafka", "fetch", env=env, timeout=300)
    assert result.returncode == 1
    assert "fetching Apache Kafka 0.0.1-nosuch with Maven failed" in result.stderr
    assert "Maven Central is reachable" in result.stderr
    assert not (tmp_path / "cache" / "kafka-0.0.1-nosuch" / ".complete").exists()


def test_a_port_in_time_wait_is_free_for_the_broker() -> None:
    """A broker SIGKILLed a moment ago leaves its ports in TIME_WAIT; the next start reuses them.

    The server socket sets SO_REUSEADDR as the JVM's server sockets do, so its TIME_WAIT connections
    allow the port to be bound again by a socket that sets it too.
    """
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the listening side closes first: its port enters TIME_WAIT
            client.recv(1)
        assert not port_is_free(port), "a listening port is in use"
    assert port_is_free(port), "only TIME_WAIT connections are left on the port"


def test_a_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_rewind("kafka", "start", "--port", str(port), env=_env(tmp_path))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr


def test_a_damaged_data_dir_is_refused_not_reformatted(tmp_path: Path) -> None:
    data = tmp_path / "kafka" / "data"
    data.mkdir(parents=True)
    (data / "rewind.events-0").mkdir()
    result = run_rewind("kafka", "start", env=_env(tmp_path))
    assert result.returncode == 1
    assert "is damaged: meta.properties is missing" in result.stderr
    assert "rewind kafka reset --yes" in result.stderr
    assert (data / "rewind.events-0").is_dir(), "nothing was erased"


def _java_pids_for(home: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"kafka.Kafka" in cmdline and str(home).encode() in cmdline:
                pids.append(int(proc.name))
    return pids


def _produce(address: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": address, "enable.idempotence": True, "acks": "all"})
    for i in range(count):
        producer.produce(topic, key=b"k%d" % (i % 7), value=b"message-%06d" % i)
    assert producer.flush(30) == 0


def _consume_all(address: str, topic: str) -> list[bytes]:
    return [m.value() for m in read_topic(address, topic)]


@pytest.mark.kafka
def test_broker_lifecycle_survives_sigkill_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    started = run_rewind("kafka", "start", "--json", env=env, check=True)
    status = json.loads(started.stdout)
    address = status["address"]
    assert status["running"] and address.startswith("127.0.0.1:")
    assert (home / "bootstrap").read_text().strip() == address

    again = json.loads(run_rewind("kafka", "start", "--json", env=env, check=True).stdout)
    assert again["already_running"] and again["pid"] == status["pid"]

    run_rewind("topics", "create", env=env, check=True)
    if shutil.which("kcat"):
        listing = subprocess.run(["kcat", "-b", address, "-L"], capture_output=True, text=True, timeout=30)
        assert "1 brokers:" in listing.stdout and f"at {address}" in listing.stdout
        for topic in ("rewind.events", "rewind.config", "rewind.deadletter"):
            assert f'topic "{topic}"' in listing.stdout

    _produce(address, "rewind.events", 2000)
    before = sorted(_consume_all(address, "rewind.events"))
    assert len(before) == 2000

    os.kill(status["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _java_pids_for(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    restarted = json.loads(run_rewind("kafka", "start", "--json", env=env, check=True).stdout)
    assert not restarted["already_running"] and restarted["pid"] != status["pid"]
    assert restarted["address"] == address, "the broker comes back on its own address"
    after = sorted(_consume_all(restarted["address"], "rewind.events"))
    assert after == before, "every message produced before the SIGKILL is still there"

    shown = json.loads(run_rewind("kafka", "status", "--json", env=env, check=True).stdout)
    assert shown["running"] and shown["kafka_version"] == "4.3.1" and shown["data_bytes"] > 0

    assert run_rewind("kafka", "stop", env=env, check=True).stdout.strip() == "stopped"
    assert _java_pids_for(home) == [], "no JVM is left behind"
    assert run_rewind("kafka", "status", env=env).returncode == 1


@pytest.mark.parametrize("client", ["confluent-kafka", "aiokafka"])
def test_both_python_clients_work_against_the_broker(bootstrap: str, unique_name: str, client: str) -> None:
    topic = unique_name
    create_topic(bootstrap, topic, partitions=2)
    sent = [b"v%d" % i for i in range(50)]
    if client == "confluent-kafka":
        _produce_values(bootstrap, topic, sent)
        got = _consume_all(bootstrap, topic)
    else:
        got = _aiokafka_roundtrip(bootstrap, topic, sent)
    assert sorted(got) == sorted(sent)


def _produce_values(address: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": address, "acks": "all"})
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0


def _aiokafka_roundtrip(address: str, topic: str, values: list[bytes]) -> list[bytes]:
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def roundtrip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=address, acks="all")
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=address, group_id=f"{topic}-g", auto_offset_reset="earliest"
        )
        await consumer.start()
        got: list[bytes] = []
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while len(got) < len(values) and asyncio.get_running_loop().time() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    got.extend(m.value for m in messages)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    return asyncio.run(roundtrip())


def test_a_new_cluster_id_is_never_read_as_an_option() -> None:
    """One URL-safe base64 id in 64 starts with "-", which kafka-storage's parser took for an option:
    `rewind kafka start` then failed on a fresh home. Every id is 16 bytes and none starts so."""
    ids = [new_cluster_id() for _ in range(5_000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)
    assert len(set(ids)) == len(ids)
