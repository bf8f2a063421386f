"""Recovery split between `rewind recover` and a helper process: same state, and no failure of the
helper (or of recover itself) can change the result or leave a process behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from replayer.recovery_helper import HelperFailed, RecoveryHelper
from tests.cli_runner import run_rewind
from tests.pipeline import Pipeline

ALWAYS = {"REWIND_RECOVERY_PARALLEL_MIN_EVENTS": "0"}
NEVER = {"REWIND_RECOVERY_PARALLEL_MIN_EVENTS": str(10**12)}


@pytest.fixture(scope="module")
def pipeline(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """20k events projected and snapshotted, then 15k more: a tail on every partition."""
    home = tmp_path_factory.mktemp("helper") / "home"
    made = Pipeline(bootstrap, f"helper-{time.time_ns()}", home)
    made.create_topics()
    made.simulate(events=20_000, seed=31, anomaly_rate=0.01)
    run_rewind("project", "--until-caught-up", env=made.env, timeout=300, check=True)
    run_rewind("snapshot", env=made.env, check=True)
    made.simulate(events=15_000, seed=32, anomaly_rate=0.01)
    return made


@pytest.fixture(scope="module")
def full_replay_digest(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> str:
    fresh = tmp_path_factory.mktemp("full-replay") / "state"
    args = ("project", "--until-caught-up", "--no-progress", "--state", str(fresh))
    run_rewind(*args, env=pipeline.env | NEVER, timeout=300, check=True)
    found = run_rewind("state", "digest", "--json", "--state", str(fresh), env=pipeline.env, check=True)
    return str(json.loads(found.stdout)["digest"])


def _recover(pipeline: Pipeline, env: dict[str, str]) -> tuple[dict[str, object], str]:
    result = run_rewind("recover", "--json", env=pipeline.env | env, timeout=300, check=True)
    return json.loads(result.stdout), result.stderr


def _helpers_of(pipeline: Pipeline) -> list[int]:
    """Pids of recovery helpers working for this pipeline's state directory."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"replayer.recovery_helper" in words and any(str(pipeline.home).encode() in w for w in words):
            found.append(int(cmdline.parent.name))
    return found


def test_two_processes_give_the_state_of_one_and_of_a_full_replay(
    pipeline: Pipeline, full_replay_digest: str
) -> None:
    split, _ = _recover(pipeline, ALWAYS)
    helped = split["helper_partitions"]
    assert isinstance(helped, list) and 0 < len(helped) < pipeline.partitions, helped
    alone, _ = _recover(pipeline, NEVER)
    assert alone["helper_partitions"] == []
    assert split["digest"] == alone["digest"] == full_replay_digest
    stores = split["stores"]
    assert isinstance(stores, dict)
    assert sum(int(s["replayed"]) for s in stores.values()) > 0


@pytest.mark.parametrize(
    "point", ["recovery-helper-assigned", "recovery-helper-replayed", "recovery-helper-validated"]
)
def test_a_helper_killed_at_any_step_is_replaced_by_recovery_here(
    pipeline: Pipeline, full_replay_digest: str, point: str
) -> None:
    report, stderr = _recover(pipeline, ALWAYS | {"REWIND_CRASHPOINT": point})
    assert "recovery helper failed" in stderr and "recovering its partitions here" in stderr, stderr
    assert report["helper_partitions"] == []
    assert report["digest"] == full_replay_digest
    timings = report["timings_seconds"]
    assert isinstance(timings, dict) and all(seconds >= 0 for seconds in timings.values()), timings
    assert not _helpers_of(pipeline)


def test_killing_recover_kills_its_helper_and_a_rerun_recovers(
    pipeline: Pipeline, full_replay_digest: str
) -> None:
    killed = run_rewind(
        "recover", env=pipeline.env | ALWAYS | {"REWIND_CRASHPOINT": "recover-helper-started"}, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    deadline = time.monotonic() + 20
    while _helpers_of(pipeline) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _helpers_of(pipeline), "the helper outlived the recovery that started it"
    report, _ = _recover(pipeline, ALWAYS)
    assert report["digest"] == full_replay_digest


@pytest.mark.parametrize(
    "output",
    [
        'print("not json")',
        'print(\'{"progress": ["x"]}\')',
        'print(\'{"validated": {}, "at": 1}\')',
        'print(\'{"replayed": {"stores": {"events-p0009": [1, 1]}, "counts": {}, "anomalies": 0, '
        '"dead_letters": []}, "at": 1}\')',
        'print(\'{"replayed": {"stores": {"events-p0000": 5}}, "at": 1}\')',
        'print(\'{"replayed": {"stores": {"events-p0000": [1, 1]}}, "at": 1}\')',
        "import sys; sys.exit(3)",
    ],
)
def test_a_helper_that_answers_wrongly_or_dies_is_a_failure_never_a_hang(output: str) -> None:
    """Whatever a helper process writes before it ends, the parent gets HelperFailed, not a wait."""
    process = subprocess.Popen(
        [sys.executable, "-c", output], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    with tempfile.TemporaryFile() as errors:
        helper = RecoveryHelper(process, errors)
        helper.assign({"events-p0000": None})
        with pytest.raises(HelperFailed):
            helper.next_report({}, None, block=True)
        helper.stop()
