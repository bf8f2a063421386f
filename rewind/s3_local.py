"""A local S3-compatible object store (S3Proxy on its filesystem blobstore) run on the JDK.

It is the remote snapshot store of development, tests and ``make run``: a real S3 server speaking the
same protocol as AWS S3, MinIO or Ceph (signatures, multipart uploads, ETags), not a mock. The jar is
the official S3Proxy release from Maven Central, fetched by Maven (``dependency:copy``, strict
checksums) into a cache outside the repository, then checked against the SHA-512 pinned here, and
reused by every later run. Objects live as plain files under ``$REWIND_HOME/s3/data``; the server
listens on 127.0.0.1 only and writes its endpoint to ``$REWIND_HOME/s3/endpoint``.

Every foreseeable failure (no JDK, no Maven, a failed fetch, a checksum mismatch, a port in use, a
server that dies while starting) raises :class:`RewindError` naming the problem and the fix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings
from rewind.local_process import (
    find_java,
    free_port,
    last_lines,
    launch,
    port_is_free,
    running_pid,
    stop_group,
)

S3PROXY_VERSION = "4.1.0"
S3PROXY_ARTIFACT = f"org.gaul:s3proxy:{S3PROXY_VERSION}:jar:jar-with-dependencies"
S3PROXY_SHA512 = (
    "7ea67712b5f520ba2e3dc8faa9a09fec5cc97a5257f4c353e55ae584dd9074c5"
    "dfaef6941313d3e26e3ea38eded2045e4b6a459791287f2454cb42c5b0d82816"
)
"""Maven Central's published ``.sha512`` of the jar: a cached or fetched jar must hash to it."""
HEAP = "256m"
_DOCKER_HINT = "or run `docker compose up s3` and set REWIND_SNAPSHOTS_REMOTE_ENDPOINT=http://127.0.0.1:8333"


def cache_dir(version: str = S3PROXY_VERSION) -> Path:
    """Where the S3Proxy jar of one version is kept, beside the Kafka artifacts."""
    root = os.environ.get("REWIND_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "rewind"
    )
    return Path(root) / f"s3proxy-{version}"


