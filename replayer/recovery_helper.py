"""The second process of a parallel recovery: a share of the partitions recovered beside the parent.

Replay and validation are CPU-bound and run under the GIL, so ``rewind recover`` hands part of the
event partitions to a helper (``python -m replayer.recovery_helper PARENT_PID ROOT PARTITION...``,
settings from the ``REWIND_*`` environment) and the two processes use two cores. The helper runs the
steps of :mod:`replayer.recovery_steps` inside its own staging ``ROOT`` and nowhere else; the parent
swaps its stores into the live state only after both sides validated.

Protocol: the helper writes one JSON object per line to stdout (``restored``, ``progress``,
``replayed``, ``validated``); it starts replaying when the parent writes ``replay`` to its stdin and
validating on ``validate``, so each step ends for both sides together and the progress and timings stay
those of one recovery. End of stdin stops the helper, and it dies with its parent (Linux
``PR_SET_PDEATHSIG``), so a killed recovery leaves no process writing behind it.

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
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry

from projector.crashpoints import crashpoint
from projector.metrics import ProjectorMetrics
from replayer.recovery_steps import StoreRecovery, replay_stores, restore_stores, validate_stores
from rewind.config import Settings, load_settings

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
    """The parent's side: start the helper, drive its steps, and read its checked answers."""

    def __init__(self, process: subprocess.Popen[str], errors: IO[bytes], names: list[str]) -> None:
        self._process = process
        self._errors = errors
        self._names = set(names)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.replay_done = 0
        self.replay_total = 0
        self._reader = threading.Thread(target=self._read, name="recovery-helper-reader", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, settings: Settings, root: Path, keys: list[int], names: list[str]) -> RecoveryHelper:
        """Start the helper on ``keys`` (their stores are ``names``); raises :class:`HelperFailed`."""
        command = [sys.executable, "-m", __name__, str(os.getpid()), str(root), *map(str, keys)]
        # stderr goes to a file, not a pipe, so a chatty helper never blocks; open for the helper's life
        errors = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=os.environ | settings.as_environ(),
            )
        except OSError as exc:
            errors.close()
            raise HelperFailed(f"could not start: {exc}") from exc
        return cls(process, errors, names)

    def restored(self) -> dict[str, StoreRecovery]:
        """Wait until the helper restored its stores; what it restored each one from."""
        found = self._expect("restored")
        with _malformed("restored", found):
            return {
                name: StoreRecovery(name, _optional_int(offset), [str(r) for r in rejected])
                for name, (offset, rejected) in found.items()
            }

    def replay(self) -> None:
        self._tell("replay")

    def replayed(self, stores: Mapping[str, StoreRecovery], metrics: ProjectorMetrics | None) -> None:
        """Wait until the helper replayed; record each store's offset, and count what it applied."""
        found = self._expect("replayed")
        with _malformed("replayed", found):
            offsets = {
                name: (int(offset), int(replayed)) for name, (offset, replayed) in found["stores"].items()
            }
            counts = {str(k): int(v) for k, v in found["counts"].items()}
            anomalies, dead_letters = int(found["anomalies"]), [str(e) for e in found["dead_letters"]]
        for name, (offset, replayed) in offsets.items():
            stores[name].offset, stores[name].replayed = offset, replayed
        if metrics is not None:
            metrics.applied(counts, anomalies)
            for error in dead_letters:
                metrics.dead_letter(error)

    def validate(self) -> None:
        self._tell("validate")

    def validated(self, stores: Mapping[str, StoreRecovery]) -> None:
        """Wait until the helper validated; record each store's digest."""
        found = self._expect("validated")
        with _malformed("validated", found):
            digests = {name: str(digest) for name, digest in found.items()}
        for name, digest in digests.items():
            stores[name].digest = digest
        self._process.wait()
        self._errors.close()

    def stop(self) -> None:
        """End the helper now (after a failure on either side); safe to call more than once."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._errors.close()

    def _tell(self, command: str) -> None:
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
        except OSError as exc:
            raise HelperFailed(f"stopped listening ({exc})") from exc

    def _expect(self, kind: str) -> Any:
        while True:
            message = self._messages.get()
            if message is None:
                self._process.wait()
                self._errors.seek(0)
                error = self._errors.read().decode(errors="replace").strip()[-800:]
                self.stop()
                raise HelperFailed(f"exited with {self._process.returncode} before '{kind}': {error}")
            if kind in message:
                found = message[kind]
                with _malformed(kind, found):
                    names = set(found["stores"] if kind == "replayed" else found)
                if names != self._names:
                    raise HelperFailed(f"'{kind}' names {sorted(names)}, not {sorted(self._names)}")
                return found
            raise HelperFailed(f"expected '{kind}', got {str(message)[:200]}")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                message = {"unreadable": line[:200]}
            if not isinstance(message, dict):
                message = {"unreadable": line[:200]}
            if "progress" in message:
                self.replay_done, self.replay_total = message["progress"]
                continue
            self._messages.put(message)
        self._messages.put(None)


@contextlib.contextmanager
def _malformed(kind: str, found: object) -> Iterator[None]:
    """Turn an answer of the wrong shape into :class:`HelperFailed`."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HelperFailed(f"malformed '{kind}' ({exc!r}): {str(found)[:200]}") from exc


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _told(command: str) -> bool:
    """Wait for the parent's next command; False when it is gone or says something else."""
    return sys.stdin.readline().strip() == command


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: end of stdin still stops the helper between steps
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        sys.exit(1)


def main(argv: list[str]) -> int:
    parent, root, keys = int(argv[0]), Path(argv[1]), [int(k) for k in argv[2:]]
    _die_with_parent(parent)
    settings = load_settings()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="recover-io") as io:
        stores = restore_stores(settings, root, keys, io)
        crashpoint("recovery-helper-restored")
        _send({"restored": {n: [s.snapshot_offset, s.rejected_snapshots] for n, s in stores.items()}})
        if not _told("replay"):
            return 1
        tally = ReplayTally()
        replay_stores(
            settings, root, keys, stores, lambda done, total: _send({"progress": [done, total]}), tally
        )
        crashpoint("recovery-helper-replayed")
        _send(
            {
                "replayed": {
                    "stores": {n: [s.offset, s.replayed] for n, s in stores.items()},
                    "counts": tally.counts,
                    "anomalies": tally.anomaly_count,
                    "dead_letters": tally.dead_letter_errors,
                }
            }
        )
        if not _told("validate"):
            return 1
        validate_stores(root, stores, io)
        crashpoint("recovery-helper-validated")
        _send({"validated": {n: s.digest for n, s in stores.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
