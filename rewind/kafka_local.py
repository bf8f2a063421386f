"""A single-node Apache Kafka broker (KRaft, combined broker and controller) run on the local JDK.

The broker jars are the official Apache Kafka artifacts from Maven Central, fetched by Maven from the
pom kept in ``rewind/kafka_dist/`` into a cache outside the repository, and reused by every later run.
The broker's data lives in ``$REWIND_HOME/kafka``; it listens on 127.0.0.1 only, and writes its
bootstrap address to ``$REWIND_HOME/bootstrap`` where every other command finds it.

Every way this can fail — no JDK, no Maven, a failed fetch, a port in use, a damaged data directory,
a broker that dies while starting — raises :class:`RewindError` naming the problem and the fix.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rewind.ground.errors import RewindError
from rewind.local_process import (
    find_java,
    free_port,
    last_lines,
    launch,
    port_is_free,
    running_pid,
    stop_group,
)

KAFKA_VERSION = os.environ.get("REWIND_KAFKA_VERSION", "4.3.1")
POM = Path(__file__).parent / "kafka_dist" / "pom.xml"
HEAP = "512m"
_DOCKER_HINT = "or run `docker compose up` and set REWIND_BOOTSTRAP=127.0.0.1:9092"


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the broker jars of one Kafka version are kept, outside any repository."""
    root = os.environ.get("REWIND_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rewind"
    )
    return Path(root) / f"kafka-{version}"


@dataclass(frozen=True)
class BrokerStatus:
    """What `rewind kafka status` reports."""

    running: bool
    pid: int | None
    address: str | None
    version: str
    data_dir: str
    data_bytes: int

    def as_dict(self) -> dict[str, object]:
        return {
            "running": self.running,
            "pid": self.pid,
            "address": self.address,
            "kafka_version": self.version,
            "data_dir": self.data_dir,
            "data_bytes": self.data_bytes,
        }


