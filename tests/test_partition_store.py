"""The partition store's guards against real LMDB files: offsets only move forward, even under
``python -O``, the map grows only up to its ceiling, and a refused batch leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from projector import encoding, store
from projector.lmdb_state import LmdbPartitionState
from projector.model import Order
from projector.state_directory import StateDirectory
from projector.store import MapCeilingReached, PartitionStore
from rewind.ground.errors import InvariantViolation, RewindError
from rewind.ground.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
ROW = {encoding.ORDERS: {b"O-1": encoding.seal(b"O-1", b"[1]")}}
MIB = 1 << 20


def _rows(start: int, mib: float) -> dict[str, dict[bytes, bytes | None]]:
    """About ``mib`` MiB of order rows, keys from ``start`` on."""
    count = int(mib * MIB) // 1000
    return {
        encoding.ORDERS: {
            key: encoding.seal(key, b"[1," + b"7" * 1000 + b"]")
            for i in range(count)
            for key in [f"O-{start + i:08d}".encode()]
        }
    }


@pytest.mark.parametrize("offset", [4, 5])
def test_a_batch_that_does_not_move_the_offset_forward_is_refused_and_not_written(
    tmp_path: Path, offset: int
) -> None:
    with PartitionStore(tmp_path / "events-p0000", encoding.EVENTS_TABLES, durable=False) as store:
        store.commit({}, 5, 1)
        with pytest.raises(InvariantViolation, match="offsets only move forward") as caught:
            store.commit(ROW, offset, 1)
        assert isinstance(caught.value, RewindError) and caught.value.fix
        assert store.offset() == 5
        assert store.events_applied() == 1
        assert store.get(encoding.ORDERS, b"O-1") is None


_UNDER_O = """
import sys
from pathlib import Path

from projector import encoding
from projector.store import PartitionStore
from rewind.ground.errors import InvariantViolation

assert False, "assert statements ran: this is not python -O"
with PartitionStore(Path(sys.argv[1]), encoding.EVENTS_TABLES, durable=False) as store:
    store.commit({}, 5, 1)
    try:
        store.commit({encoding.ORDERS: {b"O-1": encoding.seal(b"O-1", b"[1]")}}, 3, 1)
    except InvariantViolation as exc:
        print("refused:", exc.what)
    print("offset", store.offset(), "row", store.get(encoding.ORDERS, b"O-1"))
"""


def test_the_forward_offset_check_holds_under_python_minus_o(tmp_path: Path) -> None:
    """``python -O`` drops every ``assert``; the check that protects the stored offset is not one."""
    result = subprocess.run(
        [sys.executable, "-O", "-c", _UNDER_O, str(tmp_path / "events-p0000")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused: ") and "offsets only move forward" in lines[0], result.stdout
    assert lines[1] == "offset 5 row None", result.stdout


def test_a_row_put_into_another_table_is_refused_before_any_commit(tmp_path: Path) -> None:
    order = Order("O-1", "ACC", "SYM", "BUY", "LIMIT", "DAY", 1, 1, 0, 0, "NEW", "C-1", 1, 0, 1, 1)
    with PartitionStore(tmp_path / "events-p0000", encoding.EVENTS_TABLES, durable=False) as store:
        state = LmdbPartitionState(store)
        state._put(encoding.FILLS, "O-1", order, {})
        with pytest.raises(InvariantViolation, match="orders row was put into fills"):
            state.changes()


def test_the_map_grows_up_to_its_ceiling_and_no_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits of a quarter MiB each until one is refused: the map doubles from 1 MiB, stops at the
    3 MiB ceiling, and the refused commit leaves the store as the last good one left it."""
    monkeypatch.setattr(store, "INITIAL_MAP_SIZE", 1 * MIB)
    path = tmp_path / "events-p0003"
    sizes: list[int] = []
    with PartitionStore(path, encoding.EVENTS_TABLES, durable=False, max_map_size=3 * MIB) as small:
        sizes.append(small.env.info()["map_size"])
        with pytest.raises(MapCeilingReached) as caught:
            for batch in range(1, 100):
                small.commit(_rows(batch * 10_000, 0.25), batch, 1)
                sizes.append(small.env.info()["map_size"])
        assert small.env.info()["map_size"] == 3 * MIB
        assert small.offset() == batch - 1
        assert small.get(encoding.ORDERS, f"O-{batch * 10_000:08d}".encode()) is None
        assert small.get(encoding.ORDERS, f"O-{(batch - 1) * 10_000:08d}".encode()) is not None
    assert sorted(set(sizes)) == [1 * MIB, 2 * MIB, 3 * MIB], "doubled, then stopped at the ceiling"
    message = str(caught.value)
    assert str(path) in message and "3 MiB" in message
    assert "state.max_map_mb" in message and "REWIND_STATE_MAX_MAP_MB" in message
    assert isinstance(caught.value, RewindError)


def test_a_store_bigger_than_a_lowered_ceiling_stays_readable_but_takes_no_commit(tmp_path: Path) -> None:
    path = tmp_path / "events-p0000"
    with PartitionStore(path, encoding.EVENTS_TABLES, durable=False) as big:
        big.commit(_rows(0, 2), 10, 1)
        digest = big.digest()
    with PartitionStore(path, encoding.EVENTS_TABLES, durable=False, max_map_size=1 * MIB) as capped:
        assert capped.digest() == digest and capped.offset() == 10
        with pytest.raises(MapCeilingReached, match="1 MiB"):
            capped.commit(_rows(10_000, 0.5), 20, 1)
        assert capped.digest() == digest


def test_the_ceiling_is_the_state_max_map_mb_setting(tmp_path: Path) -> None:
    settings = load_settings(environ={"REWIND_STATE_MAX_MAP_MB": "1", "REWIND_HOME": str(tmp_path)})
    assert settings["state.max_map_mb"] == 1
    with StateDirectory.open(settings.state_dir, settings, durable=False) as directory:
        partition = directory.partition(4)
        partition.commit(_rows(0, 0.2), 10, 1)
        with pytest.raises(MapCeilingReached, match="events-p0004") as caught:
            partition.commit(_rows(10_000, 1.5), 20, 1)
        assert partition.offset() == 10
    assert "REWIND_STATE_MAX_MAP_MB" in str(caught.value)
    assert load_settings(environ={})["state.max_map_mb"] == 64 << 10
