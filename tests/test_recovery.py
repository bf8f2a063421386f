"""Snapshots, crash recovery and time travel against the real broker, real LMDB and the real CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from tests.cli_runner import REWIND, run_rewind
from tests.pipeline import Pipeline


@pytest.fixture
def pipeline(bootstrap: str, unique_name: str, tmp_path: Path) -> Pipeline:
    made = Pipeline(bootstrap, unique_name, tmp_path / "home")
    made.create_topics()
    return made


def _digest(pipeline: Pipeline, state: Path | None = None) -> str:
    args = ["state", "digest", "--json"] + (["--state", str(state)] if state else [])
    return str(json.loads(run_rewind(*args, env=pipeline.env, check=True).stdout)["digest"])


def _full_replay_digest(pipeline: Pipeline, tmp_path: Path) -> str:
    fresh = tmp_path / "full-replay"
    run_rewind(
        "project", "--until-caught-up", "--state", str(fresh), env=pipeline.env, timeout=300, check=True
    )
    return _digest(pipeline, fresh)


def _project(pipeline: Pipeline) -> None:
    run_rewind("project", "--until-caught-up", env=pipeline.env, timeout=300, check=True)


def _snapshot(pipeline: Pipeline) -> list[dict[str, object]]:
    return json.loads(run_rewind("snapshot", "--json", env=pipeline.env, check=True).stdout)  # type: ignore[no-any-return]


def _recover(pipeline: Pipeline) -> dict[str, object]:
    return json.loads(run_rewind("recover", "--json", env=pipeline.env, timeout=300, check=True).stdout)  # type: ignore[no-any-return]


def test_recover_after_sigkill_equals_a_full_replay(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.simulate(events=20_000, seed=21, anomaly_rate=0.01)
    _project(pipeline)
    taken = _snapshot(pipeline)
    assert {row["store"] for row in taken} >= {"events-p0000", "config"}
    pipeline.simulate(events=30_000, seed=22, anomaly_rate=0.01)
    process = subprocess.Popen(
        [REWIND, "project", "--batch-events", "500"], env=os.environ | pipeline.env, stderr=subprocess.PIPE
    )
    time.sleep(1.5)
    assert process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait(30)

    report = _recover(pipeline)
    recovery = report["recovery"]
    assert isinstance(recovery, dict) and recovery["state"] == "RECOVERED"
    assert recovery["progress_percent"] == 100.0
    timings = report["timings_seconds"]
    assert isinstance(timings, dict)
    assert set(timings) == {"prepare", "restore", "replay", "validate", "swap", "total"}
    assert abs(sum(timings.values()) - 2 * timings["total"]) < 0.01, "the phases add up to the total"
    stores = report["stores"]
    assert isinstance(stores, dict)
    assert all(s["snapshot_offset"] is not None for name, s in stores.items())
    assert report["digest"] == _digest(pipeline) == _full_replay_digest(pipeline, tmp_path)

    again = _recover(pipeline)
    assert again["digest"] == report["digest"], "recovery is repeatable"
    state = pipeline.home / "state"
    assert sorted(p.name for p in state.iterdir() if p.name.startswith(".")) == [], (
        "the command exits once the replaced stores are deleted"
    )


def _store_files(state: Path) -> dict[str, int]:
    """Each live store's data file identity: a recovered store is a new file renamed into place."""
    return {p.name: (p / "data.mdb").stat().st_ino for p in state.iterdir() if (p / "data.mdb").is_file()}


