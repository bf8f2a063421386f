"""The JSON bodies of the ``/state/*`` and ``/config`` routes, and reader processes that build them.

The service's projector and its HTTP API share one interpreter. A state read (LMDB cursors, row
checks, entity decoding, JSON) costs that interpreter time the projector would have used, so the API
hands state reads to :class:`StateReaders`: a few processes of their own (``http.readers``), each
with the state directory opened read-only (LMDB lets any number of reader processes in beside the
writer), that answer each read with the response body as bytes. The API's thread only passes the
request on and the bytes back.

Guarantees:

* A reader answers the same bytes the in-process path renders (:func:`render` of the same document
  functions), and the same errors: a damaged row is a :class:`DamagedState` with the reader's
  message and fix, any other :class:`RewindError` keeps its message and fix.
* A reader reads the directory the service hands out now: each read names its directory's
  generation, which changes whenever the service hands out another
  :class:`~projector.state_directory.StateDirectory` (a recovery or rebuild swapped the stores),
  and a reader reopens the stores on a new generation, never serving the replaced files.
* Readers start on the first read (so only once the state is readable), one per slot. A reader that
  has died is replaced at the next read; one that dies while answering fails that read with a
  :class:`RewindError` (a 503 with its fix) and is replaced at the next.
* :meth:`StateReaders.close` ends every reader at once; a reader also exits by itself when its
  input closes, so none outlives the service, even one killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Final

import lmdb

from projector import queries, views
from projector.risk_view import risk_rows
from projector.state_directory import StateDirectory
from rewind.ground.errors import DamagedState, RewindError

__all__ = [
    "DOCUMENTS",
    "StateReaders",
    "account_document",
    "anomalies_document",
    "config_document",
    "order_document",
    "positions_document",
    "render",
]

READER_STOP_SECONDS: Final = 1.0
"""How long :meth:`StateReaders.close` waits for a reader after closing its input, before killing it."""

_log = logging.getLogger(__name__)


# The documents


def positions_document(directory: StateDirectory, account: str | None, symbol: str | None) -> dict[str, Any]:
    return {"positions": [views.to_dict(p) for p in queries.positions(directory, account, symbol)]}


def order_document(directory: StateDirectory, order_id: str) -> dict[str, Any] | None:
    found = queries.order(directory, order_id)
    return None if found is None else views.to_dict(found)


def account_document(directory: StateDirectory, account: str) -> dict[str, Any] | None:
    balances = [views.to_dict(b) for b in queries.balances(directory, account)]
    risks = risk_rows(directory, account)
    positions = [views.to_dict(p) for p in queries.positions(directory, account)]
    if not (balances or risks or positions):
        return None
    return {
        "account_id": account,
        "balances": balances,
        "risk": risks[0] if risks else None,
        "positions": positions,
    }


def config_document(directory: StateDirectory) -> dict[str, Any]:
    return {"config": [views.to_dict(c) for c in queries.config_entries(directory)]}


def anomalies_document(directory: StateDirectory, limit: str) -> dict[str, Any]:
    """Every store's recorded anomalies, newest (highest offset) first, at most ``limit`` of them,
    with the ``total`` count."""
    found = [views.to_dict(a) for _store, a in queries.anomalies(directory)]
    found.sort(key=lambda row: (row["offset"], row["partition"]), reverse=True)
    return {"total": len(found), "anomalies": found[: int(limit)]}


DOCUMENTS: Final[dict[str, Any]] = {
    "positions": positions_document,
    "order": order_document,
    "account": account_document,
    "config": config_document,
    "anomalies": anomalies_document,
}
"""Each state route's document function by name: ``function(directory, *arguments)``; None is
"not found"."""


def render(document: object) -> bytes:
    """A JSON response body exactly as the API renders every JSON document."""
    return json.dumps(document, allow_nan=False, ensure_ascii=False).encode("utf-8")


# The reader process

_OK, _NONE, _ERROR, _DAMAGED, _FAILED = b"ok", b"none", b"error", b"damaged", b"failed"


def _answer(directory: StateDirectory, route: str, arguments: list[str | None]) -> tuple[bytes, bytes]:
    try:
        document = DOCUMENTS[route](directory, *arguments)
    except DamagedState as exc:
        return _DAMAGED, render({"what": exc.what, "fix": exc.fix, "damage": exc.damage})
    except RewindError as exc:
        return _ERROR, render({"what": exc.what, "fix": exc.fix})
    return (_NONE, b"") if document is None else (_OK, render(document))


def serve_reads(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer requests until ``requests`` ends: each a JSON line ``[generation, root, route,
    arguments]``, each answer a line ``<kind> <length>`` and that many bytes."""
    directory: StateDirectory | None = None
    generation = -1
    for line in requests:
        wanted, root, route, arguments = json.loads(line)
        try:
            if directory is None or wanted != generation:
                if directory is not None:
                    directory.close()
                    directory = None
                directory = StateDirectory.open_readonly(Path(root))
                generation = wanted
            try:
                kind, body = _answer(directory, route, arguments)
            except lmdb.MapResizedError:
                directory.close()  # the writer grew the map: opening again maps the new size
                directory = StateDirectory.open_readonly(Path(root))
                kind, body = _answer(directory, route, arguments)
        except RewindError as exc:
            kind, body = _ERROR, render({"what": exc.what, "fix": exc.fix})
        except Exception:
            _log.exception("state reader %d: %s %r failed", os.getpid(), route, arguments)
            kind, body = _FAILED, b""
        answers.write(b"%s %d\n" % (kind, len(body)))
        answers.write(body)
        answers.flush()
    if directory is not None:
        directory.close()


