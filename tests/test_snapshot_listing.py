"""GET /snapshots's rows without a broker: the remote store is listed off the caller's thread, and one
that cannot be listed is one row saying so, beside the local rows, never hiding them. (A listing of
real snapshots on the real S3 server is shown by tests/test_console.py's snapshots test.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from projector.state_directory import StateDirectory
from rewind.ground.settings import load_settings
from rewind.snapshot_listing import SnapshotListing
from snapshotter.snapshot import take_snapshot
from tests.http_helpers import free_port
from tests.s3_server import ACCESS_KEY, SECRET_KEY
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
