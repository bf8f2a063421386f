"""Restore's file copy: byte-identical, refuses to overwrite, and falls back when the kernel can't."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from snapshotter.snapshot import copy_in_kernel


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
