"""The HTTP API: health, readiness, recovery, metrics, read-only state, lag, snapshots and rebuilds.

:func:`create_app` builds an aiohttp application over a :class:`rewind.service_view.ServiceView`;
:func:`serve_http` runs it on a thread of its own so the service's main thread stays with the
projector. ``rewind/openapi.yaml`` describes every route and is served at ``/openapi.yaml``.

Guarantees:

* Every response except ``/metrics`` (Prometheus text) and ``/openapi.yaml`` is JSON, errors included:
  ``{"error": ...}`` plus ``"parameter"`` on a 400 about a parameter and ``"fix"`` when there is one.
  That holds for requests aiohttp's parser refuses too (400 malformed, 414 request line over
  :data:`MAX_REQUEST_LINE_BYTES`, 431 a header over :data:`MAX_HEADER_BYTES` or more than
  :data:`MAX_HEADERS` of them): never a header echoed back, and one short log line each.
* Every GET route answers HEAD with the same status and headers and no body.
* Bad input never reaches the state: an unknown or repeated query parameter, or an account, symbol or
  id that is empty, contains NUL or is longer than :data:`MAX_IDENTIFIER_CHARS` characters (the
  ``maxLength`` of ``Identifier`` in the OpenAPI description) is a 400 naming the parameter. One
  within that length but over :data:`projector.encoding.MAX_KEY_PART_BYTES` UTF-8 bytes cannot be a
  key of the state, so it is not found (404, or no positions).
* A request body over :data:`MAX_BODY_BYTES` is a 413, one of unknown length (chunked) a 411; no
  route reads a body.
* Mutating calls (``POST /snapshots``, ``POST /rebuild``) and ``POST /reconcile`` (which reads
  statement files of the drop folder, named in its query, never paths) need
  ``Authorization: Bearer <http.token>``:
  401 without credentials, 403 with wrong ones, and 403 for everyone while no token is configured.
  With ``http.read_token`` set, every request needs ``Authorization: Bearer`` with it (or with
  ``http.token``): 401 without, 403 with another; the probes (:data:`OPEN_PATHS`: ``/live``,
  ``/health``, ``/ready``) reveal no state and need no token, nor do the console's page and assets
  (:func:`is_console_page`, :mod:`rewind.console_routes`). :func:`serve_http` refuses an address
  that is not loopback while ``http.read_token`` is empty. Two ``Authorization`` headers are a 400.
* A connection has ``http.header_timeout_seconds`` from its opening, or from the first byte of a
  request after the previous response, to send the whole request line and headers, and is closed
  otherwise; an idle keep-alive connection is closed after ``http.keepalive_seconds``.
* The event loop never waits on LMDB or the service. State reads are built by ``http.readers``
  reader processes (:class:`rewind.state_readers.StateReaders`), so the service's interpreter only
  hands each over; with ``http.readers`` 0 they run on one worker thread (so a
  :class:`~projector.state_directory.StateDirectory` is never used by two threads at once). Either
  way the body is the same bytes. The other service calls and the metrics exposition run on a small
  pool. Only the accessors ``settings()``, ``health_checks()`` and ``metrics_registry()`` are called
  on the loop itself.
* ``/metrics`` and ``/lag`` are rendered at most once per
  :data:`~rewind.http_common.SHARED_SECONDS` and that answer is given to every request meanwhile.
* ``/live`` answers 200 whenever the event loop turns, and checks nothing else: the liveness probe.
* ``/health`` answers 200 while every check of ``health_checks()`` passes, 503 naming the failing
  ones otherwise (``broker``, ``projector``, ``disk``, ``snapshots``, ``recovery``). ``/ready``
  counts the failing checks except those of :data:`HEALTH_ONLY_CHECKS`; ``/health`` does not count
  those of :data:`READY_ONLY_CHECKS` (``reconciliation``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from importlib import resources
from typing import Any, Final, TypeVar

from aiohttp import hdrs, web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidURLError,
    LineTooLong,
)
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from projector.encoding import MAX_KEY_PART_BYTES
from replayer.recovery_history_file import history_path, read_history
from rewind import console_routes
from rewind.cluster_routing import cluster_status
from rewind.ground.errors import ConfigError, RewindError
from rewind.ground.settings import Settings
from rewind.http_common import (
    MAX_IDENTIFIER_CHARS,
    RUNTIME,
    ApiError,
    BadParameter,
    Runtime,
    add_routes,
    identifier,
    json_bytes_response,
    json_response,
    query_params,
    runtime_of,
)
from rewind.service_reconcile import StatementNotFound
from rewind.service_view import ServiceView
from rewind.state_readers import render

__all__ = [
    "HEALTH_ONLY_CHECKS",
    "OPEN_PATHS",
    "HttpServer",
    "create_app",
    "hardened_app",
    "is_console_page",
    "listen_socket",
    "serve_http",
]

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SHUTDOWN_SECONDS: Final = 5.0
OPENAPI_CONTENT_TYPE: Final = "application/yaml"
MAX_REQUEST_LINE_BYTES: Final = 8190
"""Longest request line; the longest valid one (two identifiers of 4-byte characters,
percent-encoded) is about 6,200 bytes."""
MAX_HEADER_BYTES: Final = 8190
"""Longest header, name and value together."""
MAX_HEADERS: Final = 128
MAX_BODY_BYTES: Final = 1024
"""Largest request body accepted (and ignored: no route reads one)."""

OPEN_PATHS: Final = frozenset({"/live", "/health", "/ready"})
"""Routes that need no read token: they reveal no state, and probes send no secrets."""
READY_ONLY_CHECKS: Final = frozenset({"reconciliation"})
"""Checks that fail ``/ready`` but not ``/health``: the process is healthy, its state not yet
validated against the outside (``recovery.require_reconciliation``)."""
HEALTH_ONLY_CHECKS: Final = frozenset({"disk", "snapshots"})
"""Checks that fail ``/health`` but not ``/ready``: they threaten the next recovery, not the reads
served now."""

_log = logging.getLogger(__name__)


# Parameters


def _storable(*values: str | None) -> bool:
    """Whether every given identifier can be a key of the state (at most
    :data:`~projector.encoding.MAX_KEY_PART_BYTES` UTF-8 bytes); one that cannot is in no row."""
    return all(value is None or len(value.encode()) <= MAX_KEY_PART_BYTES for value in values)


def _path_id(request: web.Request) -> str:
    return identifier("id", request.match_info["id"])


# Authorization


_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="rewind"'}
_INVALID_TOKEN: Final = {"WWW-Authenticate": 'Bearer realm="rewind", error="invalid_token"'}


def _bearer(request: web.Request) -> bytes | None:
    """The bearer token's bytes as sent (any bytes, not only UTF-8), or None without one."""
    values = request.headers.getall(hdrs.AUTHORIZATION, [])
    if len(values) > 1:
        raise ApiError(
            400,
            f"Authorization given {len(values)} times",
            fix="send one 'Authorization: Bearer <token>' header",
        )
    scheme, _, given = (values[0] if values else "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip().encode("utf-8", "surrogateescape")


def _is_token(given: bytes, token: str) -> bool:
    return bool(token) and hmac.compare_digest(given, token.encode())


def is_console_page(path: str) -> bool:
    """The console's page and assets (:mod:`rewind.console_routes`): they hold no state, and the page
    is where a reader enters the token."""
    return path == "/" or path.startswith("/console/")


def _check_read_access(request: web.Request) -> None:
    """With ``http.read_token`` set, the request must bear it or ``http.token``."""
    settings = runtime_of(request).service.settings()
    read_token, token = str(settings["http.read_token"]), str(settings["http.token"])
    if not read_token or request.path in OPEN_PATHS or is_console_page(request.path):
        return
    given = _bearer(request)
    if given is None:
        raise ApiError(
            401,
            "this API needs 'Authorization: Bearer <token>' (http.read_token is set)",
            headers=_CHALLENGE,
            fix="send the configured http.read_token (or http.token) as a bearer token",
        )
    if not (_is_token(given, read_token) | _is_token(given, token)):
        raise ApiError(
            403, "the bearer token is neither http.read_token nor http.token", headers=_INVALID_TOKEN
        )


def _authorize(request: web.Request) -> None:
    token = str(runtime_of(request).service.settings()["http.token"])
    if not token:
        raise ApiError(
            403,
            "mutating calls are disabled because no API token is configured",
            fix="set http.token (REWIND_HTTP_TOKEN) and send 'Authorization: Bearer <token>'",
        )
    given = _bearer(request)
    if given is None:
        raise ApiError(401, "this call needs 'Authorization: Bearer <token>'", headers=_CHALLENGE)
    if not _is_token(given, token):
        raise ApiError(403, "the bearer token is not the configured http.token", headers=_INVALID_TOKEN)


def _check_body(request: web.Request) -> None:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(
            413,
            f"the request body is {request.content_length} bytes; at most {MAX_BODY_BYTES} are accepted",
            fix="send no body: no route of this API reads one",
            close=True,
        )
    if request.content_length is None and request.body_exists:
        raise ApiError(
            411,
            "a request body of unknown length (chunked) is not accepted",
            fix="send no body, or one with a Content-Length",
            close=True,
        )


# Handlers


async def live(request: web.Request) -> web.Response:
    """200 ``{"status": "alive"}``, answered on the event loop itself and checking nothing else: a
    process whose brokers are lost is alive, and restarting it would not bring them back."""
    query_params(request)
    return json_response({"status": "alive"})


async def health(request: web.Request) -> web.Response:
    """200 ``{"status": "ok", "checks": ...}`` while every check passes; 503 with ``"status":
    "failing"`` and the names of the failing checks otherwise. Answered on the event loop itself."""
    query_params(request)
    checks = runtime_of(request).service.health_checks()
    failing = sorted(
        name for name, check in checks.items() if not check.get("ok") and name not in READY_ONLY_CHECKS
    )
    if not failing:
        return json_response({"status": "ok", "checks": checks})
    return json_response({"status": "failing", "failing": failing, "checks": checks}, 503)


async def ready(request: web.Request) -> web.Response:
    query_params(request)
    runtime = runtime_of(request)
    limit = float(runtime.service.settings()["lag.ready_max_seconds"])
    recovered = await runtime.call(runtime.service.recovered)
    lag = await runtime.call(runtime.service.lag_seconds_max)
    checks = runtime.service.health_checks()
    reasons = []
    for name, check in sorted(checks.items()):
        if not check.get("ok") and name not in HEALTH_ONLY_CHECKS:
            reasons.append(f"{check.get('error') or f'the {name} check fails'} (see /health)")
    if not recovered:
        reasons.append("state is not recovered yet (see /recovery/status)")
    if lag is None:
        reasons.append("projector lag has not been measured yet (see /lag)")
    elif lag > limit:
        reasons.append(f"projector lag {lag:.3f}s is above lag.ready_max_seconds={limit:g}s (see /lag)")
    body = {
        "ready": not reasons,
        "recovered": recovered,
        "lag_seconds_max": lag,
        "ready_max_seconds": limit,
        "reasons": reasons,
    }
    return json_response(body, 200 if not reasons else 503)


async def recovery_status(request: web.Request) -> web.Response:
    query_params(request)
    runtime = runtime_of(request)
    return json_response(await runtime.call(runtime.service.recovery_status))


async def recovery_history(request: web.Request) -> web.Response:
    query_params(request)
    runtime = runtime_of(request)
    path = history_path(runtime.service.settings())
    records, warnings = await runtime.call(read_history, path)
    return json_response({"history": records, "damaged_lines": len(warnings)})


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus exposition, rendered at most once per :data:`~rewind.http_common.SHARED_SECONDS`."""
    query_params(request)
    runtime = runtime_of(request)
    registry = runtime.service.metrics_registry()
    body = await runtime.shared("metrics", functools.partial(generate_latest, registry))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def positions(request: web.Request) -> web.Response:
    given = query_params(request, "account", "symbol")
    account_id, symbol = given.get("account"), given.get("symbol")
    if not _storable(account_id, symbol):
        return json_response({"positions": []})
    body = await runtime_of(request).read_state("positions", account_id, symbol)
    assert body is not None
    return json_bytes_response(body)


async def order(request: web.Request) -> web.Response:
    query_params(request)
    order_id = _path_id(request)
    found = await runtime_of(request).read_state("order", order_id) if _storable(order_id) else None
    if found is None:
        raise ApiError(404, f"no order {order_id!r} in the state", order_id=order_id)
    return json_bytes_response(found)


async def account(request: web.Request) -> web.Response:
    query_params(request)
    account_id = _path_id(request)
    found = await runtime_of(request).read_state("account", account_id) if _storable(account_id) else None
    if found is None:
        raise ApiError(404, f"no account {account_id!r} in the state", account_id=account_id)
    return json_bytes_response(found)


async def config(request: web.Request) -> web.Response:
    query_params(request)
    body = await runtime_of(request).read_state("config")
    assert body is not None
    return json_bytes_response(body)


async def lag(request: web.Request) -> web.Response:
    """The latest lag report, rendered at most once per :data:`~rewind.http_common.SHARED_SECONDS`."""
    query_params(request)
    runtime = runtime_of(request)
    service = runtime.service
    return json_bytes_response(await runtime.shared("lag", lambda: render(service.projector_lag())))


async def list_snapshots(request: web.Request) -> web.Response:
    query_params(request)
    runtime = runtime_of(request)
    return json_response({"snapshots": await runtime.call(runtime.service.snapshots)})


async def take_snapshot(request: web.Request) -> web.Response:
    _authorize(request)
    query_params(request)
    runtime = runtime_of(request)
    taken = await runtime.call(runtime.service.take_snapshot)
    runtime.forget_shared()
    return json_response({"snapshots": taken})


async def rebuild(request: web.Request) -> web.Response:
    _authorize(request)
    query_params(request)
    runtime = runtime_of(request)
    scheduled = await runtime.call(runtime.service.request_rebuild)
    runtime.forget_shared()
    return json_response(scheduled, 202)


async def reconcile(request: web.Request) -> web.Response:
    """Reconcile statement files of the drop folder, named (never paths) in the query."""
    _authorize(request)
    given = query_params(request, "positions", "balances", "orders", "as_of")
    runtime = runtime_of(request)
    try:
        report = await runtime.call(runtime.service.reconcile, given)
    except StatementNotFound as exc:
        raise BadParameter(exc.parameter, exc.what) from exc
    return json_response(report)


@functools.cache
def openapi_text() -> str:
    """The OpenAPI 3.1 description shipped with the package."""
    return resources.files("rewind").joinpath("openapi.yaml").read_text(encoding="utf-8")


async def openapi(request: web.Request) -> web.Response:
    query_params(request)
    return web.Response(text=openapi_text(), content_type=OPENAPI_CONTENT_TYPE)


ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", "/live", live),
    ("GET", "/health", health),
    ("GET", "/ready", ready),
    ("GET", "/recovery/status", recovery_status),
    ("GET", "/recovery/history", recovery_history),
    ("GET", "/cluster", cluster_status),
    ("GET", "/metrics", metrics),
    ("GET", "/state/positions", positions),
    ("GET", "/state/orders/{id}", order),
    ("GET", "/state/accounts/{id}", account),
    ("GET", "/config", config),
    ("GET", "/lag", lag),
    ("GET", "/snapshots", list_snapshots),
    ("POST", "/snapshots", take_snapshot),
    ("POST", "/rebuild", rebuild),
    ("POST", "/reconcile", reconcile),
    ("GET", "/openapi.yaml", openapi),
)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a JSON body; unexpected ones are logged and never leak details."""
    try:
        return await handler(request)
    except ApiError as exc:
        response = json_response(exc.body, exc.status, exc.headers)
        if exc.close:
            response.force_close()
        return response
    except web.HTTPMethodNotAllowed as exc:
        allowed = sorted(exc.allowed_methods)
        error = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
        return json_response({"error": error, "allowed": allowed}, 405, {"Allow": ", ".join(allowed)})
    except web.HTTPNotFound:
        return json_response({"error": f"no route {request.path} (see /openapi.yaml)"}, 404)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"error": exc.reason}, exc.status)
    except RewindError as exc:
        status = 409 if request.method == "POST" else 503
        return json_response({"error": exc.what, "fix": exc.fix}, status)
    except Exception:
        _log.exception("HTTP %s %s failed", request.method, request.path)
        return json_response({"error": "internal error; the service log has the details"}, 500)


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What every request must meet before any route sees it (unknown routes included): at most one
    Authorization header, no body over :data:`MAX_BODY_BYTES`, the read token when one is set."""
    _bearer(request)
    _check_body(request)
    _check_read_access(request)
    return await handler(request)


def create_app(service: ServiceView) -> web.Application:
    """The API over ``service``; its worker threads stop when the application is cleaned up."""
    app = hardened_app(Runtime(service))
    add_routes(app, ROUTES)
    console_routes.install(app)
    return app


def hardened_app(runtime: Runtime) -> web.Application:
    """An application with no routes yet and every guarantee of this module's routes: JSON errors,
    the Authorization, body and read-token checks; ``runtime`` is closed when it is cleaned up."""
    app = web.Application(middlewares=[_errors, _guard])
    app[RUNTIME] = runtime

    async def close(_app: web.Application) -> None:
        runtime.close()

    app.on_cleanup.append(close)
    return app


# Connections


def _refusal(exc: BaseException | None, request_line_too_long: bool) -> tuple[int, str, str]:
    """Status, error and fix for a request aiohttp's parser refused. The texts are fixed: nothing
    of the request (a token in a header, say) ever goes into the answer or the log."""
    if isinstance(exc, LineTooLong) and request_line_too_long:
        return (
            414,
            f"the request line is over {MAX_REQUEST_LINE_BYTES} bytes",
            f"identifiers are at most {MAX_IDENTIFIER_CHARS} characters; see /openapi.yaml",
        )
    if isinstance(exc, LineTooLong) or (
        isinstance(exc, HttpProcessingError) and exc.message == "Too many headers received"
    ):
        return (
            431,
            f"a request header is over {MAX_HEADER_BYTES} bytes, or there are over {MAX_HEADERS} of them",
            "send fewer and shorter headers",
        )
    if isinstance(exc, BadHttpMethod):
        return (
            400,
            "the request method is not one HTTP knows, or the request is not HTTP at all",
            "send GET, HEAD or POST over plain HTTP/1.1 (see /openapi.yaml)",
        )
    if isinstance(exc, BadStatusLine):
        return (
            400,
            "the request line is malformed",
            "send '<METHOD> <path> HTTP/1.1' (see /openapi.yaml)",
        )
    if isinstance(exc, InvalidURLError):
        return (
            400,
            "the request target holds bytes a URL cannot (a control byte, a space)",
            "percent-encode the path and the query",
        )
    return (
        400,
        "the request is malformed (a control byte in a header, a bad or repeated Content-Length, no Host...)",
        "send a valid HTTP/1.1 request",
    )


class _Connection(web.RequestHandler):
    """One client connection of :class:`_Server`: its request heads have a deadline, and the
    requests aiohttp's parser refuses are answered like every other error.

    It reads a few attributes of aiohttp's ``RequestHandler`` (the requests counted, whether it
    waits for the next request, the messages queued), as of aiohttp 3.14."""

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_line_ended = False
        self._long_request_lines: set[int] = set()
        """``id`` of each queued LineTooLong raised while the head's request line had not ended."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self._waiting_for_a_request()
        counted = self._request_count
        if waiting and self._head_timer is None:
            self._head_bytes, self._head_line_ended = 0, False
        if not self._head_line_ended:
            end = max(0, MAX_REQUEST_LINE_BYTES - self._head_bytes)
            self._head_line_ended = data.find(b"\n", 0, end) >= 0
        self._head_bytes += len(data)
        request_line_too_long = not self._head_line_ended
        super().data_received(data)
        if self._request_count != counted:
            self._stop_head_timer()
            self._head_bytes, self._head_line_ended = 0, False
            if self._messages and request_line_too_long:
                failure = getattr(self._messages[-1][0], "exc", None)
                if isinstance(failure, LineTooLong):
                    self._long_request_lines.add(id(failure))
        elif data and self._head_timer is None and (waiting or counted == 0):
            self._start_head_timer()

    def _waiting_for_a_request(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def _start_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._waiting_for_a_request():
            return
        level = logging.INFO if self._head_bytes else logging.DEBUG
        _log.log(
            level,
            "closed an HTTP connection from %s: no whole request line and headers within %g s "
            "(http.header_timeout_seconds)",
            self._peer(),
            self._head_timeout,
        )
        self.force_close()

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "an unknown peer"

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A refused or failed request as JSON (aiohttp answers text, with the parser's message)."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response is already partly sent; closing the connection")
        if isinstance(exc, HttpProcessingError):
            long_line = id(exc) in self._long_request_lines
            self._long_request_lines.discard(id(exc))
            status, error, fix = _refusal(exc, long_line)
            _log.info("refused an HTTP request from %s (%d): %s", self._peer(), status, error)
            body: dict[str, object] = {"error": error, "fix": fix}
        else:
            _log.error("HTTP request from %s failed (%d)", self._peer(), status, exc_info=exc)
            body = {"error": "internal error; the service log has the details"}
        response = json_response(body, status)
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server, with a :class:`_Connection` for each client."""

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    """aiohttp's application runner, serving through :class:`_Server`."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,
        )


def _loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback one (127.0.0.0/8, ::1)."""
    if not host:
        return False
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in found}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


class HttpServer:
    """An application served on a thread with its own event loop; :meth:`stop` ends both."""

    def __init__(
        self, thread: threading.Thread, loop: asyncio.AbstractEventLoop, host: str, port: int
    ) -> None:
        self._thread = thread
        self._loop = loop
        self._stop = asyncio.Event()
        self.host = host
        self.port = port
        """The bound port (the one the OS picked when asked for port 0)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to a few seconds), join the thread.
        Safe to call more than once."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)


