"""The second process of a parallel recovery: a share of the partitions recovered beside the parent.

Replay and validation are CPU-bound and run under the GIL, so ``rewind recover`` hands part of the event
partitions to a helper (``python -m replayer.recovery_helper PARENT_PID ROOT``, settings from the
``REWIND_*`` environment) and the two processes use two cores. The parent restores the helper's
stores into the helper's own staging ``ROOT``, then writes its partitions to stdin as one JSON list of
``[partition, snapshot offset or null]``. The helper replays and validates them there, inside ``ROOT``
and nowhere else; the parent swaps its stores into the live state only after both sides validated.

Protocol: the helper writes one JSON object per line to stdout: ``replayed`` and ``validated`` as it
finishes each step (with the time, on the machine's monotonic clock), and ``progress`` while it
replays. Each side goes at its own pace; the parent ends a step of the recovery
when both finished it. The helper dies with its parent (Linux ``PR_SET_PDEATHSIG``), so a killed
recovery leaves no process writing behind it.

Guarantee to the parent: every answer is checked (:class:`HelperFailed` otherwise); on any failure the
parent discards the helper's root and recovers those partitions itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry

from projector.crashpoints import crashpoint
from projector.gc_tuning import tune_gc_for_projection
from projector.metrics import ProjectorMetrics
from projector.store import partition_dir_name, partition_of_dir_name
from replayer.recovery_steps import StoreRecovery, replay_stores, validate_stores
from rewind.ground.settings import Settings, load_settings
from schemas.codec import default_codec

_PR_SET_PDEATHSIG = 1


class HelperFailed(Exception):
    """The helper did not answer as the protocol says (it died, or wrote something else)."""


class ReplayTally(ProjectorMetrics):
    """What a replay applied, kept as plain numbers so the helper can hand them to the parent."""

    def __init__(self) -> None:
        super().__init__(CollectorRegistry())
        self.counts: dict[str, int] = {}
        self.anomaly_count = 0
        self.dead_letter_errors: list[str] = []

    def applied(self, counts: dict[str, int], anomalies: int) -> None:
        for event_type, count in counts.items():
            self.counts[event_type] = self.counts.get(event_type, 0) + count
        self.anomaly_count += anomalies

    def dead_letter(self, error: str) -> None:
        self.dead_letter_errors.append(error)


class RecoveryHelper:
    """The parent's side: start the helper and take in its checked reports, step by step."""

    STEPS = ("replayed", "validated")
    PHASES = ("replay", "validate")
    """The recovery phase each step ends."""

    def __init__(self, process: subprocess.Popen[str], errors: IO[bytes]) -> None:
        self._process = process
        self._errors = errors
        self._names: set[str] = set()
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reported = 0
        self.replay_done = 0
        self.replay_total = 0
        self._reader = threading.Thread(target=self._read, name="recovery-helper-reader", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, settings: Settings, root: Path) -> RecoveryHelper:
        """Start a helper that will work in ``root``; it loads and then waits for :meth:`assign`
        (started early, its start-up overlaps the restore). Raises :class:`HelperFailed`."""
        command = [sys.executable, "-m", __name__, str(os.getpid()), str(root)]
        # stderr goes to a file, not a pipe, so a chatty helper never blocks; open for the helper's life
        errors = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=settings.child_environ(),
            )
        except OSError as exc:
            errors.close()
            raise HelperFailed(f"could not start: {exc}") from exc
        return cls(process, errors)

    def assign(self, snapshot_offsets: dict[str, int | None]) -> None:
        """Give the helper its stores (event partitions' only), restored in its root from a snapshot at
        the given offset or from none: it starts replaying them."""
        assigned = sorted((_events_partition(name), offset) for name, offset in snapshot_offsets.items())
        self._names = set(snapshot_offsets)
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(assigned) + "\n")
            self._process.stdin.close()
        except OSError as exc:
            raise HelperFailed(f"did not take its partitions ({exc})") from exc

    @property
    def finished(self) -> bool:
        return self._reported == len(self.STEPS)

    def next_report(
        self, stores: dict[str, StoreRecovery], metrics: ProjectorMetrics | None, block: bool
    ) -> tuple[str, float] | None:
        """The next step the helper finished, as (step, when on this machine's monotonic clock), with
        its results recorded in ``stores``: first their offsets, then their digests; replayed events
        counted in ``metrics``. None when nothing is new and not ``block``.
        Raises :class:`HelperFailed` when the helper died or reported something else."""
        if self.finished:
            return None
        try:
            message = self._messages.get(block=block)
        except queue.Empty:
            return None
        if message is None:
            self._process.wait()
            self._errors.seek(0)
            error = self._errors.read().decode(errors="replace").strip()[-800:]
            self.stop()
            expected = self.STEPS[self._reported]
            raise HelperFailed(f"exited with {self._process.returncode} before '{expected}': {error}")
        kind = self.STEPS[self._reported]
        if kind not in message:
            raise HelperFailed(f"expected '{kind}', got {str(message)[:200]}")
        found = message[kind]
        with _malformed(kind, found):
            at = float(message["at"])
            names = set(found["stores"] if kind == "replayed" else found)
            if names != self._names:
                raise HelperFailed(f"'{kind}' names {sorted(names)}, not {sorted(self._names)}")
            getattr(self, "_take_" + kind)(found, stores, metrics)
        self._reported += 1
        if self.finished:
            self._process.wait()
            self._errors.close()
        return kind, at

    def stop(self) -> None:
        """End the helper now (after a failure on either side); safe to call more than once."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._errors.close()

    @staticmethod
    def _take_replayed(
        found: Any, stores: dict[str, StoreRecovery], metrics: ProjectorMetrics | None
    ) -> None:
        offsets = {name: (int(offset), int(replayed)) for name, (offset, replayed) in found["stores"].items()}
        counts = {str(k): int(v) for k, v in found["counts"].items()}
        anomalies, dead_letters = int(found["anomalies"]), [str(e) for e in found["dead_letters"]]
        for name, (offset, replayed) in offsets.items():
            stores[name].offset, stores[name].replayed = offset, replayed
        if metrics is not None:
            metrics.applied(counts, anomalies)
            for error in dead_letters:
                metrics.dead_letter(error)

    @staticmethod
    def _take_validated(found: Any, stores: dict[str, StoreRecovery], _: ProjectorMetrics | None) -> None:
        for name, digest in found.items():
            stores[name].digest = str(digest)

    def _read(self) -> None:
        """Queue every report; progress updates the counters. The end of the output is always queued
        (as None), so a waiting parent never hangs on a helper that wrote something odd and died."""
        assert self._process.stdout is not None
        try:
            for line in self._process.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    message = {"unreadable": line[:200]}
                progress = message.get("progress")
                if (
                    isinstance(progress, list)
                    and len(progress) == 2
                    and all(type(n) is int for n in progress)
                ):
                    self.replay_done, self.replay_total = progress
                    continue
                self._messages.put(message)
        finally:
            self._messages.put(None)


def _events_partition(name: str) -> int:
    """An event partition's store as the helper's input names it: by its partition."""
    partition = partition_of_dir_name(name)
    if partition is None:
        raise ValueError(f"a recovery helper recovers event partitions' stores, not {name!r}")
    return partition


@contextlib.contextmanager
def _malformed(kind: str, found: object) -> Iterator[None]:
    """Turn an answer of the wrong shape into :class:`HelperFailed`."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HelperFailed(f"malformed '{kind}' ({exc!r}): {str(found)[:200]}") from exc


