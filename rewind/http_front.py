"""The HTTP front: a process of its own that owns the public HTTP socket of ``rewind serve``.

With ``http.front`` on (the default), the service binds the public address, starts this process
with that socket (``python -m rewind.http_front``, see :mod:`rewind.front_supervision`) and serves
its own application only on a private Unix socket in ``REWIND_HOME``. The front runs the same
aiohttp server with the same hardening (:func:`rewind.http_api.hardened_app` and
:func:`rewind.http_api.serve_http`: JSON errors for refused requests, header timeout, keep-alive
bound, body limits, tokens, HEAD), so the HTTP work of busy readers is done outside the projector's
interpreter.

What the front answers itself:

* ``/live``, on its own event loop;
* ``/state/positions``, ``/state/orders/{id}``, ``/state/accounts/{id}`` and ``/config``: built
  here from the state's LMDB stores opened read-only, by the same document functions as the service
  (:data:`rewind.state_readers.DOCUMENTS`, :func:`~rewind.state_readers.render`), so the bodies are
  the same bytes, on one worker thread. Each read is checked against the service's status file
  (:mod:`rewind.front_status`) before and after: it is answered only if the state was readable in
  one generation the whole time, else 503 as the service answers while recovering. Stores opened
  under an older generation are opened again first. In a cluster these routes are forwarded: which
  partitions a member may answer from is known to the service alone;
* ``/metrics`` and ``/lag`` (without a query): asked of the service at most once per
  :data:`~rewind.http_common.SHARED_SECONDS` and that answer (a 200) given to every request meanwhile.

Every other request (health, readiness, recovery, snapshots, rebuilds, reconciliation, the
console, the cluster, unknown routes, any method) is forwarded as it came (method, path, query,
headers, body) to the service's own application and its answer returned as it is, so behaviour
stays the service's. When the service does not answer, 503 with a fix.

The process ends when its standard input ends (the service closed it, or the service died, even by
SIGKILL), after letting requests in flight finish. It ignores SIGINT and SIGTERM: a Ctrl-C or a stop
sent to the whole process group reaches the service, which keeps answering while it stops and then
ends the front.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, NoReturn

import aiohttp
import lmdb
from aiohttp import hdrs, web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry
from yarl import URL

from projector.state_directory import StateDirectory
from rewind import http_api
from rewind.front_status import StatusReader
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings, load_settings
from rewind.http_common import SHARED_SECONDS, Runtime, add_routes
from rewind.state_readers import DOCUMENTS, render

__all__ = ["FRONT_READY", "FrontRuntime", "create_front_app", "main"]

FRONT_READY: Final = b"serving\n"
"""The line the front writes on its standard output once it accepts connections."""
STOP_SECONDS: Final = 2.0
SHARED_PATHS: Final = frozenset({"/metrics", "/lag"})
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
Answer = tuple[int, str | None, CIMultiDict[str], bytes]
"""A service's answer: status, reason, headers (less the hop-by-hop ones) and body."""


class Upstream:
    """The client of the service's application on its Unix socket (one pool of connections, opened
    when the front's application starts)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RewindError("the HTTP front is not started", "start it with serve_http")
        return self._session

    async def open(self, _app: web.Application) -> None:
        connector = aiohttp.UnixConnector(path=str(self.path), limit=64)
        timeout = aiohttp.ClientTimeout(total=None, connect=10)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)

    async def close(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()


UPSTREAM: Final = web.AppKey("rewind_front_upstream", Upstream)

_log = logging.getLogger(__name__)


class FrontView:
    """The service as the front's routes see it: its settings only. The routes that need anything
    else are forwarded to the service, so the other calls of
    :class:`rewind.service_view.ServiceView` are refused."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def settings(self) -> Settings:
        return self._settings

    def _elsewhere(self) -> NoReturn:
        raise RewindError("the HTTP front forwards this call to the service", "ask the service")

    def state_directory(self) -> StateDirectory:
        self._elsewhere()

    def recovery_status(self) -> dict[str, Any]:
        self._elsewhere()

    def recovered(self) -> bool:
        self._elsewhere()

    def health_checks(self) -> dict[str, dict[str, Any]]:
        self._elsewhere()

    def projector_lag(self) -> dict[str, Any]:
        self._elsewhere()

    def lag_seconds_max(self) -> float | None:
        self._elsewhere()

    def snapshots(self) -> list[dict[str, Any]]:
        self._elsewhere()

    def metrics_registry(self) -> CollectorRegistry:
        self._elsewhere()

    def take_snapshot(self) -> list[dict[str, Any]]:
        self._elsewhere()

    def request_rebuild(self) -> dict[str, Any]:
        self._elsewhere()

    def reconcile(self, query: Mapping[str, str]) -> dict[str, Any]:
        self._elsewhere()

    def last_reconciliation(self) -> dict[str, Any] | None:
        self._elsewhere()


