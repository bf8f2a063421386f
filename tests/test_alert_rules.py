"""The alert rules as Prometheus runs them, and the series the recovery alerts read.

``promtool check rules`` and ``promtool test rules deploy/prometheus/alerts_test.yml`` (every alert
made to fire and to stay quiet, annotations as rendered); every rule's ``runbook_url`` is a section
of docs/runbook.md; :class:`rewind.service_metrics.ServiceMetrics` gives ``RewindRecoverySlow`` and
``RewindRecoveryDataLoss`` what they compare. promtool comes with Debian's ``prometheus`` package,
which ``.ci/run`` installs; the promtool tests skip, saying so, only where it is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from replayer.recovery_tracker import RecoveryTracker
from rewind.ground.errors import DataLossError, RewindError
from rewind.service_metrics import RTO_TARGET_SECONDS, ServiceMetrics

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
ALERT_TESTS = ROOT / "deploy/prometheus/alerts_test.yml"
RUNBOOK = ROOT / "docs/runbook.md"

NO_PROMTOOL = (
    "promtool is not installed: it comes with Debian's prometheus package, which .ci/run installs "
    "when it runs as root (apt-get install prometheus)"
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(NO_PROMTOOL)
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


@cache
def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def _rule(name: str) -> dict[str, Any]:
    (rule,) = [rule for rule in _rules() if rule["alert"] == name]
    return rule


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout, result.stdout


def test_every_alert_fires_and_stays_quiet_as_alerts_test_expects() -> None:
    result = _promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_alerts_test_makes_every_alert_fire_and_stay_quiet() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in _rules()}
    assert names <= firing, f"never made to fire: {sorted(names - firing)}"
    assert names <= quiet, f"never shown to stay quiet: {sorted(names - quiet)}"
    assert firing | quiet <= names, f"tests of alerts that do not exist: {sorted((firing | quiet) - names)}"


# The runbook


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``: lower case, punctuation but ``-`` and
    ``_`` dropped, spaces as ``-``, ``-1``, ``-2``... after repeats; code blocks skipped."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        heading = None if in_code else re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            repeats = seen.get(slug, 0)
            seen[slug] = repeats + 1
            anchors.add(slug if repeats == 0 else f"{slug}-{repeats}")
    return anchors


def test_the_anchor_rule_matches_githubs() -> None:
    text = "# A\n## Data loss (retention deleted it)\n```\n# not a heading\n```\n### RECOVERY_FAILED\n## A\n"
    assert _anchors(text) == {"a", "data-loss-retention-deleted-it", "recovery_failed", "a-1"}


def test_every_alert_links_a_section_of_the_runbook() -> None:
    anchors = _anchors(RUNBOOK.read_text())
    for rule in _rules():
        url = rule["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert (ROOT / path).resolve() == RUNBOOK, f"{rule['alert']}: runbook_url {url!r}"
        assert anchor in anchors, f"{rule['alert']}: docs/runbook.md has no section #{anchor}"


def test_the_runbook_lists_every_alert_and_its_links_resolve() -> None:
    text = RUNBOOK.read_text()
    alerts_section = text[text.index("\n## Alerts\n") :]
    for rule in _rules():
        assert f"`{rule['alert']}`" in alerts_section, f"{rule['alert']} is not in the runbook's Alerts"
    anchors = _anchors(text)
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in anchors, f"docs/runbook.md links #{link}, which is no section"


# The series the recovery alerts read


def _value(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float | None:
    return registry.get_sample_value(name, labels)


def test_the_rto_target_is_exported_and_the_slow_recovery_alert_escalates_at_half_past_it() -> None:
    registry = CollectorRegistry()
    ServiceMetrics(registry)
    assert _value(registry, "rewind_recovery_rto_target_seconds") == RTO_TARGET_SECONDS == 2.0
    other = CollectorRegistry()
    ServiceMetrics(other, rto_target_seconds=30.0)
    assert _value(other, "rewind_recovery_rto_target_seconds") == 30.0
    expr = " ".join(_rule("RewindRecoverySlow")["expr"].split())
    assert expr.startswith("rewind_recovery_elapsed_seconds > 1.5 * rewind_recovery_rto_target_seconds")


def test_elapsed_is_zero_until_an_attempt_has_begun() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    tracker = RecoveryTracker()
    tracker.begin()
    tracker.failed("the Kafka brokers at 127.0.0.1:1 do not answer")
    metrics.observe_recovery(tracker.status())
    assert _value(registry, "rewind_recovery_elapsed_seconds") is not None
    tracker.schedule_retry(0.1)
    tracker.failure_detected("retry")
    metrics.observe_recovery(tracker.status())
    assert tracker.status()["elapsed_seconds"] is None
    assert _value(registry, "rewind_recovery_elapsed_seconds") == 0.0


def test_the_data_loss_flag_follows_the_failure_and_clears_once_the_state_moves_on() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry)
    assert _value(registry, "rewind_recovery_data_loss") == 0.0

    tracker = RecoveryTracker()
    tracker.failure_detected("unclean shutdown")
    tracker.failed("data loss on rewind.events[1]: ...")
    gap = DataLossError("data loss on rewind.events[1]: ...", "restore a snapshot")
    metrics.observe_recovery_failure(gap)
    metrics.observe_recovery(tracker.status())
    assert _value(registry, "rewind_recovery_data_loss") == 1.0
    assert _value(registry, "rewind_recovery_state", {"state": "RECOVERY_FAILED"}) == 1.0

    metrics.observe_recovery_failure(RewindError("the Kafka brokers do not answer", "check them"))
    assert _value(registry, "rewind_recovery_data_loss") == 0.0

    metrics.observe_recovery_failure(gap)
    tracker.schedule_retry(0.1)
    tracker.failure_detected("retry")
    metrics.observe_recovery(tracker.status())
    assert _value(registry, "rewind_recovery_data_loss") == 0.0
