"""The Grafana dashboard, the Prometheus configuration and alert rules, and docs/metrics.md against
the series the code registers and the service serves: a renamed metric or a moved file must break
this test, not a dashboard nobody looks at until an outage. The supervision files (the systemd unit,
the Kubernetes manifest, the Compose healthcheck) against the service: the paths they probe exist,
their probes pass and fail on a real HTTP API, their timeouts fit the service's own."""

from __future__ import annotations

import configparser
import http.client
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from projector.metrics import ProjectorMetrics
from replayer.recovery_tracker import RecoveryTracker
from rewind.cluster_standby import StandbyMetrics
from rewind.commands.stop_deadline import STOP_SECONDS
from rewind.ground.settings import SETTINGS, Settings, load_settings
from rewind.http_api import OPEN_PATHS, create_app, serve_http
from rewind.lag import LagReport, PartitionLag
from rewind.lag_metrics import LagMetrics
from rewind.lag_status import Status
from rewind.sd_notify import watchdog_seconds
from rewind.service_metrics import ServiceMetrics
from rewind.service_reconcile import ReconciliationMetrics
from rewind.service_view import ServiceView
from snapshotter.snapshot import Manifest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/dashboards/rewind.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
METRICS_DOC = ROOT / "docs/metrics.md"
SYSTEMD_UNIT = ROOT / "deploy/systemd/rewind.service"
KUBERNETES = ROOT / "deploy/kubernetes/rewind.yaml"
OPENAPI = ROOT / "rewind/openapi.yaml"

