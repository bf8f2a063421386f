"""A full disk under the state or the snapshots ends in ``error:`` and ``fix:`` lines, never a traceback,
and loses nothing: once there is room again, the state equals a clean projection of the same log.

The disks are real tmpfs mounts, made small on purpose; mounting needs root, so elsewhere these tests
are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import run_rewind
from tests.pipeline import Pipeline

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a small tmpfs needs root"
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _grow(disk: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def _assert_clean_failure(stderr: str, *expected: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line.strip() for line in stderr.splitlines()]
    assert any(line.startswith("error: ") for line in lines), stderr
    assert any(line.startswith("fix: ") for line in lines), stderr
    for text in expected:
        assert text in stderr, stderr


def _digests(env: dict[str, str]) -> dict[str, str]:
    shown = json.loads(run_rewind("state", "digest", "--json", env=env, check=True).stdout)
    return {name: store["digest"] for name, store in shown["stores"].items()}


@pytest.fixture
def pipeline(bootstrap: str, unique_name: str, tmp_path: Path) -> Pipeline:
    """Two partitions holding 60k simulated events."""
    made = Pipeline(bootstrap, unique_name, tmp_path / "home", partitions=2)
    made.create_topics()
    made.simulate(events=60_000, seed=5)
    return made


def test_a_full_state_disk_stops_the_projector_cleanly_and_loses_nothing(
    pipeline: Pipeline, small_disk: Path
) -> None:
    env = pipeline.env | {"REWIND_STATE_DIR": str(small_disk / "state")}

    failed = run_rewind("project", "--until-caught-up", env=env, timeout=300)
    assert failed.returncode == 1, failed.stderr
    _assert_clean_failure(failed.stderr, "last commit")

    _grow(small_disk, "256m")
    run_rewind("project", "--until-caught-up", env=env, timeout=300, check=True)
    assert _digests(env) == pipeline.reference_digests()


def test_a_full_snapshot_disk_is_reported_and_the_state_is_untouched(
    pipeline: Pipeline, small_disk: Path
) -> None:
    env = pipeline.env | {"REWIND_SNAPSHOTS_DIR": str(small_disk / "snapshots")}
    run_rewind("project", "--until-caught-up", env=env, timeout=300, check=True)
    before = _digests(env)

    failed = run_rewind("snapshot", env=env, timeout=300)
    assert failed.returncode == 1, failed.stderr
    _assert_clean_failure(failed.stderr, "no space left")
    assert _digests(env) == before

    _grow(small_disk, "256m")
    run_rewind("snapshot", env=env, timeout=300, check=True)
    verified = run_rewind("snapshots", "verify", "--deep", env=env, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
