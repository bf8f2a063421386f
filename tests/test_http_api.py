"""The HTTP API over real LMDB state: built by the real fold, served on a real socket on 127.0.0.1.

No Kafka: a test :class:`ServiceView` stands in for the service. Every JSON response any test gets
is also checked against ``rewind/openapi.yaml``, so the description stays true.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from projector.lmdb_state import LmdbConfigState, LmdbPartitionState
from projector.metrics import ProjectorMetrics
from projector.policy import QUARANTINE, ConfigStep, EventsStep, PolicyStep
from projector.state_directory import StateDirectory
from projector.store import PartitionStore
from replayer.recovery_tracker import RecoveryTracker
from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings, load_settings
from rewind.http_api import (
    HEALTH_ONLY_CHECKS,
    OPEN_PATHS,
    HttpServer,
    create_app,
    is_console_page,
    openapi_text,
    serve_http,
)
from rewind.lag import LagReport, PartitionLag, Status
from rewind.service_metrics import ServiceMetrics
from rewind.service_view import ServiceView, snapshot_row, snapshot_rows
from snapshotter.snapshot import load_snapshot, take_snapshot, verify
from tests import fold_events as ev
from tests.openapi_check import errors, response_schema, spec

TOKEN = "s3cret-token"
BROKER_OK: dict[str, Any] = {
    "ok": True,
    "bootstrap": "kafka-1:9092",
    "last_contact_seconds_ago": 0.4,
    "lost_after_seconds": 30.0,
}
BROKER_LOST: dict[str, Any] = BROKER_OK | {
    "ok": False,
    "last_contact_seconds_ago": 42.0,
    "error": "the Kafka brokers at kafka-1:9092 have not answered for 42 s (last error: Connection refused)",
    "fix": "check that the brokers in kafka.bootstrap (kafka-1:9092; REWIND_BOOTSTRAP) are running",
}
D = 10**8  # scale 8


# State


def _fold(directory: StateDirectory, partition: int, events: list[dict[str, Any]]) -> None:
    store = directory.partition(partition)
    state = LmdbPartitionState(store)
    _commit(store, state, EventsStep(state, partition, QUARANTINE, store.offset()), events)


def _fold_config(directory: StateDirectory, events: list[dict[str, Any]]) -> None:
    store = directory.config()
    state = LmdbConfigState(store)
    _commit(store, state, ConfigStep(state, QUARANTINE, store.offset()), events)


def _commit(
    store: PartitionStore,
    state: LmdbPartitionState | LmdbConfigState,
    step: PolicyStep,
    events: list[dict[str, Any]],
) -> None:
    """Step through ``events`` after the store's offset and commit them in one transaction."""
    ev.apply_in_order(step, events)
    store.commit(state.changes(), step.offset, len(events))


def _build_state(root: Path, settings: Settings) -> None:
    """ACC1 on partition 0 (the docs/state.md example plus an open order), ACC2 on partition 1."""
    with StateDirectory.open(root, settings, durable=False) as directory:
        _fold(
            directory,
            0,
            [
                ev.balance("USD", "1000000", account="ACC1"),
                ev.submitted("O1", "100", "10", account="ACC1"),
                ev.accepted("O1", account="ACC1"),
                ev.fill("E1", "O1", "100", "10", "1", account="ACC1"),
                ev.submitted("O2", "100", "12", account="ACC1"),
                ev.fill("E2", "O2", "100", "12", account="ACC1"),
                ev.submitted("O3", "150", "13", account="ACC1", side="SELL"),
                ev.fill("E3", "O3", "150", "13", account="ACC1"),
                ev.submitted("O4", "10", "300", account="ACC1", symbol="MSFT", side="SELL"),
                ev.accepted("O4", account="ACC1"),
            ],
        )
        _fold(
            directory,
            1,
            [
                ev.balance("EUR", "500", account="ACC2"),
                ev.adjusted("MSFT", "SET", "20", "250", account="ACC2"),
                ev.fill("E9", "NO-SUCH-ORDER", "1", "1", account="ACC2"),
            ],
        )
        _fold_config(
            directory,
            [
                ev.config("risk.max_gross_exposure", 10_000 * D, 1, "DECIMAL"),
                ev.config("risk.max_gross_exposure.ACC2", 20_000 * D, 1, "DECIMAL"),
                ev.config("desk.name", "equities", 1),
            ],
        )


