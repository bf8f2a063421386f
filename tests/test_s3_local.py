"""`rewind s3 start|status|stop`: the local S3 server (S3Proxy) as the project's setup runs it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rewind.s3_local import S3PROXY_SHA512, fetch
from tests.cli_runner import run_rewind
from tests.http_helpers import free_port
from tests.s3_server import remote_env, s3_client


def test_the_cached_jar_is_the_published_one() -> None:
    digest = hashlib.sha512(fetch(quiet=True).read_bytes()).hexdigest()
    assert digest == S3PROXY_SHA512


def test_start_creates_the_bucket_status_reports_and_stop_ends_it(tmp_path: Path) -> None:
    port = free_port()
    env = {"REWIND_HOME": str(tmp_path), "REWIND_SNAPSHOTS_REMOTE_BUCKET": "made-at-start"}
    started = json.loads(run_rewind("s3", "start", "--port", str(port), "--json", env=env, check=True).stdout)
    try:
        assert started["running"] and started["endpoint"] == f"http://127.0.0.1:{port}"
        again = json.loads(run_rewind("s3", "start", "--json", env=env, check=True).stdout)
        assert again["already_running"] and again["pid"] == started["pid"]
        status = json.loads(run_rewind("s3", "status", "--json", env=env, check=True).stdout)
        assert status["pid"] == started["pid"]
        client: object = s3_client(started["endpoint"])
        names = [b["Name"] for b in client.list_buckets()["Buckets"]]  # type: ignore[attr-defined]
        assert names == ["made-at-start"]
        listed = run_rewind(
            "snapshots", "list", "--json", env=env | remote_env("local", "made-at-start"), check=True
        )
        assert json.loads(listed.stdout) == []
        busy = run_rewind("s3", "start", "--port", str(port), env={"REWIND_HOME": str(tmp_path / "other")})
        assert busy.returncode == 1 and "already in use" in busy.stderr and "fix:" in busy.stderr
    finally:
        assert "stopped" in run_rewind("s3", "stop", env=env, check=True).stdout
    after = run_rewind("s3", "status", env=env)
    assert after.returncode == 1 and "not running" in after.stdout
