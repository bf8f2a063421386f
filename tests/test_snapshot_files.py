"""Restore's file handling: the copy is byte-identical, never overwrites, and falls back when the
kernel can't copy; the prefetch is advisory and never fails a recovery."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from projector.store import DATA_FILE
from rewind.ground.errors import InvariantViolation
from snapshotter.snapshot import Manifest, Snapshot, copy_in_kernel, prefetch_newest, restore


def _source(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "source.mdb"
    path.write_bytes(os.urandom(size))
    return path


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * (1 << 20) + 17])
def test_the_copy_is_byte_identical(tmp_path: Path, size: int) -> None:
    source = _source(tmp_path, size)
    copy_in_kernel(source, tmp_path / "copy.mdb")
    assert (tmp_path / "copy.mdb").read_bytes() == source.read_bytes()


def test_an_existing_target_is_never_overwritten(tmp_path: Path) -> None:
    source = _source(tmp_path, 4096)
    target = tmp_path / "copy.mdb"
    target.write_bytes(b"live state")
    with pytest.raises(FileExistsError):
        copy_in_kernel(source, target)
    assert target.read_bytes() == b"live state"


def test_a_restore_into_a_store_that_holds_state_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "snapshot"
    source.mkdir()
    (source / DATA_FILE).write_bytes(os.urandom(4096))
    manifest = Manifest("events-p0000", 7, 8, 0.0, 4096, "", "", ())
    store = tmp_path / "events-p0000"
    store.mkdir()
    (store / DATA_FILE).write_bytes(b"live state")
    with pytest.raises(InvariantViolation, match="already holds state"):
        restore(Snapshot(source, manifest), store)
    assert (store / DATA_FILE).read_bytes() == b"live state"


def test_a_file_system_without_copy_file_range_gets_the_portable_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half copied in the kernel, then EXDEV: the target is rewritten from the start, whole."""
    source = _source(tmp_path, 2 * (1 << 20))
    real = os.copy_file_range
    calls: list[int] = []

    def partly_then_unsupported(src: int, dst: int, count: int, *args: int) -> int:
        calls.append(count)
        if len(calls) == 1:
            return real(src, dst, count // 2, *args)
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", partly_then_unsupported)
    copy_in_kernel(source, tmp_path / "copy.mdb")
    assert len(calls) == 2
    assert (tmp_path / "copy.mdb").read_bytes() == source.read_bytes()


def test_other_copy_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _source(tmp_path, 4096)

    def disk_full(src: int, dst: int, count: int, *args: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", disk_full)
    with pytest.raises(OSError) as raised:
        copy_in_kernel(source, tmp_path / "copy.mdb")
    assert raised.value.errno == errno.ENOSPC


def test_prefetch_tolerates_what_recovery_will_report_itself(tmp_path: Path) -> None:
    """No snapshot directory, a partition without snapshots, a snapshot whose data file is missing:
    the prefetch skips them (recovery then names the problem when it verifies)."""
    prefetch_newest(tmp_path / "absent")
    root = tmp_path / "snapshots"
    (root / "events-p0000").mkdir(parents=True)
    (root / "events-p0001" / "00000000000000000042").mkdir(parents=True)
    newest = root / "events-p0002" / "00000000000000000007"
    newest.mkdir(parents=True)
    (newest / DATA_FILE).write_bytes(b"\0" * 8192)
    prefetch_newest(root)
    prefetch_newest(root, ["events-p0001", "events-p0002", "events-p0009"])
    assert (newest / DATA_FILE).read_bytes() == b"\0" * 8192