# The test service


@dataclass
class FakeService:
    """A :class:`ServiceView` over real state; tests flip its fields to drive /ready and errors."""

    directory: StateDirectory
    snapshot_dir: Path
    config: Settings
    registry: CollectorRegistry
    metrics: ServiceMetrics
    tracker: RecoveryTracker = field(default_factory=RecoveryTracker)
    is_recovered: bool = True
    checks: dict[str, dict[str, Any]] = field(default_factory=lambda: {"broker": dict(BROKER_OK)})
    lag_max: float | None = 0.25
    state_error: Exception | None = None
    rebuilds: int = 0
    gate: tuple[threading.Event, threading.Event] | None = None
    reconciled: dict[str, Any] | None = None

    def settings(self) -> Settings:
        return self.config

    def state_directory(self) -> StateDirectory:
        if self.gate is not None:
            entered, release = self.gate
            entered.set()
            release.wait(60)
        if self.state_error is not None:
            raise self.state_error
        return self.directory

    def recovery_status(self) -> dict[str, Any]:
        return self.tracker.status()

    def recovered(self) -> bool:
        return self.is_recovered

    def health_checks(self) -> dict[str, dict[str, Any]]:
        return self.checks

    def projector_lag(self) -> dict[str, Any]:
        return LAG_REPORT

    def lag_seconds_max(self) -> float | None:
        return self.lag_max

    def snapshots(self) -> list[dict[str, Any]]:
        return snapshot_rows(self.snapshot_dir)

    def metrics_registry(self) -> CollectorRegistry:
        return self.registry

    def take_snapshot(self) -> list[dict[str, Any]]:
        rows = []
        for name in self.directory.store_names():
            taken = take_snapshot(self.directory.store(name), self.snapshot_dir, name)
            if taken is not None:
                self.metrics.observe_snapshot(taken.manifest, 0.01)
                rows.append(snapshot_row(name, taken))
        self.metrics.observe_snapshots_on_disk(self.snapshots())
        return rows

    def last_reconciliation(self) -> dict[str, Any] | None:
        return self.reconciled

    def request_rebuild(self) -> dict[str, Any]:
        if self.rebuilds:
            raise RewindError("a rebuild is already running", "watch /recovery/status")
        self.rebuilds += 1
        return {"scheduled": "rebuild", "status": "/recovery/status"}


LAG_REPORT: dict[str, Any] = LagReport(
    group="rewind-projector",
    topic="rewind.events",
    evaluated_at=1_700_000_000.0,
    window_seconds=60.0,
    partitions=(
        PartitionLag(
            topic="rewind.events",
            partition=0,
            log_start_offset=0,
            log_end_offset=13,
            committed_offset=10,
            lag_messages=3,
            lag_seconds=0.25,
            first_unconsumed_offset=10,
            first_unconsumed_timestamp=1_699_999_999.75,
            consume_rate=120.5,
            last_commit_at=1_699_999_999.9,
            status=Status.OK,
        ),
        PartitionLag(
            topic="rewind.events",
            partition=1,
            log_start_offset=40,
            log_end_offset=50,
            committed_offset=30,
            lag_messages=20,
            lag_seconds=None,
            first_unconsumed_offset=None,
            first_unconsumed_timestamp=None,
            consume_rate=None,
            last_commit_at=None,
            status=Status.DATA_LOSS,
            lost_range=(30, 40),
        ),
    ),
    commit_timestamps="caller",
    evaluation_seconds=0.01,
).to_json()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeService]:
    root = tmp_path_factory.mktemp("api")
    settings = load_settings(
        flags={"http.token": TOKEN, "lag.ready_max_seconds": 5, "state.dir": str(root / "state")},
        environ={},
    )
    _build_state(root / "state", settings)
    registry = CollectorRegistry()
    projector_metrics = ProjectorMetrics(registry)
    projector_metrics.applied({"Fill": 4, "OrderSubmitted": 5}, anomalies=1)
    projector_metrics.observe_batch(0.004, 0.002)
    metrics = ServiceMetrics(registry)
    tracker = RecoveryTracker()
    tracker.begin()
    tracker.start_step("restore")
    tracker.finish_step("restore")
    tracker.start_step("replay", total=200)
    tracker.advance("replay", 50)
    metrics.observe_recovery(tracker.status())
    with StateDirectory.open_readonly(root / "state") as directory:
        yield FakeService(directory, root / "snapshots", settings, registry, metrics, tracker)


