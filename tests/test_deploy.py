"""The Grafana dashboard, the Prometheus configuration and alert rules, and docs/metrics.md against
the series the code registers and the service serves: a renamed metric or a moved file must break
this test, not a dashboard nobody looks at until an outage."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from projector.metrics import ProjectorMetrics
from replayer.recovery_tracker import RecoveryTracker
from rewind.http_api import create_app, serve_http
from rewind.lag import LagReport, PartitionLag
from rewind.lag_metrics import LagMetrics
from rewind.lag_status import Status
from rewind.service_metrics import ServiceMetrics
from rewind.service_view import ServiceView
from snapshotter.snapshot import Manifest

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/dashboards/rewind.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
METRICS_DOC = ROOT / "docs/metrics.md"

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


def test_the_alerts_cover_lag_statuses_snapshots_recovery_brokers_and_dead_letters() -> None:
    exprs = " ".join(rule["expr"] for rule in _rules())
    for needle in (
        "rewind_consumer_lag_seconds",
        'status="STALLED"',
        'status="STOPPED"',
        'status="DATA_LOSS"',
        "rewind_snapshot_age_seconds",
        'state="RECOVERY_FAILED"',
        "rewind_dead_letters_total",
        "rewind_broker_reachable",
    ):
        assert needle in exprs, f"no alert on {needle}"


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
