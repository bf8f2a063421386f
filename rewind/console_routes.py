"""The web console's routes: its page and assets, and the read-only routes only it needed so far.

``GET /`` is the console (``rewind/console/index.html``), ``GET /console/{asset}`` its script, style
sheet and icon, all written by hand and shipped in the package: nothing is fetched from elsewhere.
The API routes it adds are ``GET /state/anomalies`` and ``GET /dead-letters`` (newest first),
``GET /reconcile`` (the last reconciliation) and ``GET /reconcile/statements`` (the drop folder's
statement names, what ``POST /reconcile`` takes), and the console's jobs
(:mod:`rewind.console_jobs`): ``POST /timetravel`` and ``POST /history`` start one,
``GET /timetravel/{id}`` and ``GET /history/{id}`` follow it.

Guarantees:

* The page and its assets need no token (they hold no state: the page asks for the token and sends
  it with every call), and are served with :data:`CSP`: scripts, styles, images and calls only from
  this origin, no inline script or style, no framing, no form posts.
* ``GET /reconcile`` and ``GET /reconcile/statements`` only read (the report kept in memory, the
  folder's listing: names, sizes, times, never contents); they need the read token when one is set.
* The job routes only read: a time travel builds into a temporary directory of its own, a history
  replays in memory; they need the read token when one is set, like every state read. At most
  :data:`rewind.console_jobs.RUNNING_MAX` jobs run at once; another is a 429 with a fix.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Final

from aiohttp import web

from replayer.timetravel import parse_time
from rewind.console_jobs import Job, Jobs, JobsBusy
from rewind.dead_letter_tail import dead_letters
from rewind.ground.errors import RewindError
from rewind.http_common import (
    ApiError,
    BadParameter,
    add_routes,
    json_bytes_response,
    json_response,
    query_params,
    runtime_of,
)
from rewind.service_reconcile import drop_dir, statements

__all__ = ["ASSETS", "CSP", "JOBS", "install"]

ASSETS: Final = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "icon.svg": "image/svg+xml",
}
"""Every file ``/console/{asset}`` serves, with its content type."""
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SHOWN_MAX: Final = 200
"""Anomalies and dead letters listed (newest first); the totals stay exact."""
_POINTS: Final = re.compile(r"^\s*(\d+|config)\s*:\s*\d+\s*(,\s*(\d+|config)\s*:\s*\d+\s*)*$")

JOBS: Final = web.AppKey("rewind_console_jobs", Jobs)


@functools.cache
def _asset(name: str) -> bytes:
    return resources.files("rewind").joinpath("console", name).read_bytes()


def _page(body: bytes, content_type: str) -> web.Response:
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8" if not content_type.startswith("image/") else None,
        headers={
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


async def index(request: web.Request) -> web.Response:
    query_params(request)
    return _page(_asset("index.html"), "text/html")


async def asset(request: web.Request) -> web.Response:
    query_params(request)
    name = request.match_info["asset"]
    if name not in ASSETS:
        served = ", ".join(sorted(ASSETS))
        raise ApiError(404, f"no console asset {name!r}", fix=f"the console serves {served}")
    return _page(_asset(name), ASSETS[name])


async def anomalies(request: web.Request) -> web.Response:
    query_params(request)
    body = await runtime_of(request).read_state("anomalies", str(SHOWN_MAX))
    if body is None:
        raise ApiError(503, "the anomalies could not be read")
    return json_bytes_response(body)


async def dead_letter_list(request: web.Request) -> web.Response:
    query_params(request)
    runtime = runtime_of(request)
    return json_response(await runtime.call(dead_letters, runtime.service.settings(), SHOWN_MAX))


async def last_reconciliation(request: web.Request) -> web.Response:
    query_params(request)
    runtime = runtime_of(request)
    return json_response({"last": await runtime.call(runtime.service.last_reconciliation)})


async def statement_list(request: web.Request) -> web.Response:
    query_params(request)
    runtime = runtime_of(request)
    folder = drop_dir(runtime.service.settings())
    return json_response({"drop_dir": str(folder), "statements": await runtime.call(statements, folder)})


def _start(request: web.Request, kind: str, given: dict[str, str]) -> web.Response:
    try:
        job = request.app[JOBS].start(runtime_of(request).service.settings(), kind, given)
    except JobsBusy as exc:
        raise ApiError(429, exc.what, fix=exc.fix) from exc
    return json_response(job.document(), 202, {"Location": f"/{kind}/{job.id}"})


async def start_time_travel(request: web.Request) -> web.Response:
    given = query_params(request, "at", "to")
    if ("at" in given) == ("to" in given):
        raise BadParameter("at", "give exactly one of at=TIME (ISO-8601) or to=PARTITION:OFFSET,...")
    if "at" in given:
        try:
            parse_time(given["at"])
        except RewindError as exc:
            raise BadParameter("at", exc.what) from exc
    if "to" in given and not _POINTS.match(given["to"]):
        raise BadParameter("to", "to must be PARTITION:OFFSET[,PARTITION:OFFSET...], e.g. 0:1200,config:40")
    return _start(request, "timetravel", given)


async def start_history(request: web.Request) -> web.Response:
    given = query_params(request, "order", "account", "symbol", "from", "to")
    if ("order" in given) == ("account" in given):
        raise BadParameter("order", "give exactly one of order=ID or account=ID")
    if "symbol" in given and "account" not in given:
        raise BadParameter("symbol", "symbol narrows an account's history: give account too")
    for name in ("from", "to"):
        if name in given:
            try:
                parse_time(given[name])
            except RewindError as exc:
                raise BadParameter(name, exc.what) from exc
    return _start(request, "history", given)


def _job(request: web.Request, kind: str) -> Job:
    query_params(request)
    job_id = request.match_info["id"]
    job = request.app[JOBS].get(job_id, kind)
    if job is None:
        raise ApiError(
            404,
            f"no {kind} job {job_id!r}",
            fix=f"start one with POST /{kind}; finished jobs are kept a while",
        )
    return job


async def time_travel_job(request: web.Request) -> web.Response:
    return json_response(_job(request, "timetravel").document())


async def history_job(request: web.Request) -> web.Response:
    return json_response(_job(request, "history").document())


ROUTES: Final = (
    ("GET", "/", index),
    ("GET", "/console/{asset}", asset),
    ("GET", "/state/anomalies", anomalies),
    ("GET", "/dead-letters", dead_letter_list),
    ("GET", "/reconcile", last_reconciliation),
    ("GET", "/reconcile/statements", statement_list),
    ("POST", "/timetravel", start_time_travel),
    ("GET", "/timetravel/{id}", time_travel_job),
    ("POST", "/history", start_history),
    ("GET", "/history/{id}", history_job),
)


def install(app: web.Application) -> None:
    """Add the console's routes to ``app`` (called by :func:`rewind.http_api.create_app`); its jobs
    are stopped when the application is cleaned up."""
    jobs = Jobs()
    app[JOBS] = jobs

    async def close(_app: web.Application) -> None:
        jobs.close()

    app.on_cleanup.append(close)
    add_routes(app, ROUTES)
