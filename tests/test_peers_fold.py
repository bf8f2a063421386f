"""The peers benchmark compares like with like: the Faust peer's fold (bench/peers/faust/peer_fold.py)
gives exactly rewind's orders, positions and balances, and the cross-check sees any difference.

rewind's side is the real projector step folding into a real LMDB store, read back through
bench/peers/crosscheck.py's export; the peer's side is its fold over plain dicts. The simulated day
carries deliberate anomalies (duplicate fills and orders, unknown-order fills, overfills), which
both must ignore in the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from bench.peers.crosscheck import differences, load_export, rewind_export
from producers.simulator import SimulationParams, simulate
from projector.lmdb_state import EntityCache, LmdbPartitionState
from projector.policy import EventsStep
from projector.state_directory import StateDirectory
from rewind.ground.settings import load_settings

PEER_FOLD = Path(__file__).resolve().parent.parent / "bench" / "peers" / "faust" / "peer_fold.py"


def _peer_fold() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_fold", PEER_FOLD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _events() -> list[dict[str, object]]:
    params = SimulationParams(events=6_000, accounts=20, symbols=8, seed=7, anomaly_rate=0.05)
    return [e for e in simulate(params) if e["event_type"] != "ConfigChanged"]


def _rewind_state(root: Path, events: list[dict[str, object]]) -> Path:
    settings = load_settings(environ={"REWIND_HOME": str(root)})
    directory = StateDirectory.open(root / "state", settings, durable=False)
    store = directory.store("events-p0000")
    cache = EntityCache()
    offset = -1
    for first in range(0, len(events), 1_000):
        state = LmdbPartitionState(store, cache)
        step = EventsStep(state, 0, offset=offset)
        batch = events[first : first + 1_000]
        for event in batch:
            step.apply(event, step.offset + 1)
        offset = step.offset
        store.commit(state.changes(), offset, len(batch))
    directory.close()
    return root / "state"


def test_faust_peer_fold_equals_rewind(tmp_path: Path) -> None:
    events = _events()
    expected = rewind_export(_rewind_state(tmp_path, events))
    fold = _peer_fold().PeerFold({}, {}, {}, {})
    for event in events:
        fold.apply(event)
    got = fold.export()
    assert differences(expected, got) == []
    assert len(expected["orders"]) > 1_000 and len(expected["positions"]) > 50


def test_cross_check_names_what_differs(tmp_path: Path) -> None:
    events = _events()
    expected = rewind_export(_rewind_state(tmp_path, events))
    fold = _peer_fold().PeerFold({}, {}, {}, {})
    for event in events:
        fold.apply(event)
    got = fold.export()
    order_id = sorted(got["orders"])[0]
    got["orders"][order_id] = ["NO_SUCH_STATUS", *got["orders"][order_id][1:]]
    del got["balances"][sorted(got["balances"])[0]]
    found = differences(expected, got)
    assert len(found) == 2
    assert found[0].startswith(f"orders[{order_id}]: rewind ")
    assert found[1].startswith("balances[") and found[1].endswith("peer None")


def test_a_file_that_is_not_an_export_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text('{"orders": {}}')
    with pytest.raises(ValueError, match="not a peers export"):
        load_export(path)
