"""Crash safety: SIGKILL `rewind project` at many points, restart each time, and lose or repeat nothing.

Two kinds of kill point: named crash points inside the projector (inside the LMDB write transaction
after every put, right after the commit, after the fold, after the dead letters were acknowledged),
armed through REWIND_CRASHPOINT so they are hit deterministically; and SIGKILLs from outside at random
moments. The final state must equal an uninterrupted run's, and every event must have been applied
exactly once (the per-partition applied counters commit in the same transaction as the state).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from tests.cli_runner import REWIND, run_rewind
from tests.pipeline import Pipeline

ARMED = [
    ("lmdb-commit", 1),
    ("lmdb-commit", 2),
    ("lmdb-commit", 3),
    ("lmdb-commit", 5),
    ("lmdb-commit", 8),
    ("lmdb-commit", 13),
    ("after-lmdb-commit", 1),
    ("after-lmdb-commit", 4),
    ("after-lmdb-commit", 9),
    ("after-fold", 1),
    ("after-fold", 3),
    ("after-dead-letters", 2),
    ("after-dead-letters", 6),
    ("lmdb-commit", 21),
]
RANDOM_KILLS = 8


def _digest(pipeline: Pipeline, state: Path) -> dict[str, object]:
    result = run_rewind("state", "digest", "--json", "--state", str(state), env=pipeline.env, check=True)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_sigkill_at_many_points_loses_and_repeats_nothing(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    summary = pipeline.simulate(events=60_000, seed=3, anomaly_rate=0.02)

    clean = tmp_path / "clean"
    run_rewind(
        "project", "--until-caught-up", "--state", str(clean), env=pipeline.env, timeout=300, check=True
    )
    expected = _digest(pipeline, clean)

    crashed = tmp_path / "crashed"
    base = ["project", "--until-caught-up", "--batch-events", "300", "--no-progress", "--state", str(crashed)]
    killed = 0
    for point, visit in ARMED:
        result = run_rewind(*base, env=pipeline.env | {"REWIND_CRASHPOINT": f"{point}:{visit}"}, timeout=300)
        assert result.returncode in (-signal.SIGKILL, 0), result.stderr
        killed += result.returncode == -signal.SIGKILL

    chooser = random.Random(20261121)
    follow = [REWIND, *base[:1], "--batch-events", "300", "--state", str(crashed)]
    for _ in range(RANDOM_KILLS):
        process = subprocess.Popen(
            follow, env=os.environ | pipeline.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(chooser.uniform(0.8, 2.5))
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        killed += 1
    assert killed >= 20, f"only {killed} kill points were reached"

    run_rewind(*base, env=pipeline.env, timeout=300, check=True)
    recovered = _digest(pipeline, crashed)
    assert recovered["digest"] == expected["digest"]
    stores = recovered["stores"]
    assert isinstance(stores, dict)
    assert sum(int(s["events_applied"]) for s in stores.values()) == summary.events
    assert {name: s["digest"] for name, s in stores.items()} == pipeline.reference_digests()