@pytest.fixture
def api(service: FakeService) -> Iterator[Api]:
    """A server on 127.0.0.1 (port 0) over ``service``, whose knobs are reset after each test."""
    view: ServiceView = service
    settings = service.config
    server = serve_http(create_app(view), "127.0.0.1", 0)
    try:
        yield Api(server)
    finally:
        server.stop()
        service.is_recovered, service.lag_max, service.state_error = True, 0.25, None
        service.config, service.gate = settings, None
        service.checks = {"broker": dict(BROKER_OK)}


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """A tiny HTTP client that checks every JSON reply against the OpenAPI description."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            connection.close()
        content_type = reply.headers.get_content_type()
        if content_type == "application/json" and method != "HEAD":
            schema = response_schema(method, path.partition("?")[0], reply.status, content_type)
            problems = errors(schema, reply.json)
            assert not problems, f"{method} {path} -> {reply.status} breaks the description: {problems}"
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, token: str | None = TOKEN) -> Reply:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.request("POST", path, headers)


# Service routes


def test_health(api: Api) -> None:
    reply = api.get("/health")
    assert (reply.status, reply.json) == (200, {"status": "ok", "checks": {"broker": BROKER_OK}})
    assert reply.headers.get_content_type() == "application/json"


def test_health_is_503_naming_the_failing_check_with_its_error_and_fix(
    api: Api, service: FakeService
) -> None:
    service.checks = {"broker": dict(BROKER_LOST)}
    reply = api.get("/health")
    assert reply.status == 503
    assert reply.json == {"status": "failing", "failing": ["broker"], "checks": {"broker": BROKER_LOST}}


def test_a_lost_broker_is_also_a_reason_not_to_be_ready(api: Api, service: FakeService) -> None:
    service.checks = {"broker": dict(BROKER_LOST)}
    reply = api.get("/ready")
    assert reply.status == 503 and reply.json["ready"] is False
    assert reply.json["reasons"] == [f"{BROKER_LOST['error']} (see /health)"]


@pytest.mark.parametrize("name", sorted(HEALTH_ONLY_CHECKS))
def test_disk_and_snapshot_checks_fail_health_but_not_readiness(
    api: Api, service: FakeService, name: str
) -> None:
    service.checks = {"broker": BROKER_OK, name: {"ok": False, "error": f"{name} fails", "fix": "see it"}}
    assert api.get("/health").status == 503 and api.get("/health").json["failing"] == [name]
    reply = api.get("/ready")
    assert reply.status == 200 and reply.json["reasons"] == []


def test_ready_when_recovered_and_lag_within_the_limit(api: Api, service: FakeService) -> None:
    service.lag_max = 5.0
    reply = api.get("/ready")
    assert reply.status == 200
    assert reply.json == {
        "ready": True,
        "recovered": True,
        "lag_seconds_max": 5.0,
        "ready_max_seconds": 5.0,
        "reasons": [],
    }


@pytest.mark.parametrize(
    ("recovered", "lag", "reason"),
    [
        (False, 0.1, "not recovered"),
        (True, 5.5, "above lag.ready_max_seconds=5s"),
        (True, None, "not been measured"),
    ],
)
def test_not_ready_says_why(
    api: Api, service: FakeService, recovered: bool, lag: float | None, reason: str
) -> None:
    service.is_recovered, service.lag_max = recovered, lag
    reply = api.get("/ready")
    assert reply.status == 503
    assert reply.json["ready"] is False
    assert len(reply.json["reasons"]) == 1 and reason in reply.json["reasons"][0]


def test_recovery_status(api: Api, service: FakeService) -> None:
    reply = api.get("/recovery/status")
    assert reply.status == 200
    assert reply.json["state"] == "RECOVERY_IN_PROGRESS"
    assert reply.json["current_step"] == "replay"
    assert reply.json["completed_steps"] == ["restore"]
    assert reply.json["steps"]["replay"]["done"] == 50


def test_metrics_exposition(api: Api) -> None:
    reply = api.get("/metrics")
    assert reply.status == 200
    assert reply.headers.get_content_type() == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert samples[("rewind_events_applied_total", (("event_type", "Fill"),))] == 4
    assert samples[("rewind_anomalies_total", ())] == 1
    assert samples[("rewind_batch_apply_seconds_count", ())] == 1
    assert samples[("rewind_recovery_state", (("state", "RECOVERY_IN_PROGRESS"),))] == 1
    assert samples[("rewind_recovery_state", (("state", "RECOVERED"),))] == 0
    assert samples[("rewind_recovery_progress_percent", ())] == pytest.approx(18 + 70 * 50 / 200)
    assert ("rewind_recovery_phase_seconds", (("phase", "restore"),)) in samples
    assert families["rewind_producer_delivery_latency_seconds"].type == "histogram"
    assert families["rewind_snapshots_taken"].type == "counter"


def test_lag(api: Api) -> None:
    reply = api.get("/lag")
    assert (reply.status, reply.json) == (200, LAG_REPORT)


def test_a_service_alone_says_it_is_not_in_a_cluster(api: Api) -> None:
    reply = api.get("/cluster")
    assert (reply.status, reply.json) == (200, {"enabled": False})


def test_openapi_is_served_and_describes_exactly_the_routes_of_the_app(
    api: Api, service: FakeService
) -> None:
    reply = api.get("/openapi.yaml")
    assert reply.status == 200
    assert reply.headers.get_content_type() == "application/yaml"
    assert reply.body.decode() == openapi_text()
    served = yaml.safe_load(reply.body)
    assert served["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, item in served["paths"].items() for method in item}
    app = create_app(service)
    routed = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    assert {(m, path) for m, path in routed if m != "HEAD"} == described
    assert {path for m, path in routed if m == "HEAD"} == {path for m, path in described if m == "GET"}


def test_every_described_query_parameter_is_accepted(api: Api) -> None:
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                parameter = parameter if "name" in parameter else _ref(parameter["$ref"])
                if parameter["in"] != "query" or method != "get":
                    continue
                reply = api.get(f"{path}?{parameter['name']}=ACC1")
                assert reply.status == 200, (path, parameter["name"], reply.json)


def _ref(ref: str) -> dict[str, Any]:
    node: Any = spec()
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


# State routes


def test_positions_all_and_filtered(api: Api) -> None:
    everything = api.get("/state/positions").json["positions"]
    assert [(p["account_id"], p["symbol"]) for p in everything] == [("ACC1", "AAPL"), ("ACC2", "MSFT")]
    aapl = everything[0]
    assert aapl["quantity"] == "50"
    assert aapl["average_cost"] == "11"
    assert aapl["realized_pnl"] == "300"
    assert aapl["fees"] == "1"
    assert api.get("/state/positions?account=ACC2").json["positions"] == [everything[1]]
    assert api.get("/state/positions?symbol=AAPL").json["positions"] == [aapl]
    assert api.get("/state/positions?account=ACC2&symbol=MSFT").json["positions"] == [everything[1]]
    assert api.get("/state/positions?account=ACC2&symbol=AAPL").json == {"positions": []}
    assert api.get("/state/positions?account=NOBODY").json == {"positions": []}


def test_order_by_id(api: Api) -> None:
    reply = api.get("/state/orders/O4")
    assert reply.status == 200
    order = reply.json
    assert (order["order_id"], order["status"], order["side"], order["symbol"]) == (
        "O4",
        "ACCEPTED",
        "SELL",
        "MSFT",
    )
    assert (order["quantity"], order["filled"], order["leaves"], order["limit_price"]) == (
        "10",
        "0",
        "10",
        "300",
    )
    assert order["average_fill_price"] is None
    filled = api.get("/state/orders/O3").json
    assert (filled["status"], filled["leaves"], filled["average_fill_price"]) == ("FILLED", "0", "13")


def test_missing_order_is_a_json_404(api: Api) -> None:
    reply = api.get("/state/orders/NOPE")
    assert reply.status == 404
    assert reply.json["order_id"] == "NOPE" and "NOPE" in reply.json["error"]


def test_account_has_balances_risk_with_limit_usage_and_positions(api: Api) -> None:
    acc1 = api.get("/state/accounts/ACC1")
    assert acc1.status == 200
    assert acc1.json["balances"] == [{"account_id": "ACC1", "currency": "USD", "amount": "1000000"}]
    risk = acc1.json["risk"]
    assert (risk["gross_exposure"], risk["gross_limit"], risk["gross_limit_usage_percent"]) == (
        "650",
        "10000",
        "6.5",
    )
    assert risk["open_order_notional"] == "3000"
    assert [p["symbol"] for p in acc1.json["positions"]] == ["AAPL"]
    acc2 = api.get("/state/accounts/ACC2").json
    assert (acc2["risk"]["gross_limit"], acc2["risk"]["gross_limit_usage_percent"]) == ("20000", "25")
    assert acc2["balances"][0]["amount"] == "500"


def test_unknown_account_is_a_json_404(api: Api) -> None:
    reply = api.get("/state/accounts/NOBODY")
    assert reply.status == 404
    assert reply.json["account_id"] == "NOBODY"


def test_config(api: Api) -> None:
    entries = {c["key"]: c for c in api.get("/config").json["config"]}
    assert set(entries) == {"desk.name", "risk.max_gross_exposure", "risk.max_gross_exposure.ACC2"}
    assert entries["risk.max_gross_exposure"]["value"] == "10000"
    assert entries["desk.name"] == entries["desk.name"] | {
        "value": "equities",
        "value_type": "STRING",
        "version": 1,
    }


def test_state_not_readable_yet_is_503_with_a_fix(api: Api, service: FakeService) -> None:
    service.state_error = RewindError("the state is not readable yet: recovery is in progress", "retry")
    reply = api.get("/state/positions")
    assert reply.status == 503
    assert reply.json == {"error": "the state is not readable yet: recovery is in progress", "fix": "retry"}


def test_an_unexpected_failure_is_a_500_that_leaks_nothing(api: Api, service: FakeService) -> None:
    service.state_error = RuntimeError("secret internals")
    reply = api.get("/config")
    assert reply.status == 500
    assert "secret" not in reply.body.decode()


def test_a_slow_state_read_does_not_block_the_event_loop(api: Api, service: FakeService) -> None:
    entered, release = threading.Event(), threading.Event()
    service.gate = (entered, release)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(api.get, "/state/positions")
        assert entered.wait(60), "the read never started"
        assert api.get("/health").status == 200
        assert api.get("/recovery/status").status == 200
        release.set()
        assert slow.result().status == 200


def test_concurrent_reads_all_answer(api: Api) -> None:
    paths = ["/state/positions", "/state/accounts/ACC1", "/state/orders/O1", "/config", "/metrics"] * 8
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda path: api.get(path).status, paths))
    assert statuses == [200] * len(paths)


# Snapshots and rebuild


def test_snapshots_taken_then_listed(api: Api, service: FakeService) -> None:
    taken = api.post("/snapshots")
    assert taken.status == 200
    rows = taken.json["snapshots"]
    assert {r["store"]: r["offset"] for r in rows} == {"config": 2, "events-p0000": 9, "events-p0001": 2}
    for row in rows:
        assert verify(Path(row["path"])).manifest == load_snapshot(Path(row["path"])).manifest
    listed = api.get("/snapshots").json["snapshots"]
    assert {(r["store"], r["offset"]) for r in listed} >= {(r["store"], r["offset"]) for r in rows}
    assert {r["location"] for r in rows + listed} == {"local"}

    broken = service.snapshot_dir / "events-p0000" / f"{7:020d}"
    broken.mkdir()
    unreadable = [r for r in api.get("/snapshots").json["snapshots"] if "error" in r]
    assert [(r["store"], r["offset"]) for r in unreadable] == [("events-p0000", 7)]

    metrics = api.get("/metrics").body.decode()
    assert 'rewind_snapshots_taken_total{store="events-p0000"} 1.0' in metrics
    assert 'rewind_snapshots_on_disk{store="events-p0001"} 1.0' in metrics
    assert 'rewind_snapshot_age_seconds{store="config"}' in metrics


def test_rebuild_is_scheduled_once_then_conflicts(api: Api) -> None:
    first = api.post("/rebuild")
    assert first.status == 202
    assert first.json["scheduled"] == "rebuild"
    again = api.post("/rebuild")
    assert again.status == 409
    assert again.json == {"error": "a rebuild is already running", "fix": "watch /recovery/status"}


@pytest.mark.parametrize("path", ["/snapshots", "/rebuild"])
def test_mutations_need_the_bearer_token(api: Api, service: FakeService, path: str) -> None:
    rebuilds, snapshots = service.rebuilds, service.snapshots()
    missing = api.post(path, token=None)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    basic = api.request("POST", path, {"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401
    wrong = api.post(path, token="not-the-token")
    assert wrong.status == 403
    assert "http.token" in wrong.json["error"]
    assert (service.rebuilds, service.snapshots()) == (rebuilds, snapshots)


@pytest.mark.parametrize("path", ["/snapshots", "/rebuild"])
def test_without_a_configured_token_mutations_are_refused(api: Api, service: FakeService, path: str) -> None:
    service.config = load_settings(flags={**service.config.values, "http.token": ""}, environ={})
    reply = api.post(path, token="")
    assert reply.status == 403
    assert "http.token" in reply.json["fix"]
    assert api.post(path, token=TOKEN).status == 403


# Bad requests

_LONG = "A" * 256
_LONG_UTF8 = "é" * 128  # 128 characters, 256 bytes


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/state/positions?account=", "account"),
        ("/state/positions?symbol=", "symbol"),
        ("/state/positions?account=AC%00C1", "account"),
        ("/state/positions?symbol=AAPL%00", "symbol"),
        (f"/state/positions?account={_LONG}", "account"),
        ("/state/positions?symbol=" + "%C3%A9" * 256, "symbol"),
        ("/state/positions?account=ACC1&account=ACC2", "account"),
        ("/state/positions?acount=ACC1", "acount"),
        ("/state/orders/O1%00", "id"),
        (f"/state/orders/{_LONG}", "id"),
        ("/state/accounts/%00", "id"),
        ("/state/accounts/ACC1?verbose=1", "verbose"),
        ("/state/orders/O1?x=", "x"),
        ("/health?probe=1", "probe"),
        ("/ready?x=1", "x"),
        ("/metrics?format=json", "format"),
        ("/config?key=a", "key"),
        ("/lag?group=g", "group"),
        ("/snapshots?store=config", "store"),
        ("/recovery/status?x=1", "x"),
        ("/openapi.yaml?v=2", "v"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(api: Api, path: str, parameter: str) -> None:
    reply = api.get(path)
    assert reply.status == 400
    assert reply.json["parameter"] == parameter
    assert reply.json["error"]


def test_bad_parameters_on_mutations_are_400_too(api: Api) -> None:
    reply = api.post("/snapshots?now=1")
    assert (reply.status, reply.json["parameter"]) == (400, "now")


def test_identifiers_up_to_255_characters_are_fine(api: Api) -> None:
    assert api.get("/state/positions?account=" + "%C3%A9" * 127).status == 200
    assert api.get("/state/orders/" + "A" * 255).status == 404


@pytest.mark.parametrize(
    "identifier",
    ["A" * 255, "A" * 256, "é" * 127, "é" * 128, "é" * 255, "é" * 256, "😀" * 63, "😀" * 64, "😀" * 255],
)
def test_the_server_refuses_exactly_the_identifiers_the_description_refuses(
    api: Api, identifier: str
) -> None:
    """``Identifier``'s maxLength counts characters, and so does the server; one within it that is
    too long in UTF-8 bytes to be a key of the state is simply not found."""
    described = not errors(spec()["components"]["schemas"]["Identifier"], identifier)
    encoded = urllib.parse.quote(identifier, safe="")
    replies = {
        "account": api.get(f"/state/positions?account={encoded}"),
        "order": api.get(f"/state/orders/{encoded}"),
        "path account": api.get(f"/state/accounts/{encoded}"),
    }
    for name, reply in replies.items():
        assert (reply.status != 400) == described, (name, len(identifier), reply.status, reply.json)
    if described:
        assert replies["account"].json == {"positions": []}
        assert replies["order"].status == replies["path account"].status == 404


def test_unknown_route_is_a_json_404(api: Api) -> None:
    reply = api.get("/state/trades")
    assert reply.status == 404
    assert "/state/trades" in reply.json["error"]


def test_wrong_method_is_a_json_405_with_allow(api: Api) -> None:
    reply = api.request("DELETE", "/snapshots")
    assert reply.status == 405
    assert sorted(reply.json["allowed"]) == ["GET", "HEAD", "POST"]
    assert reply.headers["Allow"] == "GET, HEAD, POST"
    assert api.request("POST", "/health").status == 405
    head_only_post = api.request("HEAD", "/rebuild")
    assert (head_only_post.status, head_only_post.headers["Allow"], head_only_post.body) == (405, "POST", b"")


# HEAD


def _get_paths() -> list[str]:
    examples = {"/state/orders/{id}": "/state/orders/O1", "/state/accounts/{id}": "/state/accounts/ACC1"}
    return [examples.get(path, path) for path, item in spec()["paths"].items() if "get" in item]


_VARYING_HEADERS = {"Date"}
_TIMED_DOCUMENTS = {"/metrics", "/recovery/status"}
"""Routes whose body holds times (ages, elapsed seconds), so its length may differ between two calls."""


@pytest.mark.parametrize(
    "path",
    [*_get_paths(), "/state/orders/NOPE", "/state/trades", "/health?probe=1", "/state/positions?account="],
)
def test_head_answers_every_get_route_with_its_status_and_headers_and_no_body(api: Api, path: str) -> None:
    get, head = api.get(path), api.request("HEAD", path)
    assert head.status == get.status
    assert head.body == b""
    varying = _VARYING_HEADERS | ({"Content-Length"} if path in _TIMED_DOCUMENTS else set())
    assert {k: v for k, v in head.headers.items() if k not in varying} == {
        k: v for k, v in get.headers.items() if k not in varying
    }


def test_head_on_an_unhealthy_service_is_503_too(api: Api, service: FakeService) -> None:
    service.checks = {"broker": dict(BROKER_LOST)}
    reply = api.request("HEAD", "/health")
    assert (reply.status, reply.body) == (503, b"")


# Credentials


def _raw_headers(path: str, method: str, headers: list[tuple[str, bytes]], port: int) -> Reply:
    """A request with headers exactly as given (repeated ones, any bytes in values)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/snapshots", "/rebuild"])