class FrontRuntime(Runtime):
    """The front's :class:`~rewind.http_common.Runtime`: state reads from the stores opened here,
    under the service's status file; no reader processes."""

    def __init__(self, settings: Settings, status: StatusReader) -> None:
        # Runtime's own setup, less the reader processes: the front reads on its state thread.
        self.service = FrontView(settings)
        self.readers = None
        self.state_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewind-front-state")
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewind-front")
        self._shared = {}
        self.status = status
        self._state_root = settings.state_dir
        self._directory: StateDirectory | None = None
        self._generation = -1

    def _directory_of(self, generation: int) -> StateDirectory:
        """The stores opened under ``generation`` (on the one state thread)."""
        if self._directory is not None and generation != self._generation:
            self._directory.close()
            self._directory = None
        if self._directory is None:
            self._directory = StateDirectory.open_readonly(self._state_root)
            self._generation = generation
        return self._directory

    def _read(self, route: str, args: tuple[str | None, ...]) -> bytes | None:
        sequence, generation = self.status.begin()
        try:
            directory = self._directory_of(generation)
            try:
                document = DOCUMENTS[route](directory, *args)
            except lmdb.MapResizedError:
                directory.close()  # the writer grew the map: opening again maps the new size
                document = DOCUMENTS[route](directory, *args)
        except Exception:
            if self.status.unchanged(sequence):
                raise
            raise _replaced() from None  # whatever a replaced store did to the read
        if not self.status.unchanged(sequence):
            raise _replaced()
        return None if document is None else render(document)

    async def read_state(self, route: str, *args: str | None) -> bytes | None:
        return await asyncio.get_running_loop().run_in_executor(self.state_pool, self._read, route, args)


def _replaced() -> RewindError:
    return RewindError(
        "the state was being replaced (a recovery or rebuild) while this read ran", "retry in a moment"
    )


def _upstream_headers(headers: Mapping[str, str]) -> CIMultiDict[str]:
    forwarded: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in _HOP_BY_HOP and name.lower() != "host":
            forwarded.add(name, value)
    return forwarded


def _unanswered(exc: BaseException) -> web.Response:
    _log.warning("the service behind the HTTP front did not answer: %s", exc)
    return web.json_response(
        {
            "error": "the service behind the HTTP front does not answer",
            "fix": "retry in a moment; if this repeats, the service log says why",
        },
        status=503,
    )


async def _ask(
    session: aiohttp.ClientSession, method: str, target: str, headers: Mapping[str, str], body: bytes | None
) -> Answer:
    url = URL(f"http://rewind{target}", encoded=True)  # the target exactly as the client sent it
    async with session.request(method, url, headers=headers, data=body, allow_redirects=False) as answer:
        payload = await answer.read()
        kept: CIMultiDict[str] = CIMultiDict()
        for name, value in answer.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                kept.add(name, value)
        return answer.status, answer.reason, kept, payload


def _response(status: int, reason: str | None, headers: CIMultiDict[str], body: bytes) -> web.Response:
    return web.Response(status=status, reason=reason, headers=headers, body=body)