def test_recovering_some_partitions_replaces_only_their_stores(pipeline: Pipeline, tmp_path: Path) -> None:
    """Restore starts before the partitions are known; it must still end up with exactly the stores
    asked for: a snapshot of a partition the topic no longer has (recreated smaller) is not used."""
    pipeline.simulate(events=8_000, seed=41)
    _project(pipeline)
    _snapshot(pipeline)
    snapshots = pipeline.home / "snapshots"
    shutil.copytree(snapshots / "events-p0000", snapshots / "events-p0099")
    pipeline.simulate(events=4_000, seed=42)
    state = pipeline.home / "state"
    before = _store_files(state)

    found = run_rewind("recover", "--json", "--partitions", "1,3", env=pipeline.env, timeout=300, check=True)
    report = json.loads(found.stdout)
    chosen = {"config", "events-p0001", "events-p0003"}
    assert set(report["stores"]) == chosen
    after = _store_files(state)
    assert set(after) == set(before)
    assert {name for name in before if after[name] != before[name]} == chosen

    everything = _recover(pipeline)
    stores = everything["stores"]
    assert isinstance(stores, dict) and "events-p0099" not in stores
    assert set(_store_files(state)) == set(before)
    assert everything["digest"] == _full_replay_digest(pipeline, tmp_path)


def _flip_a_bit(data: Path) -> None:
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))


def _truncate(data: Path) -> None:
    with open(data, "r+b") as handle:
        handle.truncate(data.stat().st_size // 2)


def _drop_manifest(data: Path) -> None:
    (data.parent / "MANIFEST.json").unlink()


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [(_flip_a_bit, "checksum mismatch"), (_truncate, "truncated"), (_drop_manifest, "manifest missing")],
)
def test_a_corrupt_newest_snapshot_is_reported_and_the_older_one_used(
    pipeline: Pipeline, tmp_path: Path, corrupt: object, reason: str
) -> None:
    pipeline.simulate(events=6_000, seed=31)
    _project(pipeline)
    older = {row["store"]: row["offset"] for row in _snapshot(pipeline)}
    pipeline.simulate(events=6_000, seed=32)
    _project(pipeline)
    newer = {row["store"]: row for row in _snapshot(pipeline)}
    victim = newer["events-p0001"]
    assert victim["offset"] != older["events-p0001"]
    assert callable(corrupt)
    corrupt(Path(str(victim["path"])) / "data.mdb")

    result = run_rewind("recover", env=pipeline.env, timeout=300, check=True)
    assert "skipped corrupt snapshot" in result.stderr and reason in result.stderr
    report = _recover(pipeline)
    stores = report["stores"]
    assert isinstance(stores, dict)
    assert stores["events-p0001"]["snapshot_offset"] == older["events-p0001"]
    assert any(reason in r for r in stores["events-p0001"]["rejected_snapshots"])
    assert stores["events-p0002"]["snapshot_offset"] == newer["events-p0002"]["offset"]
    assert report["digest"] == _full_replay_digest(pipeline, tmp_path)
    verified = run_rewind("snapshots", "verify", env=pipeline.env)
    assert verified.returncode == 1 and "CORRUPT" in verified.stdout