def test_a_token_that_is_not_utf8_is_a_403(api: Api, service: FakeService, path: str) -> None:
    rebuilds = service.rebuilds
    reply = _raw_headers(
        path, "POST", [("Authorization", b"Bearer \xff\xfe" + TOKEN.encode())], api.server.port
    )
    assert reply.status == 403
    assert reply.json["error"] == "the bearer token is not the configured http.token"
    assert service.rebuilds == rebuilds


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/snapshots"), ("POST", "/rebuild"), ("GET", "/health")]
)
def test_two_authorization_headers_are_a_400(api: Api, service: FakeService, method: str, path: str) -> None:
    rebuilds, snapshots = service.rebuilds, service.snapshots()
    bearer = f"Bearer {TOKEN}".encode()
    reply = _raw_headers(
        path, method, [("Authorization", bearer), ("Authorization", bearer)], api.server.port
    )
    assert reply.status == 400
    assert reply.json == {
        "error": "Authorization given 2 times",
        "fix": "send one 'Authorization: Bearer <token>' header",
    }
    assert (service.rebuilds, service.snapshots()) == (rebuilds, snapshots)


READ_TOKEN = "r3ad-token"


def _with_read_token(service: FakeService) -> None:
    service.config = load_settings(flags={**service.config.values, "http.read_token": READ_TOKEN}, environ={})


