"""The HTTP API: health, readiness, recovery, metrics, read-only state, lag, snapshots and rebuilds.

:func:`create_app` builds an aiohttp application over a :class:`rewind.service_view.ServiceView`;
:func:`serve_http` runs it on a thread of its own so the service's main thread stays with the
projector. ``rewind/openapi.yaml`` describes every route and is served at ``/openapi.yaml``.

Guarantees:

* Every response except ``/metrics`` (Prometheus text) and ``/openapi.yaml`` is JSON, errors included:
  ``{"error": ...}`` plus ``"parameter"`` on a 400 and ``"fix"`` when there is one.
* Bad input never reaches the state: an unknown or repeated query parameter, or an account, symbol or
  id that is empty, contains NUL or is longer than :data:`projector.encoding.MAX_KEY_PART_BYTES`
  UTF-8 bytes (what the fold accepts as a key) is a 400 naming the parameter.
* Mutating calls (``POST /snapshots``, ``POST /rebuild``) need ``Authorization: Bearer <http.token>``:
  401 without credentials, 403 with wrong ones, and 403 for everyone while no token is configured.
* The event loop never waits on LMDB or the service: state reads run on one worker thread (so a
  :class:`~projector.state_directory.StateDirectory` is never used by two threads at once), the other
  service calls and the metrics exposition on a small pool. Only the accessors ``settings()``,
  ``health_checks()`` and ``metrics_registry()`` are called on the loop itself.
* ``/health`` answers 200 while every check of ``health_checks()`` passes, 503 naming the failing
  ones otherwise (``broker``: the Kafka brokers have not answered for ``broker.lost_after_seconds``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from typing import Any, Final, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from projector import queries, views
from projector.encoding import MAX_KEY_PART_BYTES
from projector.risk_view import risk_rows
from projector.state_directory import StateDirectory
from rewind.ground.errors import RewindError
from rewind.service_view import ServiceView

__all__ = ["HttpServer", "create_app", "serve_http"]

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SHUTDOWN_SECONDS: Final = 5.0
OPENAPI_CONTENT_TYPE: Final = "application/yaml"

_log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the API refuses, turned into a JSON response by the error middleware."""

    def __init__(
        self, status: int, error: str, *, headers: dict[str, str] | None = None, **fields: object
    ) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, object] = {"error": error, **fields}
        self.headers = headers or {}


class BadParameter(ApiError):
    """A query or path parameter is missing its contract; the 400 names it."""

    def __init__(self, parameter: str, error: str) -> None:
        super().__init__(400, error, parameter=parameter)


class _Runtime:
    """The service and the worker threads of one application."""

    def __init__(self, service: ServiceView) -> None:
        self.service = service
        self.state_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rewind-http-state")
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rewind-http")

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run a (possibly slow) service call off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(func, *args))

    async def read_state(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(state_directory, *args)`` on the state worker thread."""

        def read() -> T:
            return func(self.service.state_directory(), *args)

        return await asyncio.get_running_loop().run_in_executor(self.state_pool, read)

    def close(self) -> None:
        self.state_pool.shutdown(wait=False, cancel_futures=True)
        self.pool.shutdown(wait=False, cancel_futures=True)


RUNTIME: Final = web.AppKey("rewind_runtime", _Runtime)


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = json.dumps(body, allow_nan=False, ensure_ascii=False)
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def _runtime(request: web.Request) -> _Runtime:
    return request.app[RUNTIME]


# Parameters


def _identifier(name: str, value: str) -> str:
    if not value:
        raise BadParameter(name, f"{name} must not be empty")
    if "\x00" in value:
        raise BadParameter(name, f"{name} must not contain NUL")
    if len(value.encode()) > MAX_KEY_PART_BYTES:
        raise BadParameter(name, f"{name} must be at most {MAX_KEY_PART_BYTES} UTF-8 bytes")
    return value


def _query(request: web.Request, *allowed: str) -> dict[str, str]:
    """The route's identifier query parameters that were given; anything else is a 400."""
    for name in request.query:
        if name not in allowed:
            takes = ", ".join(allowed) if allowed else "no query parameters"
            raise BadParameter(name, f"unknown query parameter {name!r} (this route takes: {takes})")
    found: dict[str, str] = {}
    for name in allowed:
        values = request.query.getall(name, [])
        if len(values) > 1:
            raise BadParameter(name, f"{name} given {len(values)} times; give it at most once")
        if values:
            found[name] = _identifier(name, values[0])
    return found


def _path_id(request: web.Request) -> str:
    return _identifier("id", request.match_info["id"])


# Authorization


def _authorize(request: web.Request) -> None:
    token = str(_runtime(request).service.settings()["http.token"])
    if not token:
        raise ApiError(
            403,
            "mutating calls are disabled because no API token is configured",
            fix="set http.token (REWIND_HTTP_TOKEN) and send 'Authorization: Bearer <token>'",
        )
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "this call needs 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="rewind"'},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(
            403,
            "the bearer token is not the configured http.token",
            headers={"WWW-Authenticate": 'Bearer realm="rewind", error="invalid_token"'},
        )


# State reads (on the state worker thread)


def _positions(directory: StateDirectory, account: str | None, symbol: str | None) -> dict[str, Any]:
    return {"positions": [views.to_dict(p) for p in queries.positions(directory, account, symbol)]}


def _order(directory: StateDirectory, order_id: str) -> dict[str, Any] | None:
    found = queries.order(directory, order_id)
    return None if found is None else views.to_dict(found)


def _account(directory: StateDirectory, account: str) -> dict[str, Any] | None:
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


def _config(directory: StateDirectory) -> dict[str, Any]:
    return {"config": [views.to_dict(c) for c in queries.config_entries(directory)]}


# Handlers