def _write(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _send(step: str, found: object) -> None:
    _write({step: found, "at": time.monotonic()})


def _progress(done: int, total: int) -> None:
    _write({"progress": [done, total]})


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the helper finishes its steps, in its own root only
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        sys.exit(1)


def main(argv: list[str]) -> int:
    parent, root = int(argv[0]), Path(argv[1])
    _die_with_parent(parent)
    tune_gc_for_projection()  # as the parent's `rewind recover` does
    settings = load_settings()
    default_codec()  # built before the partitions arrive, while the parent is still restoring
    line = sys.stdin.readline()
    assigned = [(int(p), None if o is None else int(o)) for p, o in json.loads(line)] if line.strip() else []
    if not assigned:
        return 0
    named = [(partition_dir_name(partition), offset) for partition, offset in assigned]
    stores = {name: StoreRecovery(name, offset) for name, offset in named}
    names = list(stores)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="recover-io") as io:
        crashpoint("recovery-helper-assigned")
        tally = ReplayTally()
        replay_stores(settings, root, names, stores, _progress, tally)
        crashpoint("recovery-helper-replayed")
        _send(
            "replayed",
            {
                "stores": {n: [s.offset, s.replayed] for n, s in stores.items()},
                "counts": tally.counts,
                "anomalies": tally.anomaly_count,
                "dead_letters": tally.dead_letter_errors,
            },
        )
        validate_stores(root, stores, io)
        crashpoint("recovery-helper-validated")
        _send("validated", {n: s.digest for n, s in stores.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
