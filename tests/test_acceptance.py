"""Commands run as a user types them, checked end to end.

- ``rewind simulate --events 100000 --seed 7`` run twice (same start time) writes identical topics,
  against the real broker: every record's partition, offset, key, value and headers, on the events
  and the config topic; kcat, when installed, sees each record's ``event_type`` header.
- ``rewind kafka fetch`` with the Kafka artifacts already cached reuses them with an empty ``PATH``
  (no Maven, no Java to find).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rewind.kafka_local import cache_dir
from tests.cli_runner import run_rewind
from tests.kafka_helpers import read_topic
from tests.pipeline import Pipeline


def test_simulate_100k_with_seed_7_twice_gives_identical_topics(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    runs = []
    for side in ("a", "b"):
        pipeline = Pipeline(bootstrap, f"{unique_name}-{side}", tmp_path / side, partitions=12)
        pipeline.create_topics()
        run_rewind(
            "simulate",
            "--events",
            "100000",
            "--seed",
            "7",
            "--start-time",
            "2026-11-20T13:30:00Z",
            "--json",
            env=pipeline.env,
            timeout=300,
            check=True,
        )
        runs.append(pipeline)
    for topic in ("events", "config"):
        left = read_topic(bootstrap, getattr(runs[0], topic))
        right = read_topic(bootstrap, getattr(runs[1], topic))
        assert len(left) == len(right) > 0
        for a, b in zip(left, right, strict=True):
            assert (a.partition(), a.offset(), a.key(), a.value(), a.headers()) == (
                b.partition(),
                b.offset(),
                b.key(),
                b.value(),
                b.headers(),
            )
    if shutil.which("kcat"):
        shown = subprocess.run(
            [
                "kcat",
                "-b",
                bootstrap,
                "-C",
                "-t",
                runs[0].events,
                "-p",
                "0",
                "-o",
                "beginning",
                "-c",
                "5",
                "-e",
                "-f",
                "%h\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        headers = [line for line in shown.stdout.splitlines() if line]
        assert len(headers) == 5 and all(line.startswith("event_type=") for line in headers)


def test_cached_kafka_artifacts_are_reused_without_maven(tmp_path: Path) -> None:
    if not (cache_dir() / ".complete").is_file():
        pytest.skip("the Kafka artifacts are not cached yet on this machine")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {
        "PATH": str(bin_dir),
        "REWIND_HOME": str(tmp_path / "home"),
        "HOME": os.environ.get("HOME", "/root"),
    }
    result = run_rewind("kafka", "fetch", env=env, check=True)
    assert str(cache_dir() / "libs") in result.stdout