async def forward(request: web.Request) -> web.StreamResponse:
    """Ask the service what ``request`` asks and answer as it answers. HEAD is asked as GET and the
    body dropped here, so the headers are the ones the service gives to GET."""
    session = request.app[UPSTREAM].session
    body = await request.read() if request.body_exists else None
    method = hdrs.METH_GET if request.method == hdrs.METH_HEAD else request.method
    try:
        answer = await _ask(session, method, request.raw_path, _upstream_headers(request.headers), body)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return _unanswered(exc)
    return _response(*answer)


class SharedAnswers:
    """``/metrics`` and ``/lag`` from the service, asked at most once per
    :data:`~rewind.http_common.SHARED_SECONDS`; only a 200 is kept."""

    def __init__(self, settings: Settings) -> None:
        token = str(settings["http.read_token"]) or str(settings["http.token"])
        self._headers: dict[str, str] = {"Authorization": f"Bearer {token}"} if token else {}
        self._kept: dict[str, tuple[float, asyncio.Future[Answer]]] = {}

    async def answer(self, request: web.Request) -> web.StreamResponse:
        if request.query_string or request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
            return await forward(request)
        loop = asyncio.get_running_loop()
        path = request.path
        kept = self._kept.get(path)
        if kept is None or loop.time() - kept[0] >= SHARED_SECONDS or _failed(kept[1]):
            asked = _ask(request.app[UPSTREAM].session, hdrs.METH_GET, path, self._headers, None)
            kept = (loop.time(), asyncio.ensure_future(asked))
            self._kept[path] = kept
        try:
            answer = await asyncio.shield(kept[1])
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return _unanswered(exc)
        if answer[0] != 200 and self._kept.get(path) is kept:
            del self._kept[path]
        return _response(answer[0], answer[1], CIMultiDict(answer[2]), answer[3])


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def create_front_app(
    settings: Settings, status: StatusReader, upstream: Path, *, forward_state: bool = False
) -> web.Application:
    """The front's application: what it answers itself (see the module's description), everything
    else forwarded to the service's application on the Unix socket ``upstream``. With
    ``forward_state`` (a cluster member), state reads are forwarded too."""
    app = http_api.hardened_app(FrontRuntime(settings, status))
    shared = SharedAnswers(settings)
    routes: list[tuple[str, str, Any]] = [("GET", "/live", http_api.live)]
    if not forward_state:
        routes += [
            ("GET", "/state/positions", http_api.positions),
            ("GET", "/state/orders/{id}", http_api.order),
            ("GET", "/state/accounts/{id}", http_api.account),
            ("GET", "/config", http_api.config),
        ]
    routes += [("GET", path, shared.answer) for path in sorted(SHARED_PATHS)]
    add_routes(app, routes)
    app.router.add_route("*", "/{tail:.*}", forward)
    client = Upstream(upstream)
    app[UPSTREAM] = client
    app.on_startup.append(client.open)
    app.on_cleanup.append(client.close)
    return app


FRONT_NICENESS: Final = 10
"""The front yields the cores to the projector when both want them: under load a read waits a little
longer, and the projector does not wait for reads."""


def main() -> None:
    """``python -m rewind.http_front --listen-fd N --upstream SOCKET --status FILE``: serve the
    inherited listening socket ``N`` until standard input ends. Settings come from the environment
    (the service passes its own: :meth:`~rewind.ground.settings.Settings.child_environ`)."""
    parser = argparse.ArgumentParser(prog="python -m rewind.http_front")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--upstream", type=Path, required=True)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--forward-state", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(FRONT_NICENESS)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    ready = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stdout carries the ready line only
    settings = load_settings(environ=os.environ)
    listen = socket.socket(fileno=args.listen_fd)
    app = create_front_app(
        settings, StatusReader(args.status), args.upstream, forward_state=args.forward_state
    )
    host, port = str(settings["http.host"]), int(listen.getsockname()[1])
    server = http_api.serve_http(app, host, port, listen=listen)
    ready.write(FRONT_READY)
    ready.close()
    sys.stdin.buffer.read()
    server.stop(STOP_SECONDS)


if __name__ == "__main__":
    main()
