"""The remote snapshot store against the real broker, real LMDB, a real S3 server and the real CLI:
host loss, corrupt and partial objects, wrong credentials, listing and pruning by location."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_rewind
from tests.http_helpers import free_port
from tests.pipeline import Pipeline
from tests.s3_server import remote_env, s3_client


@pytest.fixture
def pipeline(bootstrap: str, unique_name: str, tmp_path: Path) -> Pipeline:
    made = Pipeline(bootstrap, unique_name, tmp_path / "home")
    made.create_topics()
    return made


@pytest.fixture
def env(pipeline: Pipeline, s3_endpoint: str, s3_bucket: str) -> dict[str, str]:
    return pipeline.env | remote_env(s3_endpoint, s3_bucket)


def _json(*args: str, env: dict[str, str]) -> Any:
    return json.loads(run_rewind(*args, "--json", env=env, timeout=300, check=True).stdout)


def _digest(env: dict[str, str], state: Path | None = None) -> str:
    args = ["state", "digest"] + (["--state", str(state)] if state else [])
    return str(_json(*args, env=env)["digest"])


def _full_replay_digest(env: dict[str, str], tmp_path: Path) -> str:
    fresh = tmp_path / "full-replay"
    run_rewind("project", "--until-caught-up", "--state", str(fresh), env=env, timeout=300, check=True)
    return _digest(env, fresh)


def _project_snapshot_upload(pipeline: Pipeline, env: dict[str, str], seed: int) -> dict[str, int]:
    """Simulate, project, snapshot, upload; the uploaded offsets by store."""
    pipeline.simulate(events=5_000, seed=seed)
    run_rewind("project", "--until-caught-up", env=env, timeout=300, check=True)
    taken = _json("snapshot", env=env)
    uploaded = _json("snapshots", "upload", *[row["path"] for row in taken], env=env)
    assert uploaded["invalid"] == []
    assert {row["store"] for row in uploaded["uploaded"]} == {row["store"] for row in taken}
    return {row["store"]: row["offset"] for row in uploaded["uploaded"]}


def _lose_the_host(home: Path) -> None:
    shutil.rmtree(home / "snapshots")
    shutil.rmtree(home / "state")


def test_after_host_loss_recover_restores_from_the_object_store(
    pipeline: Pipeline, env: dict[str, str], tmp_path: Path
) -> None:
    uploaded = _project_snapshot_upload(pipeline, env, seed=41)
    pipeline.simulate(events=3_000, seed=42)
    run_rewind("project", "--until-caught-up", env=env, timeout=300, check=True)
    _lose_the_host(pipeline.home)

    report = _json("recover", env=env)
    stores = report["stores"]
    for name, offset in uploaded.items():
        assert stores[name]["snapshot_location"] == "remote", name
        assert stores[name]["snapshot_offset"] == offset, name
        assert stores[name]["replayed"] > 0 or name == "config"
    assert report["digest"] == _digest(env) == _full_replay_digest(env, tmp_path)
    state = pipeline.home / "state"
    assert not [p.name for p in state.iterdir() if p.name.startswith(".")], "no download is left behind"


def _flip_bytes(client: Any, bucket: str, key: str) -> None:
    raw = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    raw[len(raw) // 2] ^= 0xFF
    raw[len(raw) // 3] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(raw))


def test_a_corrupt_remote_object_is_skipped_with_its_reason_and_the_older_one_used(
    pipeline: Pipeline, env: dict[str, str], s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    older = _project_snapshot_upload(pipeline, env, seed=51)
    newer = _project_snapshot_upload(pipeline, env, seed=52)
    assert newer["events-p0001"] != older["events-p0001"]
    client = s3_client(s3_endpoint)
    _flip_bytes(client, s3_bucket, f"rewind/events-p0001/{newer['events-p0001']:020d}/data.mdb")
    partial = f"rewind/events-p0002/{newer['events-p0002']:020d}/MANIFEST.json"
    client.delete_object(Bucket=s3_bucket, Key=partial)  # type: ignore[attr-defined]
    _lose_the_host(pipeline.home)

    verified = run_rewind("snapshots", "verify", "--shallow", env=env, timeout=300)
    assert verified.returncode == 1
    assert "CORRUPT remote" in verified.stdout and "checksum mismatch" in verified.stdout
    listed = _json("snapshots", "list", env=env)
    p0002 = [row["offset"] for row in listed if row["store"] == "events-p0002"]
    assert p0002 == [older["events-p0002"]], "a data object without its manifest is not a snapshot"

    report = _json("recover", env=env)
    stores = report["stores"]
    assert stores["events-p0001"]["snapshot_offset"] == older["events-p0001"]
    rejected = stores["events-p0001"]["rejected_snapshots"]
    assert any("checksum mismatch" in r and f"s3://{s3_bucket}/" in r for r in rejected), rejected
    assert stores["events-p0002"]["snapshot_offset"] == older["events-p0002"]
    assert stores["events-p0000"]["snapshot_offset"] == newer["events-p0000"]
    assert stores["events-p0000"]["snapshot_location"] == "remote"
    assert report["digest"] == _full_replay_digest(env, tmp_path)


def test_wrong_credentials_name_the_bucket_and_the_setting(
    pipeline: Pipeline, env: dict[str, str], s3_bucket: str
) -> None:
    wrong = env | {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    port = str(free_port())
    for args in (("snapshots", "list"), ("recover",), ("serve", "--port", port)):
        result = run_rewind(*args, env=wrong, timeout=120)
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr
        assert "error:" in result.stderr and repr(s3_bucket) in result.stderr
        assert "fix:" in result.stderr and "REWIND_SNAPSHOTS_REMOTE_BUCKET" in result.stderr
    missing = env | {"REWIND_SNAPSHOTS_REMOTE_BUCKET": "no-such-bucket-here"}
    result = run_rewind("snapshots", "list", env=missing, timeout=120)
    assert result.returncode == 1 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_list_marks_locations_and_prune_keeps_each_levels_policy(
    pipeline: Pipeline, env: dict[str, str]
) -> None:
    rounds = [_project_snapshot_upload(pipeline, env, seed=seed) for seed in (61, 62, 63)]
    listed = _json("snapshots", "list", env=env)
    p0 = {(row["location"], row["offset"]) for row in listed if row["store"] == "events-p0000"}
    # each upload prunes the remote level: snapshots.remote.keep_last (2), all within the same hour
    assert {offset for location, offset in p0 if location == "remote"} == {
        rounds[2]["events-p0000"],
        rounds[1]["events-p0000"],
    }
    local = {offset for location, offset in p0 if location == "local"}
    assert local == {r["events-p0000"] for r in rounds}

    tight = env | {
        "REWIND_SNAPSHOTS_KEEP_LAST": "2",
        "REWIND_SNAPSHOTS_KEEP_HOURLY": "0",
        "REWIND_SNAPSHOTS_KEEP_DAILY": "0",
        "REWIND_SNAPSHOTS_REMOTE_KEEP_LAST": "1",
        "REWIND_SNAPSHOTS_REMOTE_KEEP_HOURLY": "0",
        "REWIND_SNAPSHOTS_REMOTE_KEEP_DAILY": "0",
    }
    dry = _json("snapshots", "prune", "--dry-run", env=tight)
    assert dry["dry_run"] and dry["snapshots"]
    pruned = _json("snapshots", "prune", env=tight)
    locations = {row["location"] for row in pruned["snapshots"]}
    assert locations == {"local", "remote"}
    after = _json("snapshots", "list", env=tight)
    p0_after = sorted((row["location"], row["offset"]) for row in after if row["store"] == "events-p0000")
    assert p0_after == sorted(
        [
            ("local", rounds[1]["events-p0000"]),
            ("local", rounds[2]["events-p0000"]),
            ("remote", rounds[2]["events-p0000"]),
        ]
    )


def test_an_unreachable_object_store_is_reported_and_local_snapshots_used(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    env = pipeline.env | remote_env(f"http://127.0.0.1:{free_port()}", "nowhere")
    pipeline.simulate(events=3_000, seed=81)
    run_rewind("project", "--until-caught-up", env=env, timeout=300, check=True)
    taken = {row["store"]: row["offset"] for row in _json("snapshot", env=env)}

    result = run_rewind("recover", env=env, timeout=300, check=True)
    assert "remote store unreachable" in result.stderr and "corrupt" not in result.stderr
    report = _json("recover", env=env)
    for name, offset in taken.items():
        assert report["stores"][name]["snapshot_location"] == "local"
        assert report["stores"][name]["snapshot_offset"] == offset
    assert report["digest"] == _full_replay_digest(env, tmp_path)


def test_time_travel_on_a_new_host_starts_from_the_object_store(
    pipeline: Pipeline, env: dict[str, str], tmp_path: Path
) -> None:
    older = _project_snapshot_upload(pipeline, env, seed=91)
    newer = _project_snapshot_upload(pipeline, env, seed=92)
    _lose_the_host(pipeline.home)
    partition = 2
    store = f"events-p{partition:04d}"
    k = (older[store] + newer[store]) // 2 + 1  # between the two snapshots: the older one is the start
    out = tmp_path / "travel"
    shown = _json("replay", "--to", f"{partition}:{k}", "--out", str(out), env=env)
    row = next(r for r in shown["stores"] if r["store"] == store)
    assert row["snapshot_offset"] == older[store]
    digest = _json("state", "digest", "--partition", str(partition), "--state", str(out), env=env)
    assert digest["digest"] == pipeline.reference_digests(upto={partition: k - 1})[store]
    assert not (out / ".remote").exists()
