"""The partition store's guards against real LMDB files: offsets only move forward, even under
``python -O``, and a refused batch leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from projector import encoding
from projector.lmdb_state import LmdbPartitionState
from projector.model import Order
from projector.store import PartitionStore
from rewind.ground.errors import InvariantViolation, RewindError

ROOT = Path(__file__).resolve().parents[1]
ROW = {encoding.ORDERS: {b"O-1": b"[1]"}}


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
        store.commit({encoding.ORDERS: {b"O-1": b"[1]"}}, 3, 1)
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
