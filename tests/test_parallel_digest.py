"""Validation's digests, computed by this process and a helper process side by side (real LMDB)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from projector import encoding
from projector.state_directory import StateDirectory
from projector.store import Layout, PartitionStore, ensure_layout
from replayer import parallel_digest

STORES = ["config", *(f"events-p{p:04d}" for p in range(5))]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory of six stores of different sizes, each at its own offset."""
    root = tmp_path / "state"
    ensure_layout(root, Layout("t.events", "t.config"))
    for number, name in enumerate(STORES):
        table = encoding.CONFIG if name == "config" else encoding.ORDERS
        rows: dict[bytes, bytes | None] = {
            f"K{i:06d}".encode(): f"[1,{number},{i}]".encode() for i in range(200 * (number + 1) ** 2)
        }
        tables = encoding.CONFIG_TABLES if name == "config" else encoding.EVENTS_TABLES
        with PartitionStore(root / name, tables) as store:
            store.commit({table: rows}, 10 + number, len(rows))
    return root


def _expected(root: Path) -> dict[str, tuple[int, str]]:
    with StateDirectory.open_readonly(root) as directory:
        return {name: (directory.store(name).offset(), directory.store(name).digest()) for name in STORES}


def test_the_helper_and_this_process_share_the_stores_and_agree(state: Path) -> None:
    mine, helpers = parallel_digest._split(state, STORES)
    assert mine and helpers and sorted(mine + helpers) == sorted(STORES)
    progress: list[int] = []
    assert parallel_digest.store_digests(state, STORES, progress.append) == _expected(state)
    assert progress[-1] == len(STORES)


def test_the_helper_prints_what_this_process_would_compute(state: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "replayer.parallel_digest", str(state), *STORES],
        capture_output=True,
        text=True,
        check=True,
    )
    printed = {name: (offset, digest) for name, (offset, digest) in json.loads(done.stdout).items()}
    assert printed == _expected(state)


def test_a_failed_helper_is_reported_and_its_stores_digested_here(
    state: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_helper(root: Path, names: list[str]) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", "import sys; sys.exit('no such luck')"]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    monkeypatch.setattr(parallel_digest, "_start_helper", broken_helper)
    with caplog.at_level(logging.WARNING, logger="replayer.parallel_digest"):
        assert parallel_digest.store_digests(state, STORES) == _expected(state)
    assert "digest helper failed" in caplog.text and "no such luck" in caplog.text
