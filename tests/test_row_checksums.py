"""A changed byte in a stored row is caught before the row is served, snapshotted or folded.

One digit changed inside a live LMDB value turns a balance of 2,665,191.03 into 2,965,191.03. These
tests change exactly that digit in the real ``data.mdb`` and check that every reader refuses the row
with an error naming the partition, the table and the key, and the fix (``rewind recover``):
``rewind state``, ``rewind state digest``, the fold, a snapshot of the store, and ``snapshots verify
--deep`` of a copy damaged the same way.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from projector import encoding
from projector.lmdb_state import EntityCache, LmdbPartitionState
from projector.policy import APPLIED, EventsStep
from projector.state_directory import StateDirectory
from projector.store import DATA_FILE, PartitionStore
from rewind.ground.errors import DamagedState
from rewind.ground.settings import load_settings
from snapshotter.snapshot import SnapshotInvalid, file_xxh3_128, take_snapshot, verify
from tests.cli_runner import run_rewind
from tests.fold_events import balance, submitted

ACCOUNT = "ACC-0001"
GOOD = b"[1,266519103000000]"
BAD = b"[1,296519103000000]"


def _project(state_dir: Path, home: Path) -> dict[str, str]:
    """Fold a deposit of 2,665,191.03 CHF and an order into partition 0 of a real state directory."""
    env = {"REWIND_HOME": str(home), "REWIND_STATE_DIR": str(state_dir)}
    settings = load_settings(environ=env)
    with StateDirectory.open(state_dir, settings) as directory:
        store = directory.store("events-p0000")
        state = LmdbPartitionState(store, EntityCache())
        step = EventsStep(state, 0)
        events = [balance("CHF", "2665191.03", account=ACCOUNT), submitted("O-1", "10", "5", account=ACCOUNT)]
        for offset, event in enumerate(events):
            assert step.apply(event, offset) == APPLIED
        store.commit(state.changes(), step.offset, len(events))
    return env


def _change_one_digit(data: Path) -> None:
    raw = data.read_bytes()
    assert raw.count(GOOD) == 1, "the balance row is stored exactly once"
    data.write_bytes(raw.replace(GOOD, BAD))


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    state_dir = tmp_path / "state"
    env = _project(state_dir, tmp_path / "home")
    _change_one_digit(state_dir / "events-p0000" / DATA_FILE)
    return state_dir, env


def _names_the_row(text: str) -> None:
    assert "partition 0" in text
    assert "the balances row with key b'ACC-0001\\x00CHF' is damaged" in text
    assert "rewind recover" in text


def test_rewind_state_refuses_the_damaged_row(damaged: tuple[Path, dict[str, str]]) -> None:
    state_dir, env = damaged
    result = run_rewind("state", "balances", "--account", ACCOUNT, "--state", str(state_dir), env=env)
    assert result.returncode == 1, result.stdout
    assert "2965191.03" not in result.stdout and "2,965,191.03" not in result.stdout
    assert result.stderr.startswith("error: ")
    assert "\n  fix: " in result.stderr or "\nfix: " in result.stderr
    _names_the_row(result.stderr)
    assert "Traceback" not in result.stderr


def test_rows_that_are_not_damaged_are_still_served(damaged: tuple[Path, dict[str, str]]) -> None:
    state_dir, env = damaged
    result = run_rewind("state", "orders", "--json", "--state", str(state_dir), env=env)
    assert result.returncode == 0, result.stderr
    assert "O-1" in result.stdout


def test_rewind_state_digest_refuses_the_damaged_store(damaged: tuple[Path, dict[str, str]]) -> None:
    state_dir, env = damaged
    result = run_rewind("state", "digest", "--state", str(state_dir), env=env)
    assert result.returncode == 1, result.stdout
    _names_the_row(result.stderr)


def test_the_fold_refuses_to_read_the_damaged_row(damaged: tuple[Path, dict[str, str]]) -> None:
    state_dir, _ = damaged
    with PartitionStore(state_dir / "events-p0000", encoding.EVENTS_TABLES) as store:
        state = LmdbPartitionState(store, EntityCache())
        assert state.order("O-1") is not None
        with pytest.raises(DamagedState) as raised:
            state.balance(ACCOUNT, "CHF")
    _names_the_row(str(raised.value))


def test_a_snapshot_of_a_damaged_store_is_refused_and_copies_nothing(
    damaged: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    state_dir, _ = damaged
    snapshots = tmp_path / "snapshots"
    store = PartitionStore(state_dir / "events-p0000", encoding.EVENTS_TABLES, readonly=True)
    with store, pytest.raises(DamagedState) as raised:
        take_snapshot(store, snapshots, "events-p0000")
    _names_the_row(str(raised.value))
    assert [p.name for p in (snapshots / "events-p0000").iterdir()] == []


def test_rewind_snapshot_refuses_a_damaged_store(damaged: tuple[Path, dict[str, str]]) -> None:
    state_dir, env = damaged
    result = run_rewind("snapshot", "--state", str(state_dir), env=env)
    assert result.returncode == 1, result.stdout
    _names_the_row(result.stderr)


def test_a_snapshot_damaged_after_it_was_taken_fails_the_deep_verify(tmp_path: Path) -> None:
    """The file checksum catches a changed byte in a snapshot; with the manifest rewritten to match the
    damaged file, the row checksums still do."""
    state_dir = tmp_path / "state"
    _project(state_dir, tmp_path / "home")
    with PartitionStore(state_dir / "events-p0000", encoding.EVENTS_TABLES, readonly=True) as store:
        snapshot = take_snapshot(store, tmp_path / "snapshots", "events-p0000")
    assert snapshot is not None
    verify(snapshot.path, deep=True)
    copy = tmp_path / "copy"
    shutil.copytree(snapshot.path, copy.with_name(snapshot.path.name))
    damaged_copy = copy.with_name(snapshot.path.name)
    _change_one_digit(damaged_copy / DATA_FILE)
    with pytest.raises(SnapshotInvalid, match="checksum mismatch"):
        verify(damaged_copy, deep=True)
    manifest = (damaged_copy / "MANIFEST.json").read_text()
    (damaged_copy / "MANIFEST.json").write_text(
        manifest.replace(snapshot.manifest.file_xxh3_128, file_xxh3_128(damaged_copy / DATA_FILE))
    )
    with pytest.raises(SnapshotInvalid) as raised:
        verify(damaged_copy, deep=True)
    assert str(raised.value).endswith(
        "the balances row with key b'ACC-0001\\x00CHF' is damaged: its checksum does not match its bytes"
    )


def test_a_damaged_stored_offset_is_refused(tmp_path: Path) -> None:
    """The stored offset says where to resume: a changed digit there would skip or repeat events."""
    state_dir = tmp_path / "state"
    _project(state_dir, tmp_path / "home")
    data = state_dir / "events-p0000" / DATA_FILE
    stored = encoding.encode_offset(1)
    raw = data.read_bytes()
    assert raw.count(stored) == 1
    data.write_bytes(raw.replace(stored, b"7" + stored[1:]))
    store = PartitionStore(state_dir / "events-p0000", encoding.EVENTS_TABLES)
    with store, pytest.raises(DamagedState, match="the meta row with key b'offset' is damaged"):
        store.offset()