_NAME = re.compile(r"\brewind_[a-z0-9_]+")
_SELECTOR = re.compile(r"\b(rewind_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*')
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_PARTITION_KEY = {"group", "topic", "partition"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


@cache
def _registry() -> CollectorRegistry:
    """Every metric rewind registers, each with at least one sample so labels can be checked."""
    registry = CollectorRegistry()
    projector = ProjectorMetrics(registry)
    projector.applied({"Fill": 1}, anomalies=1)
    projector.dead_letter("UnknownFingerprintError")
    projector.observe_batch(0.01, 0.005)
    lag = LagMetrics(registry)
    lag.update(
        LagReport(
            group="rewind-projector",
            topic="rewind.events",
            evaluated_at=1.0,
            window_seconds=60.0,
            partitions=(PartitionLag("rewind.events", 0, 0, 9, 5, 4, 2.0, 5, 0.5, 1.0, 0.9, Status.STALLED),),
            commit_timestamps="caller",
            evaluation_seconds=0.01,
        )
    )
    StandbyMetrics(registry).observe(0, 3, 0.5)
    service = ServiceMetrics(registry)
    manifest = Manifest("events-p0000", 5, 6, 1.0, 4096, "0" * 32, "1" * 32, ())
    service.observe_snapshot(manifest, 0.2)
    service.observe_snapshots_on_disk([{"store": "events-p0000", "offset": 5, "created_at": 1.0}])
    service.snapshot_failed("events-p0000")
    tracker = RecoveryTracker()
    tracker.begin()
    for step in ("detect", "restore", "replay", "validate"):
        tracker.start_step(step)
        tracker.finish_step(step)
    tracker.recovered()
    service.observe_recovery(tracker.status())
    service.observe_producer_counts(3, 1)
    service.observe_delivery(0.01)
    ReconciliationMetrics(registry).observe({"quantity_differs": 1}, 1.0)
    return registry


@cache
def _families() -> dict[str, str]:
    """Family name -> type of every registered metric."""
    return {family.name: family.type for family in _registry().collect()}


@cache
def _series() -> dict[str, dict[str, set[str]]]:
    """Every sample name PromQL can select (``_total``, ``_bucket``, ... included) -> label -> values."""
    series: dict[str, dict[str, set[str]]] = {}
    for family in _registry().collect():
        for suffix in _SUFFIXES[family.type]:
            series.setdefault(family.name + suffix, {})
        for sample in family.samples:
            labels = series.setdefault(sample.name, {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return series


def _problems(expr: str) -> list[str]:
    """Unknown series, unknown labels or impossible label values in one PromQL expression."""
    found = [f"unknown series {name}" for name in _NAME.findall(expr) if name not in _series()]
    for name, matchers in _SELECTOR.findall(expr):
        labels = _series().get(name, {})
        for matcher in filter(None, (m.strip() for m in matchers.split(","))):
            parsed = _MATCHER.fullmatch(matcher)
            if parsed is None:
                found.append(f"{name}: cannot read matcher {matcher!r}")
                continue
            label, op, value = parsed.groups()
            if label not in labels:
                found.append(f"{name} has no label {label!r}")
            elif label in ("status", "state", "phase") and op == "=" and value not in labels[label]:
                found.append(f"{name}{{{label}}} is never {value!r}")
    depth = 0
    for char in expr:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        found.append("unbalanced parentheses")
    return found


def _merged_partitions(expr: str) -> list[str]:
    """``by (...)`` clauses that keep ``partition`` but not the rest of what names a partition: its
    topic (partition 0 of the events topic is not partition 0 of the config topic) and its group
    (the dashboard shows several groups at once)."""
    found = []
    for clause in _BY.findall(expr):
        kept = {label.strip() for label in clause.split(",")}
        if "partition" in kept and not kept >= _PARTITION_KEY:
            found.append(f"by ({clause}) merges {sorted(_PARTITION_KEY - kept)} of equal partition numbers")
    return found


def test_the_partition_check_catches_a_merge() -> None:
    assert _merged_partitions("max by (partition) (rewind_consumer_lag_messages)")
    assert _merged_partitions("sum(rate(rewind_consumer_committed_offset[5m])) by (topic, partition)")
    assert not _merged_partitions("max by (group, topic, partition) (rewind_consumer_lag_seconds)")
    assert not _merged_partitions("sum by (le) (rate(rewind_batch_apply_seconds_bucket[5m]))")


# Dashboard


@cache
def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in _dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in _panels() for t in p.get("targets", [])]
    for variable in _dashboard()["templating"]["list"]:
        query = variable.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else str(query))
    return exprs


def test_dashboard_is_a_grafana_dashboard_on_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = provisioned["datasources"][0]["uid"]
    ids = [p["id"] for p in _panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels():
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_every_dashboard_query_uses_registered_series_and_labels() -> None:
    for expr in _dashboard_exprs():
        assert _NAME.search(expr), f"{expr!r} uses no rewind series"
        assert not _problems(expr), f"{expr!r}: {_problems(expr)}"


def test_no_dashboard_query_merges_partitions_of_different_topics_or_groups() -> None:
    for expr in _dashboard_exprs():
        assert not _merged_partitions(expr), f"{expr!r}: {_merged_partitions(expr)}"


def test_legends_that_name_a_partition_name_its_topic_and_group() -> None:
    for panel in _panels():
        for target in panel.get("targets", []):
            legend = target.get("legendFormat", "")
            if "{{partition}}" in legend:
                assert "{{topic}}" in legend and "{{group}}" in legend, f"{panel['title']}: {legend!r}"


def test_the_dashboard_covers_state_lag_throughput_snapshots_and_failures() -> None:
    used = {name for expr in _dashboard_exprs() for name in _NAME.findall(expr)}
    expected = {
        "rewind_recovery_state",
        "rewind_recovery_progress_percent",
        "rewind_consumer_lag_messages",
        "rewind_consumer_lag_seconds",
        "rewind_consumer_lag_status",
        "rewind_events_applied_total",
        "rewind_batch_apply_seconds_bucket",
        "rewind_snapshot_age_seconds",
        "rewind_snapshot_last_size_bytes",
        "rewind_snapshot_last_duration_seconds",
        "rewind_anomalies_total",
        "rewind_dead_letters_total",
    }
    assert expected <= used, f"not on the dashboard: {sorted(expected - used)}"
    quantiles = {e for e in _dashboard_exprs() if "rewind_batch_apply_seconds_bucket" in e}
    assert any("histogram_quantile(0.5," in e for e in quantiles)
    assert any("histogram_quantile(0.99," in e for e in quantiles)


def _value_mappings(node: object) -> list[dict[str, Any]]:
    """Every value mapping's ``options`` anywhere in the dashboard (panel defaults and overrides)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "value" and isinstance(node.get("options"), dict):
            found.append(node["options"])
        for value in node.values():
            found += _value_mappings(value)
    elif isinstance(node, list):
        for item in node:
            found += _value_mappings(item)
    return found


def test_every_lag_status_mapping_names_every_status() -> None:
    by_severity = {str(status.value): status.name for status in Status}
    mappings = [m for m in _value_mappings(_dashboard()) if "DATA_LOSS" in m or "5" in m]
    assert len(mappings) == 3, "two severity stats and the status table"
    for mapping in mappings:
        if "0" in mapping:
            assert {key: option["text"] for key, option in mapping.items()} == by_severity
        else:
            assert set(mapping) == set(by_severity.values())


# Alerts


@cache
def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_every_alert_has_for_severity_and_says_what_to_do() -> None:
    names = [rule["alert"] for rule in _rules()]
    assert len(names) == len(set(names))
    for rule in _rules():
        assert re.fullmatch(r"\d+[smh]", str(rule["for"])), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"].split()) >= 15, rule["alert"]


def test_every_alert_expression_uses_registered_series_and_labels() -> None:
    for rule in _rules():
        expr = rule["expr"]
        if rule["alert"] == "RewindDown":
            assert expr.startswith("up{"), "up is the only series Prometheus itself provides"
            continue
        assert _NAME.search(expr), f"{rule['alert']} uses no rewind series"
        assert not _problems(expr), f"{rule['alert']}: {_problems(expr)}"


def test_no_alert_merges_partitions_of_different_topics_or_groups() -> None:
    for rule in _rules():
        assert not _merged_partitions(rule["expr"]), f"{rule['alert']}: {_merged_partitions(rule['expr'])}"


def test_the_alerts_cover_lag_statuses_snapshots_recovery_brokers_dead_letters_and_anomalies() -> None:
    exprs = " ".join(rule["expr"] for rule in _rules())
    for needle in (
        "rewind_consumer_lag_seconds",
        'status="STALLED"',
        'status="STOPPED"',
        'status="REWOUND"',
        'status="DATA_LOSS"',
        "rewind_snapshot_age_seconds",
        'state="RECOVERY_FAILED"',
        "rewind_recovery_rto_target_seconds",
        "rewind_recovery_data_loss",
        "rewind_dead_letters_total",
        "rewind_anomalies_total",
        "rewind_broker_reachable",
    ):
        assert needle in exprs, f"no alert on {needle}"


# Prometheus configuration


def _prometheus_mounts() -> dict[PurePosixPath, Path]:
    """Container path -> repository file, for every file docker-compose.yml mounts into Prometheus."""
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = {}
    for volume in compose["services"]["prometheus"]["volumes"]:
        source, target = str(volume).split(":")[:2]
        mounts[PurePosixPath(target)] = (COMPOSE.parent / source).resolve()
    return mounts


def test_the_rule_files_resolve_in_the_repository_and_in_the_container() -> None:
    rule_files = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]
    assert rule_files, "the alert rules are not loaded"
    mounts = _prometheus_mounts()
    (config_in_container,) = [path for path, source in mounts.items() if source == PROMETHEUS_CONFIG]
    for rule_file in rule_files:
        # Prometheus and promtool resolve a relative path against the config file's directory.
        assert (PROMETHEUS_CONFIG.parent / rule_file).resolve() == ALERTS, rule_file
        assert mounts.get(config_in_container.parent / rule_file) == ALERTS, (
            f"{rule_file}: docker-compose.yml mounts nothing there beside {config_in_container}"
        )


def test_promtool_accepts_the_config_from_the_repository_and_as_mounted(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    container = tmp_path / "container"
    for target, source in _prometheus_mounts().items():
        copy = container / target.relative_to("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
    for config in (PROMETHEUS_CONFIG, container / "etc/prometheus/prometheus.yml"):
        result = subprocess.run(
            [promtool, "check", "config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert result.returncode == 0, f"{config}: {result.stdout}{result.stderr}"
        assert "SUCCESS: 1 rule files found" in result.stdout, result.stdout


# Documentation


class _MetricsOnly:
    """Just enough of the service for ``GET /metrics``."""

    def settings(self) -> Settings:
        return load_settings(environ={})

    def metrics_registry(self) -> CollectorRegistry:
        return _registry()


def test_docs_name_the_format_metrics_is_served_in() -> None:
    server = serve_http(create_app(cast(ServiceView, _MetricsOnly())), "127.0.0.1", 0)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text"})
        reply = connection.getresponse()
        body = reply.read().decode()
        connection.close()
    finally:
        server.stop()
    assert reply.status == 200, body
    content_type = reply.getheader("Content-Type")
    assert f"`Content-Type: {content_type}`" in " ".join(METRICS_DOC.read_text().split())
    families = {family.name for family in text_string_to_metric_families(body)}
    assert "rewind_events_applied" in families and "rewind_consumer_lag_messages" in families


def test_docs_list_exactly_the_registered_series() -> None:
    documented = set(re.findall(r"`(rewind_[a-z0-9_]+)`", METRICS_DOC.read_text()))
    registered = {name + ("_total" if kind == "counter" else "") for name, kind in _families().items()}
    assert documented == registered, (
        f"undocumented: {sorted(registered - documented)}; not registered: {sorted(documented - registered)}"
    )


# Supervision


class _CaseSensitive(configparser.ConfigParser):
    """A unit file: keys keep their case, as systemd reads them."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


@cache
def _unit() -> _CaseSensitive:
    unit = _CaseSensitive(strict=False, interpolation=None, delimiters=("=",))
    unit.read_string(SYSTEMD_UNIT.read_text())
    return unit


def _span(value: str) -> float:
    """A systemd time span as the unit writes them: plain seconds, or with ``s`` or ``min``."""
    span = re.fullmatch(r"(\d+)\s*(s|min)?", value.strip())
    assert span is not None, f"not a time span this test reads: {value!r}"
    return float(span.group(1)) * (60 if span.group(2) == "min" else 1)


@cache
def _kubernetes() -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(KUBERNETES.read_text()) if document]


def _kind(kind: str) -> dict[str, Any]:
    (document,) = [document for document in _kubernetes() if document["kind"] == kind]
    return document


def _container() -> dict[str, Any]:
    (container,) = _kind("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return cast(dict[str, Any], container)


def _probe_path(probe: dict[str, Any]) -> str:
    """The path of an ``httpGet`` probe on the container's named HTTP port, sent without headers
    (the probes' routes need no read token)."""
    get = cast(dict[str, Any], probe["httpGet"])
    (port,) = _container()["ports"]
    assert get["port"] == port["name"], get
    assert "httpHeaders" not in get, "a probe carries no token: its routes need none"
    return cast(str, get["path"])


def _openapi_gets() -> set[str]:
    paths = yaml.safe_load(OPENAPI.read_text())["paths"]
    return {path for path, operations in paths.items() if "get" in operations}


def test_the_systemd_unit_supervises_rewind_serve_with_a_watchdog_and_a_crash_loop_limit() -> None:
    unit, service = _unit()["Unit"], _unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["ExecStart"].split()[0].endswith("/rewind")
    assert service["ExecStart"].split()[1:] == ["serve"]
    assert service["Restart"] == "on-failure" and _span(service["RestartSec"]) > 0
    assert int(unit["StartLimitBurst"]) == 5 and _span(unit["StartLimitIntervalSec"]) == 300
    watchdog = _span(service["WatchdogSec"])
    pings = watchdog_seconds({"WATCHDOG_USEC": str(int(watchdog * 1_000_000))})
    assert pings == watchdog, "the service reads the unit's WatchdogSec from WATCHDOG_USEC"
    # rewind serve ends within 10 s of SIGTERM (stop_deadline); systemd waits longer before SIGKILL.
    assert service["KillMode"] == "mixed" and _span(service["TimeoutStopSec"]) > STOP_SECONDS + 1
    environment = dict(item.split("=", 1) for item in service["Environment"].split())
    assert set(environment) <= {s.env for s in SETTINGS}, environment
    assert environment["REWIND_HOME"] == service["WorkingDirectory"]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    rewind = Path(sys.executable).with_name("rewind")
    copy = tmp_path / "rewind.service"
    # The unit names the installed path; this checkout's rewind stands in for it.
    copy.write_text(SYSTEMD_UNIT.read_text().replace(_unit()["Service"]["ExecStart"].split()[0], str(rewind)))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    about_it = [line for line in result.stderr.splitlines() if "rewind.service" in line]
    assert result.returncode == 0 and not about_it, result.stdout + result.stderr


def test_kubernetes_runs_one_rewind_serve_with_its_state_on_its_own_volume() -> None:
    assert {document["kind"] for document in _kubernetes()} == {"Service", "StatefulSet"}
    stateful = _kind("StatefulSet")
    assert stateful["spec"]["replicas"] == 1, "one writer per state directory"
    pod = stateful["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > STOP_SECONDS + 1
    container = _container()
    assert container["args"] == ["rewind", "serve"]
    literal = {item["name"]: str(item["value"]) for item in container["env"] if "value" in item}
    secret = {item["name"] for item in container["env"] if "valueFrom" in item}
    assert set(literal) | secret <= {s.env for s in SETTINGS} | {"REWIND_BOOTSTRAP"}
    assert "REWIND_HTTP_READ_TOKEN" in secret, "the API listens beyond loopback: it needs a read token"
    settings = load_settings(environ=literal)
    (port,) = container["ports"]
    assert port["containerPort"] == settings["http.port"]
    (service_port,) = _kind("Service")["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == literal["REWIND_HOME"]
    (claim,) = stateful["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == mount["name"]


def test_kubernetes_probes_live_and_ready_and_gives_recovery_the_units_start_time() -> None:
    container = _container()
    paths = {name: _probe_path(container[name]) for name in ("livenessProbe", "readinessProbe")}
    assert paths == {"livenessProbe": "/live", "readinessProbe": "/ready"}
    startup = container["startupProbe"]
    assert _probe_path(startup) == "/ready", "started means recovered, as READY=1 under systemd"
    assert startup["periodSeconds"] * startup["failureThreshold"] == _span(
        _unit()["Service"]["TimeoutStartSec"]
    )
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert _probe_path(container[name]) in _openapi_gets() & OPEN_PATHS, name
        assert 0 < container[name]["timeoutSeconds"] <= container[name]["periodSeconds"], name


def _compose_healthcheck() -> list[str]:
    test = cast(list[str], yaml.safe_load(COMPOSE.read_text())["services"]["rewind"]["healthcheck"]["test"])
    assert test[0] == "CMD" and test[1:4] == ["python", "-I", "-c"]
    return test


def test_the_compose_healthcheck_is_a_plain_get_of_health() -> None:
    test = _compose_healthcheck()
    assert test[-1] == "/health" and test[-1] in _openapi_gets() & OPEN_PATHS
    assert "Authorization" not in test[4], "/health needs no read token"


class _Probed:
    """The service as the probes see it: a read token, a broker check, readiness."""

    def __init__(self, read_token: str) -> None:
        self._settings = load_settings(environ={"REWIND_HTTP_READ_TOKEN": read_token})
        self.healthy = True

    def settings(self) -> Settings:
        return self._settings

    def health_checks(self) -> dict[str, dict[str, Any]]:
        if self.healthy:
            return {"broker": {"ok": True}}
        return {"broker": {"ok": False, "error": "the Kafka brokers do not answer", "fix": "start them"}}

    def recovered(self) -> bool:
        return self.healthy

    def lag_seconds_max(self) -> float | None:
        return 0.0

    def metrics_registry(self) -> CollectorRegistry:
        return _registry()


def _kubelet_get(port: int, path: str) -> bool:
    """What a kubelet's ``httpGet`` probe does: a GET without headers, passing on 200 to 399."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    except OSError:
        return False
    finally:
        connection.close()
    return 200 <= status < 400


def test_the_probes_pass_without_the_read_token_and_only_liveness_survives_a_failing_check() -> None:
    container = _container()
    script = _compose_healthcheck()[4]
    service = _Probed(read_token="probe-token")
    server = serve_http(create_app(cast(ServiceView, service)), "127.0.0.1", 0)

    def compose(path: str) -> int:
        return subprocess.run(
            [sys.executable, "-I", "-c", script, path],
            env={"REWIND_HTTP_PORT": str(server.port)},
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode

    probes = {
        name: _probe_path(container[name]) for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    try:
        assert all(_kubelet_get(server.port, path) for path in probes.values())
        assert compose("/health") == 0
        assert not _kubelet_get(server.port, "/lag"), "the state still needs the read token"
        service.healthy = False
        assert _kubelet_get(server.port, probes["livenessProbe"]), "lost brokers do not restart the pod"
        assert not _kubelet_get(server.port, probes["readinessProbe"])
        assert compose("/health") != 0, "a 503 is not healthy"
    finally:
        server.stop()
    assert not _kubelet_get(server.port, probes["livenessProbe"]), "nothing listening is not alive"
    assert compose("/health") != 0, "nothing listening is not healthy"
