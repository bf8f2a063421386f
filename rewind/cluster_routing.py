"""Any member of a cluster answers any state query, and never with another member's stale copy.

A member's store of a partition it does not own may be far behind (it is what was left when the
partition moved away), so a member serves state only from the partitions its own consumer holds now,
only once the store has applied all the log held when the partition arrived
(:meth:`ClusterMember.serving`), and only when the partition was held the whole time the read took.
Otherwise:

- a query about one account (``/state/accounts/{id}``, ``/state/positions?account=``) goes to the
  account's partition (the producers' partitioner) and is answered with ``307`` and the owner's URL
  (from the group's description); while the partition has no owner (it is moving), or the description
  is not yet fresh, ``503`` with ``Retry-After``;
- a query that spans partitions (``/state/positions`` without an account) is asked of every member
  (``X-Rewind-Cluster-Part: 1``: "answer from what you own") and the parts are merged, once together
  they cover every partition; otherwise ``503``;
- an order (``/state/orders/{id}``), whose account is not in the request, is looked for here and then
  at every other member the same way: found at its owner, or ``404`` once every partition's owner was
  asked; otherwise ``503``.

``GET /cluster`` reports the member and the group (:meth:`ClusterMember.status`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
from aiohttp import web

from rewind.cluster_membership import ClusterMember
from rewind.ground.partitioner import partition_for_key
from rewind.http_common import ApiError

CLUSTER: Final = web.AppKey("cluster", ClusterMember)
PART_HEADER: Final = "X-Rewind-Cluster-Part"
"""Asked of a member by another: answer only from the partitions you own, and say which."""
PARTITIONS_HEADER: Final = "X-Rewind-Partitions"
"""The partitions a part answer covers, comma-separated."""
RETRY_AFTER_SECONDS: Final = "1"
PEER_TIMEOUT_SECONDS: Final = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install_cluster_routes(app: web.Application, member: ClusterMember) -> None:
    """Make ``app`` a cluster member's (before it starts): ``GET /cluster`` describes the group, and
    state queries are routed to the partitions' owners."""
    app[CLUSTER] = member
    app.middlewares.append(_route_state)


async def cluster_status(request: web.Request) -> web.Response:
    """``GET /cluster``: this member and its group; ``{"enabled": false}`` for a service alone."""
    member = request.app.get(CLUSTER)
    return web.json_response({"enabled": False} if member is None else member.status())


