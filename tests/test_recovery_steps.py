"""Recovery's steps refuse to go on when a store is not where replay says it is: the checks that
guard the swap into the live state raise InvariantViolation, so they hold under ``python -O`` too."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from projector.runner import ProjectionProgress
from projector.state_directory import StateDirectory
from replayer import recovery_steps
from replayer.recovery_steps import StoreRecovery, replay_stores, validate_stores
from rewind.ground.errors import InvariantViolation
from rewind.ground.settings import load_settings


class _StoppedShort:
    """A projector whose run ends before the target it found: events-p0002 stops at 7 of 0..9."""

    def __init__(self, *_: object, **__: object) -> None:
        self.progress = ProjectionProgress(offsets={"events-p0002": 7}, targets={"events-p0002": 10})

    def run(self, until_caught_up: bool, on_batch: Callable[[ProjectionProgress], None]) -> None:
        on_batch(self.progress)

    def close(self) -> None:
        pass


def test_a_replay_that_stops_before_its_target_is_an_invariant_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery_steps, "Projector", _StoppedShort)
    settings = load_settings(environ={})
    stores = {"events-p0002": StoreRecovery("events-p0002", 3)}
    with pytest.raises(InvariantViolation, match=r"events-p0002 to offset 7, not to offset 9") as raised:
        replay_stores(settings, tmp_path, ["events-p0002"], stores)
    assert raised.value.fix is not None and "live state was not changed" in raised.value.fix


def test_a_stored_offset_other_than_the_replays_is_an_invariant_violation(tmp_path: Path) -> None:
    root = tmp_path / "staging"
    settings = load_settings(flags={"state.dir": str(root)}, environ={})
    with StateDirectory.open(root, settings, durable=False) as directory:
        directory.partition(4).commit({}, 11, 12)
        directory.config().commit({}, 2, 3)
    stores = {
        "config": StoreRecovery("config", None, offset=2),
        "events-p0004": StoreRecovery("events-p0004", None, offset=12),
    }
    with ThreadPoolExecutor(max_workers=2) as io, pytest.raises(InvariantViolation) as raised:
        validate_stores(root, stores, io)
    assert "events-p0004 holds offset 11 on disk, not the offset 12 its replay reached" in str(raised.value)
    stores["events-p0004"].offset = 11
    with ThreadPoolExecutor(max_workers=2) as io:
        validate_stores(root, stores, io)
    assert all(store.digest for store in stores.values())