async def health(request: web.Request) -> web.Response:
    """200 ``{"status": "ok", "checks": ...}`` while every check passes; 503 with ``"status":
    "failing"`` and the names of the failing checks otherwise. Answered on the event loop itself."""
    _query(request)
    checks = _runtime(request).service.health_checks()
    failing = sorted(name for name, check in checks.items() if not check.get("ok"))
    if not failing:
        return _json({"status": "ok", "checks": checks})
    return _json({"status": "failing", "failing": failing, "checks": checks}, 503)


async def ready(request: web.Request) -> web.Response:
    _query(request)
    runtime = _runtime(request)
    limit = float(runtime.service.settings()["lag.ready_max_seconds"])
    recovered = await runtime.call(runtime.service.recovered)
    lag = await runtime.call(runtime.service.lag_seconds_max)
    checks = runtime.service.health_checks()
    reasons = []
    for name, check in sorted(checks.items()):
        if not check.get("ok"):
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
    return _json(body, 200 if not reasons else 503)


async def recovery_status(request: web.Request) -> web.Response:
    _query(request)
    runtime = _runtime(request)
    return _json(await runtime.call(runtime.service.recovery_status))


async def metrics(request: web.Request) -> web.Response:
    _query(request)
    runtime = _runtime(request)
    registry = runtime.service.metrics_registry()
    body = await runtime.call(generate_latest, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def positions(request: web.Request) -> web.Response:
    given = _query(request, "account", "symbol")
    runtime = _runtime(request)
    return _json(await runtime.read_state(_positions, given.get("account"), given.get("symbol")))


async def order(request: web.Request) -> web.Response:
    _query(request)
    order_id = _path_id(request)
    found = await _runtime(request).read_state(_order, order_id)
    if found is None:
        raise ApiError(404, f"no order {order_id!r} in the state", order_id=order_id)
    return _json(found)


async def account(request: web.Request) -> web.Response:
    _query(request)
    account_id = _path_id(request)
    found = await _runtime(request).read_state(_account, account_id)
    if found is None:
        raise ApiError(404, f"no account {account_id!r} in the state", account_id=account_id)
    return _json(found)


async def config(request: web.Request) -> web.Response:
    _query(request)
    return _json(await _runtime(request).read_state(_config))


async def lag(request: web.Request) -> web.Response:
    _query(request)
    runtime = _runtime(request)
    return _json(await runtime.call(runtime.service.projector_lag))


async def list_snapshots(request: web.Request) -> web.Response:
    _query(request)
    runtime = _runtime(request)
    return _json({"snapshots": await runtime.call(runtime.service.snapshots)})


async def take_snapshot(request: web.Request) -> web.Response:
    _authorize(request)
    _query(request)
    runtime = _runtime(request)
    return _json({"snapshots": await runtime.call(runtime.service.take_snapshot)})


async def rebuild(request: web.Request) -> web.Response:
    _authorize(request)
    _query(request)
    runtime = _runtime(request)
    return _json(await runtime.call(runtime.service.request_rebuild), 202)


@functools.cache
def openapi_text() -> str:
    """The OpenAPI 3.1 description shipped with the package."""
    return resources.files("rewind").joinpath("openapi.yaml").read_text(encoding="utf-8")


async def openapi(request: web.Request) -> web.Response:
    _query(request)
    return web.Response(text=openapi_text(), content_type=OPENAPI_CONTENT_TYPE)


ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", "/health", health),
    ("GET", "/ready", ready),
    ("GET", "/recovery/status", recovery_status),
    ("GET", "/metrics", metrics),
    ("GET", "/state/positions", positions),
    ("GET", "/state/orders/{id}", order),
    ("GET", "/state/accounts/{id}", account),
    ("GET", "/config", config),
    ("GET", "/lag", lag),
    ("GET", "/snapshots", list_snapshots),
    ("POST", "/snapshots", take_snapshot),
    ("POST", "/rebuild", rebuild),
    ("GET", "/openapi.yaml", openapi),
)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a JSON body; unexpected ones are logged and never leak details."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _json(exc.body, exc.status, exc.headers)
    except web.HTTPMethodNotAllowed as exc:
        allowed = sorted(exc.allowed_methods)
        error = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
        return _json({"error": error, "allowed": allowed}, 405, {"Allow": ", ".join(allowed)})
    except web.HTTPNotFound:
        return _json({"error": f"no route {request.path} (see /openapi.yaml)"}, 404)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"error": exc.reason}, exc.status)
    except RewindError as exc:
        status = 409 if request.method == "POST" else 503
        return _json({"error": exc.what, "fix": exc.fix}, status)
    except Exception:
        _log.exception("HTTP %s %s failed", request.method, request.path)
        return _json({"error": "internal error; the service log has the details"}, 500)


def create_app(service: ServiceView) -> web.Application:
    """The API over ``service``; its worker threads stop when the application is cleaned up."""
    app = web.Application(middlewares=[_errors])
    runtime = _Runtime(service)
    app[RUNTIME] = runtime

    async def close(_app: web.Application) -> None:
        runtime.close()

    app.on_cleanup.append(close)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app


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


def serve_http(app: web.Application, host: str, port: int) -> HttpServer:
    """Serve ``app`` on ``host:port`` from a new daemon thread; returns once it is listening.

    Raises :class:`RewindError` when the address cannot be bound (port taken, unknown host).
    """
    loop = asyncio.new_event_loop()
    started: Future[HttpServer] = Future()

    async def run() -> None:
        runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_SECONDS)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            server = HttpServer(threading.current_thread(), loop, host, int(runner.addresses[0][1]))
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
        raise RewindError(
            f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}",
            "set http.port (REWIND_HTTP_PORT) to a free port, 0 for any, or stop what listens there",
        ) from exc