def _moving(why: str, partition: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error": why, "fix": f"retry in {RETRY_AFTER_SECONDS} s"}
    if partition is not None:
        body["partition"] = partition
    return web.json_response(body, status=503, headers={"Retry-After": RETRY_AFTER_SECONDS})


def account_partition(member: ClusterMember, account: str) -> int:
    partitioner = str(member.settings.client_config().get("partitioner", "consistent_random"))
    return partition_for_key(account, member.partition_count, partitioner)


@web.middleware
async def _route_state(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD") or not request.path.startswith("/state/"):
        return await handler(request)
    member = request.app[CLUSTER]
    if not member.partition_count:
        return _moving("this member has not joined the cluster yet")
    part = request.headers.get(PART_HEADER) == "1"
    account = request.match_info.get("id") if request.path.startswith("/state/accounts/") else None
    if request.path == "/state/positions":
        account = request.query.get("account")
    if account:
        return await _one_partition(request, handler, member, account_partition(member, account), part)
    if request.path.startswith("/state/orders/"):
        return await _order(request, handler, member, part)
    return await _gathered_positions(request, handler, member, part)


async def _held_while(
    request: web.Request, handler: Handler, member: ClusterMember
) -> tuple[web.StreamResponse, set[int]]:
    """The local answer and the partitions this member held before and after it was read."""
    before = member.ownership()
    try:
        response: web.StreamResponse = await handler(request)
    except ApiError as exc:  # not found here: an answer like any other, judged below
        response = web.json_response(exc.body, status=exc.status, headers=exc.headers)
    after = member.ownership()
    held = set(before[1]) & set(after[1]) if before[0] == after[0] else set()
    return response, held


async def _one_partition(
    request: web.Request, handler: Handler, member: ClusterMember, partition: int, part: bool
) -> web.StreamResponse:
    if partition in member.owned():
        if partition not in member.serving():
            return _moving(f"partition {partition} is catching up after it moved here", partition)
        response, held = await _held_while(request, handler, member)
        if partition in held:
            response.headers[PARTITIONS_HEADER] = str(partition)
            return response
        return _moving("the partition moved while it was read", partition)
    if part:
        return _moving("not the owner", partition)
    view = member.view
    owner = None if view is None else view.owner(partition)
    if owner is None or owner.url is None or owner.url == member.url:
        return _moving(f"partition {partition} is moving between members", partition)
    location = owner.url + request.path_qs
    return web.json_response(
        {"partition": partition, "owner": owner.url},
        status=307,
        headers={"Location": location, "Cache-Control": "no-store"},
    )


def _body_of(response: web.StreamResponse) -> Any:
    if not isinstance(response, web.Response) or response.body is None:
        return None
    raw = response.body
    return json.loads(bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw))


async def _ask_peers(request: web.Request, member: ClusterMember) -> list[tuple[int, Any, set[int]]]:
    """Every other member's part answer: (status, body, partitions covered)."""
    view = member.view
    urls = [] if view is None else [m.url for m in view.members if m.url and m.url != member.url]
    headers = {PART_HEADER: "1"}
    auth = request.headers.get("Authorization")
    if auth:
        headers["Authorization"] = auth
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_SECONDS)

    async def ask(session: aiohttp.ClientSession, url: str) -> tuple[int, Any, set[int]]:
        try:
            async with session.get(url + request.path_qs, headers=headers, allow_redirects=False) as answer:
                body = await answer.json(content_type=None)
                covered = answer.headers.get(PARTITIONS_HEADER, "")
                return answer.status, body, {int(p) for p in covered.split(",") if p}
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 0, None, set()

    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(ask(session, url) for url in urls)))


def _owned_rows(member: ClusterMember, rows: list[dict[str, Any]], held: set[int]) -> list[dict[str, Any]]:
    return [row for row in rows if account_partition(member, str(row["account_id"])) in held]


async def _gathered_positions(
    request: web.Request, handler: Handler, member: ClusterMember, part: bool
) -> web.StreamResponse:
    response, held = await _held_while(request, handler, member)
    body = _body_of(response)
    if response.status != 200 or not isinstance(body, dict):
        return response
    rows = _owned_rows(member, list(body["positions"]), held)
    if part:
        return web.json_response(
            {"positions": rows}, headers={PARTITIONS_HEADER: ",".join(map(str, sorted(held)))}
        )
    covered = set(held)
    for status, answer, partitions in await _ask_peers(request, member):
        if status == 200 and isinstance(answer, dict):
            rows += answer["positions"]
            covered |= partitions
    missing = sorted(set(range(member.partition_count)) - covered)
    if missing:
        return _moving(f"partitions {missing} are moving between members")
    rows.sort(key=lambda row: (str(row["account_id"]), str(row["symbol"])))
    return web.json_response({"positions": rows})


async def _order(
    request: web.Request, handler: Handler, member: ClusterMember, part: bool
) -> web.StreamResponse:
    response, held = await _held_while(request, handler, member)
    body = _body_of(response)
    covering = ",".join(map(str, sorted(held)))
    if response.status == 200 and isinstance(body, dict):
        if account_partition(member, str(body["account_id"])) in held:
            response.headers[PARTITIONS_HEADER] = covering
            return response
    elif response.status != 404:
        return response
    if part:
        return web.json_response(
            {"error": "not in the partitions this member owns"},
            status=404,
            headers={PARTITIONS_HEADER: covering},
        )
    covered = set(held)
    for status, answer, partitions in await _ask_peers(request, member):
        if status == 200:
            return web.json_response(answer)
        covered |= partitions
    if set(range(member.partition_count)) <= covered:
        order_id = request.match_info.get("id", "")
        return web.json_response(
            {"error": f"no order {order_id!r} in the state", "order_id": order_id}, status=404
        )
    return _moving("some partitions are moving between members; the order may be in one of them")