def _check_exposure(settings: Settings, host: str) -> None:
    if not str(settings["http.read_token"]) and not _loopback(host):
        raise ConfigError(
            f"http.host {host or '(every address)'} is not a loopback address, and no http.read_token "
            "is set: anyone who can reach it could read the state",
            "set http.read_token (REWIND_HTTP_READ_TOKEN) to a secret that readers send as "
            "'Authorization: Bearer <token>', or set http.host to 127.0.0.1",
        )


def _cannot_bind(host: str, port: int, exc: OSError) -> RewindError:
    return RewindError(
        f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}",
        "set http.port (REWIND_HTTP_PORT) to a free port, 0 for any, or stop what listens there",
    )


def listen_socket(settings: Settings, host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, for :func:`serve_http`'s ``listen`` (in
    this process or another one it is passed to). Refuses what :func:`serve_http` refuses, with the
    same errors."""
    _check_exposure(settings, host)
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = min(found, key=lambda info: info[0] != socket.AF_INET)
        listener = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _cannot_bind(host, port, exc) from exc
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise _cannot_bind(host, port, exc) from exc
    return listener


def serve_http(
    app: web.Application, host: str, port: int, *, listen: socket.socket | None = None
) -> HttpServer:
    """Serve ``app`` (from :func:`create_app`) on ``host:port`` from a new daemon thread; returns
    once it is listening. The service's ``http.header_timeout_seconds`` and
    ``http.keepalive_seconds`` are read here, once. With ``listen`` (a listening TCP or Unix socket,
    from :func:`listen_socket` or bound by the caller), it serves that socket; ``host`` and ``port``
    then only name it, and the socket is the caller's to check.

    Raises :class:`ConfigError` when ``host`` is not a loopback address and ``http.read_token`` is
    empty, and :class:`RewindError` when the address cannot be bound (port taken, unknown host).
    """
    settings = app[RUNTIME].service.settings()
    if listen is None:
        _check_exposure(settings, host)
    loop = asyncio.new_event_loop()
    started: Future[HttpServer] = Future()

    async def run() -> None:
        runner = _Runner(
            app,
            shutdown_timeout=SHUTDOWN_SECONDS,
            header_timeout=float(settings["http.header_timeout_seconds"]),
            keepalive_timeout=float(settings["http.keepalive_seconds"]),
            max_line_size=MAX_REQUEST_LINE_BYTES,
            max_field_size=MAX_HEADER_BYTES,
            max_headers=MAX_HEADERS,
        )
        await runner.setup()
        try:
            if listen is None:
                await web.TCPSite(runner, host, port).start()
                bound = int(runner.addresses[0][1])
            else:
                await web.SockSite(runner, listen).start()
                bound = int(listen.getsockname()[1]) if listen.family != socket.AF_UNIX else port
            server = HttpServer(threading.current_thread(), loop, host, bound)
            started.set_result(server)
            await server._stop.wait()
        finally:
            await runner.cleanup()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(run())
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            else:
                _log.exception("the HTTP server stopped with an error")
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="rewind-http", daemon=True)
    thread.start()
    try:
        return started.result()
    except OSError as exc:
        raise _cannot_bind(host, port, exc) from exc