def _sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(quiet: bool = False) -> Path:
    """The S3Proxy jar, fetched with Maven on first use, checked against its pinned SHA-512."""
    target = cache_dir()
    jar = target / "s3proxy.jar"
    marker = target / ".complete"
    if marker.is_file() and jar.is_file():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RewindError(
            f"S3Proxy {S3PROXY_VERSION} is not in the cache ({target}) and Maven (`mvn`) is not on PATH "
            "to fetch it",
            f"install Maven (Debian: apt-get install maven), {_DOCKER_HINT}",
        )
    staging = target / "partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if not quiet:
        print(f"fetching S3Proxy {S3PROXY_VERSION} (55 MB) from Maven Central into {target} ...", flush=True)
    command = [
        mvn,
        "-B",
        "-q",
        "-C",  # strict checksums: Maven refuses a download that does not match Central's .sha1
        "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy",
        f"-Dartifact={S3PROXY_ARTIFACT}",
        f"-DoutputDirectory={staging}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=staging)
    fetched = staging / f"s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"
    if result.returncode != 0 or not fetched.is_file():
        lines = [ln for ln in (result.stdout + result.stderr).splitlines() if "ERROR" in ln]
        reason = lines[0].replace("[ERROR]", "").strip() if lines else f"mvn exited {result.returncode}"
        raise RewindError(
            f"fetching S3Proxy {S3PROXY_VERSION} with Maven failed: {reason}",
            "check that Maven Central is reachable (proxy settings live in ~/.m2/settings.xml); "
            + _DOCKER_HINT,
        )
    actual = _sha512(fetched)
    if actual != S3PROXY_SHA512:
        shutil.rmtree(staging, ignore_errors=True)
        raise RewindError(
            f"the fetched S3Proxy jar hashes to SHA-512 {actual[:16]}..., not the published "
            f"{S3PROXY_SHA512[:16]}...",
            "remove the damaged copy from ~/.m2/repository/org/gaul/s3proxy and fetch again",
        )
    os.replace(fetched, jar)
    shutil.rmtree(staging, ignore_errors=True)
    marker.write_text(S3PROXY_VERSION + "\n")
    return jar


@dataclass(frozen=True)
class S3Status:
    """What `rewind s3 status` reports."""

    running: bool
    pid: int | None
    endpoint: str | None
    version: str
    data_dir: str

    def as_dict(self) -> dict[str, object]:
        return {
            "running": self.running,
            "pid": self.pid,
            "endpoint": self.endpoint,
            "s3proxy_version": self.version,
            "data_dir": self.data_dir,
        }


class LocalS3:
    """The S3 server that belongs to one ``REWIND_HOME``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.home / "s3"
        self.data = self.dir / "data"
        self.pid_file = self.dir / "s3proxy.pid"
        self.port_file = self.dir / "port"
        self.log_file = self.dir / "s3proxy.log"
        self.properties = self.dir / "s3proxy.properties"
        self.endpoint_file = self.dir / "endpoint"

    def pid(self) -> int | None:
        """The server's pid if it runs, else None (a stale pid file is removed)."""
        return running_pid(self.pid_file, b"s3proxy")

    def endpoint(self) -> str | None:
        try:
            return self.endpoint_file.read_text().strip() or None
        except OSError:
            return None

    def status(self) -> S3Status:
        pid = self.pid()
        return S3Status(
            pid is not None, pid, self.endpoint() if pid else None, S3PROXY_VERSION, str(self.data)
        )

    def _choose_port(self, port: int | None) -> int:
        if port:
            if not port_is_free(port):
                raise RewindError(
                    f"port {port} on 127.0.0.1 is already in use by another process",
                    "pick another port with --port (or s3.port), or 0 for a free one",
                )
            return port
        with contextlib.suppress(OSError, ValueError):
            previous = int(self.port_file.read_text().strip())
            if port_is_free(previous):
                return previous
        return free_port()

    def start(self, port: int | None = None, timeout: float = 60.0) -> S3Status:
        """Start the server, create the configured bucket, and return once it answers; no-op if it
        runs."""
        if self.pid() is not None:
            return self.status()
        java = find_java(_DOCKER_HINT)
        jar = fetch()
        chosen = self._choose_port(port if port is not None else int(self.settings["s3.port"]))
        self.data.mkdir(parents=True, exist_ok=True)
        endpoint = f"http://127.0.0.1:{chosen}"
        self.properties.write_text(
            f"s3proxy.endpoint={endpoint}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={self.settings['s3.access_key_id']}\n"
            f"s3proxy.credential={self.settings['s3.secret_access_key']}\n"
            "jclouds.provider=filesystem-nio2\n"
            f"jclouds.filesystem.basedir={self.data.resolve()}\n"
        )
        self.properties.chmod(0o600)
        self.port_file.write_text(f"{chosen}\n")
        command = [java, f"-Xmx{HEAP}", "-jar", str(jar), "--properties", str(self.properties)]
        process = launch(command, self.log_file, self.pid_file, "rewind s3 start")
        self._wait_until_ready(process, endpoint, timeout)
        self.endpoint_file.write_text(endpoint + "\n")
        bucket = str(self.settings["snapshots.remote.bucket"])
        if bucket:
            (self.data / bucket).mkdir(exist_ok=True)
        return self.status()

    def _wait_until_ready(self, process: subprocess.Popen[bytes], endpoint: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise RewindError(
                    f"S3Proxy exited with code {process.returncode} while starting:\n" + self.tail(15),
                    f"read {self.log_file}",
                )
            try:
                urllib.request.urlopen(endpoint + "/", timeout=1.0).close()
                return
            except urllib.error.HTTPError:
                return  # it answers (403 for an unsigned request): it is up
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RewindError(
            f"S3Proxy did not answer at {endpoint} within {timeout:.0f}s",
            f"read {self.log_file}, then try again with a longer --timeout",
        )

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop gracefully (SIGTERM, wait, then SIGKILL); True if a server was running."""
        pid = self.pid()
        if pid is None:
            return False
        stop_group(pid, self.pid_file, timeout)
        return True

    def tail(self, lines: int = 50) -> str:
        return last_lines(self.log_file, lines)