@pytest.mark.parametrize(
    "path",
    [
        *(p for p in _get_paths() if p not in OPEN_PATHS and not is_console_page(p)),
        "/state/trades",
        "/state/orders/NOPE",
    ],
)
def test_with_a_read_token_every_read_needs_it_or_the_token(
    api: Api, service: FakeService, path: str
) -> None:
    _with_read_token(service)
    missing = api.get(path)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="rewind"'
    assert "http.read_token" in missing.json["fix"]
    wrong = api.request("GET", path, {"Authorization": "Bearer nope"})
    assert wrong.status == 403
    assert api.request("HEAD", path).status == 401
    for token in (READ_TOKEN, TOKEN):
        allowed = api.request("GET", path, {"Authorization": f"Bearer {token}"})
        assert allowed.status == api.request("HEAD", path, {"Authorization": f"Bearer {token}"}).status
        assert allowed.status not in (401, 403), (token, allowed.json)


def test_with_a_read_token_mutations_still_need_the_token(api: Api, service: FakeService) -> None:
    _with_read_token(service)
    assert api.post("/snapshots", token=None).status == 401
    assert api.post("/snapshots", token=READ_TOKEN).status == 403
    assert api.post("/snapshots", token=TOKEN).status == 200


def test_a_read_token_that_is_not_utf8_is_a_403(api: Api, service: FakeService) -> None:
    _with_read_token(service)
    reply = _raw_headers("/lag", "GET", [("Authorization", b"Bearer r3ad-\xe9")], api.server.port)
    assert reply.status == 403


