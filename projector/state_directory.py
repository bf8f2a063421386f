"""A state directory: the LMDB stores of every partition an instance owns, opened on demand.

Whole-state digest: the xxh3-128 of the lines ``<store name>:<partition digest>\\n`` for every store
present, in name order (``config`` first, then ``events-p0000``, ...). Per-partition digests are the
canonical :func:`projector.digest.state_digest`, so any one partition can be compared on its own.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import xxhash

from projector import encoding
from projector.store import (
    CONFIG_DIR_NAME,
    DATA_FILE,
    MAP_CEILING,
    Layout,
    PartitionStore,
    ensure_layout,
    partition_dir_name,
    partition_of_dir_name,
    read_layout,
)
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings


def tables_for(store_name: str) -> tuple[str, ...]:
    return encoding.CONFIG_TABLES if store_name == CONFIG_DIR_NAME else encoding.EVENTS_TABLES


def combined_digest(partition_digests: dict[str, str]) -> str:
    """The whole-state digest from per-store digests (see the module docstring)."""
    lines = "".join(f"{name}:{digest}\n" for name, digest in sorted(partition_digests.items()))
    return str(xxhash.xxh3_128(lines.encode()).hexdigest())


class StateDirectory:
    """The stores under one state directory, each opened once and closed together."""

    def __init__(
        self, root: Path, durable: bool = True, readonly: bool = False, max_map_size: int | None = None
    ) -> None:
        """``max_map_size``: how far (bytes) each store's map may grow; None: no cap."""
        self.root = root
        self.durable = durable
        self.readonly = readonly
        self.max_map_size = max_map_size
        self._stores: dict[str, PartitionStore] = {}
        self._lock_fd: int | None = None
        self.epoch = 0
        """Counts the stores whose files were replaced under this directory (:meth:`replaced`): a
        reader holding them open must open them again."""

    @classmethod
    def open(cls, root: Path, settings: Settings, durable: bool = True) -> StateDirectory:
        """Open (creating if needed) the state directory of the configured topics, for writing.

        Only one writer at a time: a second one (another projector, a recovery) is refused. Each
        store may grow to ``state.max_map_mb``.
        """
        ensure_layout(root, Layout(settings.events_topic, settings.config_topic))
        directory = cls(root, durable=durable, max_map_size=int(settings[MAP_CEILING.key]) << 20)
        directory._lock_for_writing()
        return directory

    def _lock_for_writing(self) -> None:
        path = self.root / "WRITER.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RewindError(
                f"state directory {self.root} is being written by pid {holder}",
                "stop that process first (one projector, service or recovery per state directory)",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    @classmethod
    def open_readonly(cls, root: Path) -> StateDirectory:
        """Open an existing state directory for reading only."""
        read_layout(root)
        return cls(root, readonly=True)

    def store(self, name: str) -> PartitionStore:
        if name not in self._stores:
            self._stores[name] = PartitionStore(
                self.root / name,
                tables_for(name),
                durable=self.durable,
                readonly=self.readonly,
                max_map_size=self.max_map_size,
            )
        return self._stores[name]

    def release(self, name: str) -> None:
        """Close store ``name`` if it is open; it is opened again on its next use."""
        store = self._stores.pop(name, None)
        if store is not None:
            store.close()

    def replaced(self, name: str) -> None:
        """Store ``name``'s files were replaced (it was released first): readers must reopen."""
        self.release(name)
        self.epoch += 1

    def partition(self, partition: int) -> PartitionStore:
        return self.store(partition_dir_name(partition))

    def config(self) -> PartitionStore:
        return self.store(CONFIG_DIR_NAME)

    def store_names(self) -> list[str]:
        """The stores present on disk, in canonical order (``config`` first)."""
        if not self.root.is_dir():
            return []
        names = [p.name for p in self.root.iterdir() if (p / DATA_FILE).is_file()]
        return sorted(names)

    def partitions(self) -> list[int]:
        found = (partition_of_dir_name(name) for name in self.store_names())
        return [partition for partition in found if partition is not None]

    def digests(self) -> dict[str, str]:
        """The canonical digest of every store present."""
        return {name: self.store(name).digest() for name in self.store_names()}

    def digest(self) -> str:
        digests = self.digests()
        if not digests:
            raise RewindError(
                f"no state in {self.root}", "build it with `rewind project` or `rewind recover`"
            )
        return combined_digest(digests)

    def __enter__(self) -> StateDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