def fetch(version: str = KAFKA_VERSION, quiet: bool = False) -> Path:
    """The directory of broker jars, fetched with Maven on first use and cached afterwards."""
    target = cache_dir(version)
    libs = target / "libs"
    marker = target / ".complete"
    if marker.is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RewindError(
            f"Kafka {version} is not in the cache ({target}) and Maven (`mvn`) is not on PATH to fetch it",
            f"install Maven (Debian: apt-get install maven), {_DOCKER_HINT}",
        )
    staging = target / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    if not quiet:
        print(f"fetching Apache Kafka {version} from Maven Central into {target} ...", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [ln for ln in (result.stdout + result.stderr).splitlines() if "ERROR" in ln]
        reason = lines[0].replace("[ERROR]", "").strip() if lines else f"mvn exited {result.returncode}"
        raise RewindError(
            f"fetching Apache Kafka {version} with Maven failed: {reason}",
            "check that Maven Central is reachable (proxy settings live in ~/.m2/settings.xml) and "
            f"that Kafka {version} exists there; {_DOCKER_HINT}",
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    marker.write_text(version + "\n")
    return libs


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes in URL-safe base64, never starting with "-" (as
    Kafka's own ``Uuid.randomUuid`` ensures), which a command line would read as an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """The broker that belongs to one ``REWIND_HOME``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.dir = home / "kafka"
        self.data = self.dir / "data"
        self.pid_file = self.dir / "broker.pid"
        self.port_file = self.dir / "ports"
        self.log_file = self.dir / "broker.log"
        self.properties = self.dir / "server.properties"
        self.bootstrap_file = home / "bootstrap"

    def pid(self) -> int | None:
        """The broker's pid if it is running, else None (a stale pid file is removed)."""
        return running_pid(self.pid_file, b"kafka.Kafka")

    def address(self) -> str | None:
        try:
            return self.bootstrap_file.read_text().strip() or None
        except OSError:
            return None

    def status(self) -> BrokerStatus:
        pid = self.pid()
        return BrokerStatus(
            running=pid is not None,
            pid=pid,
            address=self.address() if pid else None,
            version=KAFKA_VERSION,
            data_dir=str(self.data),
            data_bytes=_dir_size(self.data) if self.data.exists() else 0,
        )

    def check_data_dir(self) -> None:
        """Refuse a data directory that holds files but no readable KRaft identity."""
        if not self.data.exists() or not any(self.data.iterdir()):
            return
        meta = self.data / "meta.properties"
        problem = None
        if not meta.is_file():
            problem = "meta.properties is missing"
        else:
            text = meta.read_text(errors="replace")
            if "cluster.id=" not in text or "node.id=" not in text:
                problem = "meta.properties has no cluster.id or node.id"
        if problem:
            raise RewindError(
                f"the broker's data directory {self.data} is damaged: {problem}",
                f"move it aside to keep its data (mv {self.data} {self.data}.damaged), or erase it with "
                "`rewind kafka reset --yes`; then `rewind kafka start`",
            )

    def _choose_ports(self, port: int | None) -> tuple[int, int]:
        if port is not None:
            if port and not port_is_free(port):
                raise RewindError(
                    f"port {port} on 127.0.0.1 is already in use by another process",
                    "pick another port with --port, or omit --port to use a free one, or stop what "
                    f"listens there (ss -ltnp 'sport = :{port}')",
                )
            broker = port or free_port()
            return broker, free_port()
        try:
            previous = [int(p) for p in self.port_file.read_text().split()]
            if len(previous) == 2 and all(port_is_free(p) for p in previous):
                return previous[0], previous[1]
        except (OSError, ValueError):
            pass
        return free_port(), free_port()

    def _write_properties(self, broker_port: int, controller_port: int) -> None:
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data.resolve()),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # a cluster member may ask for a session timeout down to 1 s (Kafka's default floor is 6 s),
            # so a killed member's partitions move within seconds (docs/cluster.md)
            "group.min.session.timeout.ms": "1000",
            # the same for members on the consumer group protocol (KIP-848), whose heartbeat interval
            # the coordinator sets: Kafka's floors are a 45 s session and a 5 s heartbeat
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "100",
            "log.retention.hours": "-1",
        }
        self.properties.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        self.port_file.write_text(f"{broker_port} {controller_port}\n")
        (self.dir / "log4j2.properties").write_text(
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.stdout.ref = STDOUT\n"
            "appender.stdout.type = Console\n"
            "appender.stdout.name = STDOUT\n"
            "appender.stdout.layout.type = PatternLayout\n"
            "appender.stdout.layout.pattern = [%d] %p %m (%c)%n\n"
            "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
            "logger.apache.name = org.apache.kafka\nlogger.apache.level = WARN\n"
        )

    def _format(self, java: str, libs: Path) -> None:
        result = subprocess.run(
            [
                java,
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={new_cluster_id()}",
                "-c",
                str(self.properties),
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            detail = " ".join((result.stdout + result.stderr).split()[-40:])
            raise RewindError(
                f"formatting the broker's data directory {self.data} failed: {detail}",
                "erase it with `rewind kafka reset --yes` and start again",
            )

    def start(self, port: int | None = None, timeout: float = 60.0) -> BrokerStatus:
        """Start the broker and return once it answers a metadata request; no-op if it runs."""
        if self.pid() is not None:
            return self.status()
        self.check_data_dir()
        java = find_java(_DOCKER_HINT)
        libs = fetch()
        broker_port, controller_port = self._choose_ports(port)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self._write_properties(broker_port, controller_port)
        if not (self.data / "meta.properties").is_file():
            self._format(java, libs)
        address = f"127.0.0.1:{broker_port}"
        command = [
            java,
            f"-Xms{HEAP}",
            f"-Xmx{HEAP}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.properties),
        ]
        process = launch(command, self.log_file, self.pid_file, "rewind kafka start")
        self._wait_until_ready(process, address, timeout)
        self.bootstrap_file.write_text(address + "\n")
        return self.status()

    def _wait_until_ready(self, process: subprocess.Popen[bytes], address: str, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": address, "log_level": 0})
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise RewindError(
                    f"the Kafka broker exited with code {process.returncode} while starting:\n"
                    + self.tail(15),
                    f"read {self.log_file}; if the data directory is damaged, `rewind kafka reset --yes`",
                )
            try:
                metadata = admin.list_topics(timeout=1.0)
                if metadata.brokers:
                    return
            except Exception:
                pass
            time.sleep(0.2)
        self.stop()
        raise RewindError(
            f"the Kafka broker did not answer a metadata request at {address} within {timeout:.0f}s",
            f"read {self.log_file}, then try again with a longer --timeout",
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop gracefully (SIGTERM, wait, then SIGKILL); True if a broker was running."""
        pid = self.pid()
        if pid is None:
            return False
        stop_group(pid, self.pid_file, timeout)
        return True

    def reset(self) -> None:
        """Erase the broker's data (it must be stopped)."""
        if self.pid() is not None:
            raise RewindError("the broker is running", "stop it first with `rewind kafka stop`")
        shutil.rmtree(self.data, ignore_errors=True)
        self.bootstrap_file.unlink(missing_ok=True)

    def tail(self, lines: int = 50) -> str:
        return last_lines(self.log_file, lines)