def test_time_travel_to_offset_k_equals_the_reference_fold_of_the_first_k_events(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.simulate(events=12_000, seed=41, anomaly_rate=0.02)
    _project(pipeline)
    _snapshot(pipeline)
    ends = {p: len(_offsets(pipeline, p)) for p in range(pipeline.partitions)}
    chooser = random.Random(41)
    for trial in range(4):
        partition = chooser.randrange(pipeline.partitions)
        k = chooser.randrange(0, ends[partition] + 1)
        out = tmp_path / f"replay-{trial}"
        run_rewind("replay", "--to", f"{partition}:{k}", "--out", str(out), env=pipeline.env, check=True)
        shown = json.loads(
            run_rewind(
                "state",
                "digest",
                "--json",
                "--partition",
                str(partition),
                "--state",
                str(out),
                env=pipeline.env,
                check=True,
            ).stdout
        )
        expected = pipeline.reference_digests(upto={partition: k - 1})[f"events-p{partition:04d}"]
        assert shown["digest"] == expected, f"partition {partition}, first {k} events"
        assert shown["offset"] == k - 1


def test_replay_refuses_the_live_state_directory(pipeline: Pipeline) -> None:
    result = run_rewind("replay", "--to", "0:1", "--out", str(pipeline.home / "state"), env=pipeline.env)
    assert result.returncode == 1 and "overlaps the live state directory" in result.stderr
    assert run_rewind("replay", "--out", "/tmp/x", env=pipeline.env).returncode == 2


def _offsets(pipeline: Pipeline, partition: int) -> range:
    from tests.kafka_helpers import read_partition

    return range(len(read_partition(pipeline.bootstrap, pipeline.events, partition)))


def test_a_retention_gap_is_a_data_loss_error_and_live_state_is_untouched(pipeline: Pipeline) -> None:
    pipeline.simulate(events=4_000, seed=51)
    _project(pipeline)
    snapshot_offset = {row["store"]: int(str(row["offset"])) for row in _snapshot(pipeline)}["events-p0002"]
    pipeline.simulate(events=4_000, seed=52)
    _project(pipeline)
    live_before = _digest(pipeline)

    gap_end = snapshot_offset + 5
    admin = AdminClient({"bootstrap.servers": pipeline.bootstrap})
    futures = admin.delete_records([TopicPartition(pipeline.events, 2, gap_end)])
    for future in futures.values():
        future.result()

    result = run_rewind("recover", env=pipeline.env, timeout=300)
    assert result.returncode == 1
    assert f"data loss on {pipeline.events}[2]" in result.stderr
    assert (
        f"needs offset {snapshot_offset + 1} next" in result.stderr
        and f"starts at {gap_end}" in result.stderr
    )
    assert _digest(pipeline) == live_before, "the live state was not touched"


# Killed in this order; each crash point is reached for sure. A projection killed early may have
# committed to a single store, so a clean catch-up comes before the snapshot crashes (every store is
# then past its snapshot, so each snapshot run copies several), and fresh events before the last ones.
CRASHES_AFTER_CATCH_UP = [
    ("snapshot", "snapshot-copied:1"),
    ("snapshot", "snapshot-manifest-written:2"),
    ("recover", "recover-restored:1"),
    ("recover", "recover-restored:3"),
    ("recover", "recover-swap:1"),
    ("recover", "recover-swap:4"),
    ("recover", "lmdb-commit:2"),
]
CRASHES_WITH_NEW_EVENTS = [
    ("project", "lmdb-commit:3"),
    ("snapshot", "snapshot-copied:3"),
    ("project", "after-lmdb-commit:2"),
]


def test_sigkill_of_projector_snapshotter_and_recover_itself_then_recover(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pipeline.simulate(events=15_000, seed=61, anomaly_rate=0.01)
    _project(pipeline)
    _snapshot(pipeline)
    pipeline.simulate(events=15_000, seed=62, anomaly_rate=0.01)
    commands = {
        "snapshot": ["snapshot"],
        "recover": ["recover", "--no-progress"],
        "project": ["project", "--until-caught-up", "--batch-events", "400", "--no-progress"],
    }

    def crash(command: str, point: str) -> None:
        result = run_rewind(*commands[command], env=pipeline.env | {"REWIND_CRASHPOINT": point}, timeout=300)
        assert result.returncode == -signal.SIGKILL, f"{command} never reached {point}: {result.stderr}"

    crash("project", "after-lmdb-commit:2")
    _project(pipeline)
    for command, point in CRASHES_AFTER_CATCH_UP:
        crash(command, point)
    pipeline.simulate(events=5_000, seed=63, anomaly_rate=0.01)
    for command, point in CRASHES_WITH_NEW_EVENTS:
        crash(command, point)

    # Then recoveries killed at random instants, drawn within the time a whole one takes here.
    started = time.monotonic()
    _recover(pipeline)
    whole = time.monotonic() - started
    chooser = random.Random(7)
    killed = 0
    for _ in range(4):
        process = subprocess.Popen(
            [REWIND, "recover", "--no-progress"], env=os.environ | pipeline.env, stderr=subprocess.DEVNULL
        )
        time.sleep(chooser.uniform(0.2, 0.9) * whole)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait(60)
    assert killed >= 1, f"every recovery finished before its kill (a whole one took {whole:.2f} s)"

    verified = run_rewind("snapshots", "verify", env=pipeline.env)
    assert verified.returncode == 0, "no half-written snapshot is ever visible: " + verified.stdout
    report = _recover(pipeline)
    assert report["digest"] == _full_replay_digest(pipeline, tmp_path)
