"""GET /snapshots's rows without a broker: the remote store is listed off the caller's thread, and one
that cannot be listed is one row saying so, beside the local rows, never hiding them. (A listing of
real snapshots on the real S3 server is shown by tests/test_console.py's snapshots test.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from projector.state_directory import StateDirectory
from rewind import snapshot_listing
from rewind.ground.settings import load_settings
from rewind.snapshot_listing import SnapshotListing
from snapshotter.snapshot import take_snapshot
from tests.cli_runner import run_rewind
from tests.http_helpers import free_port
from tests.s3_server import ACCESS_KEY, SECRET_KEY, remote_env
from tests.test_http_api import _build_state
from tests.test_service import _wait_for


def test_a_remote_store_that_does_not_answer_is_one_row_with_its_error_beside_the_local_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    settings = load_settings(
        environ={
            "REWIND_HOME": str(tmp_path),
            "REWIND_SNAPSHOTS_REMOTE_BUCKET": "nobody-listens",
            "REWIND_SNAPSHOTS_REMOTE_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        }
    )
    _build_state(settings.state_dir, settings)
    with StateDirectory.open_readonly(settings.state_dir) as directory:
        taken = take_snapshot(directory.store("config"), settings.snapshot_dir, "config")
    assert taken is not None

    listing = SnapshotListing(settings)
    first = listing.rows()
    assert [(row["location"], row["store"]) for row in first] == [("local", "config")]
    rows = _wait_for(lambda: len(found := listing.rows()) == 2 and found, 120)
    assert [(row["location"], row.get("store")) for row in rows] == [("local", "config"), ("remote", None)]
    assert rows[0]["offset"] == taken.manifest.offset and "error" not in rows[0]
    assert rows[1]["path"] == "s3://nobody-listens" and "nobody-listens" in rows[1]["error"]


def test_a_shipped_round_is_listed_at_the_next_call_not_after_the_listing_ages(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote listing is read again at most every REMOTE_LIST_SECONDS (made an hour here), except
    after invalidate(), which the service calls when it has shipped a round: the console then shows
    the upload at once instead of up to 15 s later."""
    monkeypatch.setattr(snapshot_listing, "REMOTE_LIST_SECONDS", 3600.0)
    env = {"REWIND_HOME": str(tmp_path)} | remote_env(s3_endpoint, s3_bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, env[name])
    settings = load_settings(environ=env)
    _build_state(settings.state_dir, settings)
    with StateDirectory.open_readonly(settings.state_dir) as directory:
        taken = take_snapshot(directory.store("config"), settings.snapshot_dir, "config")
    assert taken is not None

    listing = SnapshotListing(settings)
    listing.rows()
    _wait_for(lambda: listing.rows() is not None and listing._listing is None, 60)  # the first listing
    assert [row["location"] for row in listing.rows()] == ["local"]
    run_rewind("snapshots", "upload", "--json", str(taken.path), env=env, check=True)
    _wait_for(lambda: listing._listing is None, 60)
    assert [row["location"] for row in listing.rows()] == ["local"], "an hour-old listing is not read yet"

    listing.invalidate()
    rows = _wait_for(lambda: len(found := listing.rows()) == 2 and found, 60)
    assert [(row["location"], row["store"]) for row in rows] == [("local", "config"), ("remote", "config")]
    assert rows[1]["offset"] == taken.manifest.offset and rows[1]["path"].startswith(f"s3://{s3_bucket}/")