def main() -> None:
    """A reader process: ``python -m rewind.state_readers``, spoken to on stdin and stdout.

    SIGINT is ignored (Ctrl-C reaches the whole process group; the service stops its readers), and
    anything printed goes to stderr: stdout carries the answers only."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve_reads(sys.stdin.buffer, answers)


# The pool, in the service


class ReaderGone(RewindError):
    """A reader process ended while answering (killed, out of memory)."""


class _Reader:
    """One reader process and the generation of the directory it was last sent."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rewind.state_readers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self.pid = self.process.pid
        self.gone = False
        """Set once an exchange failed: its end is known before the kernel reports its exit."""

    def alive(self) -> bool:
        return not self.gone and self.process.poll() is None

    def exchange(self, request: bytes) -> tuple[bytes, bytes]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(request)
            stdin.flush()
            kind, _, length = stdout.readline().rstrip(b"\n").partition(b" ")
            body = stdout.read(int(length)) if length else b""
        except (OSError, ValueError):
            kind, body, length = b"", b"", b""
        if not kind or len(body) != int(length or 0):
            self.gone = True
            raise ReaderGone(
                f"the state reader process (pid {self.pid}) ended while answering; a new one answers "
                "the next request",
                "retry the request; if this repeats, the service log says why the readers end",
            )
        return kind, body

    def stop(self, wait: float) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class StateReaders:
    """``size`` reader processes; :meth:`read` is blocking and safe from ``size`` threads at once
    (more wait for a free reader)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a pool of readers needs at least one")
        self.size = size
        self._idle: queue.LifoQueue[_Reader | None] = queue.LifoQueue()
        for _ in range(size):
            self._idle.put(None)
        self._lock = threading.Lock()
        self._running: set[_Reader] = set()
        self._closed = False
        self._directory: StateDirectory | None = None
        self._epoch = 0
        self._generation = 0

    def pids(self) -> list[int]:
        """The process ids of the readers running now (started on the first reads)."""
        with self._lock:
            return sorted(reader.pid for reader in self._running if reader.alive())

    def _generation_of(self, directory: StateDirectory) -> int:
        with self._lock:
            if directory is not self._directory or directory.epoch != self._epoch:
                self._directory = directory  # held, so no later directory can take its id
                self._epoch = directory.epoch  # a store's files replaced: reopen too
                self._generation += 1
            return self._generation

    def _ready_reader(self, reader: _Reader | None) -> _Reader:
        if reader is not None and reader.alive():
            return reader
        with self._lock:
            if reader is not None:
                self._running.discard(reader)
            if self._closed:
                raise RewindError("the service is stopping", "retry against the restarted service")
            fresh = _Reader()
            self._running.add(fresh)
        if reader is not None:
            _log.warning(
                "state reader %d ended (exit status %s); started %d",
                reader.pid,
                reader.process.returncode,
                fresh.pid,
            )
            reader.stop(0)
        return fresh

    def read(self, directory: StateDirectory, route: str, *arguments: str | None) -> bytes | None:
        """The body of ``route``'s document (see :data:`DOCUMENTS`) over ``directory``, or None when
        it found nothing. Raises what the document function raised (:class:`DamagedState`, another
        :class:`RewindError`), :class:`ReaderGone` when the reader died answering, and
        :class:`RuntimeError` for a failure the reader logged."""
        generation = self._generation_of(directory)
        request = json.dumps([generation, str(directory.root), route, list(arguments)]).encode() + b"\n"
        reader: _Reader | None = self._idle.get()
        try:
            reader = self._ready_reader(reader)
            try:
                kind, body = reader.exchange(request)
            except ReaderGone:
                reader.process.kill()
                reader.process.wait()
                raise
        finally:
            self._idle.put(reader)
        if kind == _OK:
            return body
        if kind == _NONE:
            return None
        if kind in (_DAMAGED, _ERROR):
            error = json.loads(body)
            if kind == _DAMAGED:
                raise DamagedState(error["what"], error["fix"], error["damage"])
            raise RewindError(error["what"], error["fix"])
        raise RuntimeError(f"state reader {reader.pid} failed on {route} (its traceback is in the log)")

    def close(self) -> None:
        """End every reader: input closed, killed after :data:`READER_STOP_SECONDS`. Reads after
        this are refused; safe to call more than once."""
        with self._lock:
            self._closed = True
            running, self._running = list(self._running), set()
        for reader in running:
            with contextlib.suppress(OSError):
                if reader.process.stdin is not None:
                    reader.process.stdin.close()
        for reader in running:
            reader.stop(READER_STOP_SECONDS)


if __name__ == "__main__":
    main()