@pytest.mark.parametrize("path", sorted(OPEN_PATHS))
def test_with_a_read_token_the_probes_need_no_token(api: Api, service: FakeService, path: str) -> None:
    _with_read_token(service)
    assert path in _get_paths(), "every open path is a GET route of the OpenAPI description"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {READ_TOKEN}"}):
        reply = api.request("GET", path, headers)
        assert reply.status not in (401, 403), (headers, reply.json)
        assert api.request("HEAD", path, headers).status == reply.status
    assert api.get("/recovery/status").status == 401, "the recovery document is state: it needs the token"


def test_live_answers_200_while_a_check_fails(api: Api, service: FakeService) -> None:
    service.checks = {"broker": dict(BROKER_LOST)}
    assert api.get("/health").status == 503
    reply = api.get("/live")
    assert reply.status == 200 and reply.json == {"status": "alive"}


# serve_http


def test_serve_http_refuses_a_taken_port(service: FakeService) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RewindError, match=f"127.0.0.1:{port}") as failure:
            serve_http(create_app(service), "127.0.0.1", port)
    assert failure.value.fix is not None and "http.port" in failure.value.fix


def test_serve_http_stop_is_idempotent_and_closes_the_port(service: FakeService) -> None:
    server = serve_http(create_app(service), "127.0.0.1", 0)
    assert server.url == f"http://127.0.0.1:{server.port}"
    server.stop()
    server.stop()
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", server.port))
