"""What every route of the HTTP API shares: its errors, its runtime (worker threads, state readers,
shared answers) and how a request's query is read and a JSON answer written.

:mod:`rewind.http_api` (the service's routes, the server) and :mod:`rewind.console_routes` (the
console's routes) both build on this module, so neither reaches into the other's private names.

Guarantees: an :class:`ApiError` raised by a handler becomes a JSON answer with its status (the
error middleware of :func:`rewind.http_api.create_app` does it); :func:`query_params` refuses any
parameter the route does not take, a repeated one, and an identifier that is empty, holds NUL or is
over :data:`MAX_IDENTIFIER_CHARS` characters, each with a 400 naming the parameter.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from aiohttp import web

from projector.encoding import MAX_KEY_PART_BYTES
from rewind.service_view import ServiceView
from rewind.state_readers import DOCUMENTS, StateReaders, render

__all__ = [
    "MAX_IDENTIFIER_CHARS",
    "RUNTIME",
    "SHARED_SECONDS",
    "ApiError",
    "BadParameter",
    "Runtime",
    "identifier",
    "json_bytes_response",
    "json_response",
    "query_params",
    "runtime_of",
]

T = TypeVar("T")

MAX_IDENTIFIER_CHARS: Final = MAX_KEY_PART_BYTES
"""Longest account, symbol or id a request may name, in characters."""
SHARED_SECONDS: Final = 1.0
"""``/metrics`` and ``/lag`` are the same for every client: each is rendered at most once in this
many seconds and that answer given to every request meanwhile (``POST /snapshots`` and ``POST
/rebuild`` drop it). The lag report itself changes every 5 s, Prometheus scrapes every 5 s."""


class ApiError(Exception):
    """A request the API refuses, turned into a JSON response by the error middleware."""

    def __init__(
        self,
        status: int,
        error: str,
        *,
        headers: dict[str, str] | None = None,
        close: bool = False,
        **fields: object,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, object] = {"error": error, **fields}
        self.headers = headers or {}
        self.close = close
        """Close the connection after the response (the request's body is not read)."""


class BadParameter(ApiError):
    """A query or path parameter is missing its contract; the 400 names it."""

    def __init__(self, parameter: str, error: str) -> None:
        super().__init__(400, error, parameter=parameter)


class Runtime:
    """The service, the worker threads and the state readers of one application."""

    def __init__(self, service: ServiceView) -> None:
        self.service = service
        size = int(service.settings()["http.readers"])
        self.readers = StateReaders(size) if size else None
        self.state_pool = ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix="rewind-http-state")
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rewind-http")
        self._shared: dict[str, tuple[float, asyncio.Future[bytes]]] = {}

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run a (possibly slow) service call off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(func, *args))

    async def read_state(self, route: str, *args: str | None) -> bytes | None:
        """The JSON body of the state document ``route`` (:data:`rewind.state_readers.DOCUMENTS`), or
        None when it found nothing: built by a reader process with ``http.readers`` above 0 (this
        thread only hands the request over), else here on the one state worker thread."""
        readers, service = self.readers, self.service

        def read() -> bytes | None:
            directory = service.state_directory()
            if readers is not None:
                return readers.read(directory, route, *args)
            document = DOCUMENTS[route](directory, *args)
            return None if document is None else render(document)

        return await asyncio.get_running_loop().run_in_executor(self.state_pool, read)

    async def shared(self, key: str, produce: Callable[[], bytes]) -> bytes:
        """``produce()``'s bytes, made at most once per :data:`SHARED_SECONDS` for every request
        that asks meanwhile (a failure is not kept: the next request tries again)."""
        loop = asyncio.get_running_loop()
        kept = self._shared.get(key)
        if (
            kept is None
            or loop.time() - kept[0] >= SHARED_SECONDS
            or (kept[1].done() and (kept[1].cancelled() or kept[1].exception() is not None))
        ):
            kept = (loop.time(), loop.run_in_executor(self.pool, produce))
            self._shared[key] = kept
        return await asyncio.shield(kept[1])

    def forget_shared(self) -> None:
        """Drop the kept answers: a mutating call changed what they report."""
        self._shared.clear()

    def close(self) -> None:
        self.state_pool.shutdown(wait=False, cancel_futures=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.readers is not None:
            self.readers.close()


RUNTIME: Final = web.AppKey("rewind_runtime", Runtime)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = json.dumps(body, allow_nan=False, ensure_ascii=False)
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def json_bytes_response(body: bytes) -> web.Response:
    """A 200 with a JSON body already rendered (:func:`rewind.state_readers.render`): the same
    headers as :func:`json_response`."""
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def runtime_of(request: web.Request) -> Runtime:
    """The :class:`Runtime` of the request's application."""
    return request.app[RUNTIME]


def identifier(name: str, value: str) -> str:
    """``value`` when it is a usable identifier (not empty, no NUL, at most
    :data:`MAX_IDENTIFIER_CHARS` characters); a 400 naming ``name`` otherwise."""
    if not value:
        raise BadParameter(name, f"{name} must not be empty")
    if "\x00" in value:
        raise BadParameter(name, f"{name} must not contain NUL")
    if len(value) > MAX_IDENTIFIER_CHARS:
        raise BadParameter(name, f"{name} must be at most {MAX_IDENTIFIER_CHARS} characters")
    return value


def query_params(request: web.Request, *allowed: str) -> dict[str, str]:
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
            found[name] = identifier(name, values[0])
    return found


def add_routes(app: web.Application, routes: Iterable[tuple[str, str, Any]]) -> None:
    """Add each ``(method, path, handler)`` to ``app``, and HEAD beside every GET (RFC 9110: a server
    that answers GET answers HEAD with the same status and headers)."""
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        if method == "GET":
            app.router.add_route("HEAD", path, handler)
