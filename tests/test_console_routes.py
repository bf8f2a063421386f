"""The console's routes without a broker: the page and its headers, parameters refused with a 400,
unknown jobs, the read token, and at most one job at a time (stopped with the API)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rewind.console_jobs import Jobs, JobsBusy
from rewind.console_routes import ASSETS, CSP
from rewind.ground.settings import load_settings
from rewind.service_reconcile import report_summary
from tests.test_http_api import READ_TOKEN, Api, FakeService, _with_read_token, api, service

__all__ = ["api", "service"]  # the fixtures, shared with tests/test_http_api.py


def test_the_page_and_its_assets_are_served_with_a_strict_csp(api: Api) -> None:
    page = api.get("/")
    assert page.status == 200 and page.headers.get_content_type() == "text/html"
    assert b'<script src="/console/console.js"' in page.body
    for name, kind in ASSETS.items():
        reply = api.get(f"/console/{name}")
        assert (reply.status, reply.headers.get_content_type()) == (200, kind)
        assert reply.headers["Content-Security-Policy"] == CSP
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Content-Security-Policy"] == CSP
    assert api.get("/console/secrets.txt").status == 404


def test_the_page_needs_no_read_token_and_the_state_still_does(api: Api, service: FakeService) -> None:
    _with_read_token(service)
    assert api.get("/").status == 200
    assert api.get("/console/console.js").status == 200
    assert api.get("/state/anomalies").status == 401
    assert api.post("/timetravel?at=2026-01-01T00:00:00Z", token=None).status == 401
    allowed = api.request("GET", "/state/anomalies", {"Authorization": f"Bearer {READ_TOKEN}"})
    assert allowed.status == 200


def test_anomalies_are_newest_first_with_a_total(api: Api) -> None:
    body = api.get("/state/anomalies").json
    offsets = [row["offset"] for row in body["anomalies"]]
    assert offsets == sorted(offsets, reverse=True)
    assert body["total"] >= len(body["anomalies"])


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/timetravel", "at"),
        ("/timetravel?at=2026-01-01T00:00:00Z&to=0:5", "at"),
        ("/timetravel?at=yesterday", "at"),
        ("/timetravel?to=0-5", "to"),
        ("/timetravel?to=0:5&to=1:5", "to"),
        ("/timetravel?at=2026-01-01&day=1", "day"),
        ("/history", "order"),
        ("/history?order=O1&account=A", "order"),
        ("/history?order=O1&symbol=S", "symbol"),
        ("/history?account=A&from=soon", "from"),
        ("/history?order=", "order"),
    ],
)
def test_a_job_with_bad_parameters_is_a_400_naming_the_parameter(api: Api, path: str, parameter: str) -> None:
    reply = api.post(path, token=None)
    assert reply.status == 400, reply.json
    assert reply.json["parameter"] == parameter


@pytest.mark.parametrize("path", ["/timetravel/nope", "/history/nope"])
def test_an_unknown_job_is_a_404_with_a_fix(api: Api, path: str) -> None:
    reply = api.get(path)
    assert reply.status == 404 and reply.json["fix"]


def test_one_job_runs_at_a_time_and_stopping_the_api_stops_it(tmp_path: Path) -> None:
    settings = load_settings(environ={"REWIND_HOME": str(tmp_path), "REWIND_BOOTSTRAP": "127.0.0.1:9"})
    jobs = Jobs()
    first = jobs.start(settings, "timetravel", {"to": "0:5"})
    assert first.out is not None and first.out.parent.is_dir()
    assert first.document()["status"] == "running"
    with pytest.raises(JobsBusy) as refused:
        jobs.start(settings, "history", {"order": "O1"})
    assert first.id in refused.value.what and refused.value.fix
    assert jobs.get(first.id, "timetravel") is first and jobs.get(first.id, "history") is None
    jobs.close()
    child = first.child
    assert child is not None and child.poll() is not None
    document = first.document()
    assert document["status"] == "failed" and document["error"] == "the API stopped"
    assert not first.out.parent.exists()


def test_the_last_reconciliation_is_null_until_one_finished_then_its_summary(
    api: Api, service: FakeService
) -> None:
    assert api.get("/reconcile").json == {"last": None}
    broken = {
        "kind": "quantity_differs",
        "entity": "position",
        "account": "ACC1",
        "key": "AAPL",
        "statement": "11",
        "rewind": "10",
        "difference": "1",
        "tolerance": "0",
        "line": 2,
        "last_events": [{"offset": 4}],
    }
    report = {
        "clean": False,
        "statement": {"name": "eod.csv"},
        "compared_with": {"source": "live state", "as_of": None, "points": {}},
        "tolerances": {},
        "compared": {"positions": 3},
        "matches": {"positions": 2},
        "breaks_by_kind": {"quantity_differs": 501},
        "breaks": [broken] * 501,
    }
    service.reconciled = report_summary(report, 1_700_000_000.0, 1_700_000_001.5)
    try:
        last = api.get("/reconcile").json["last"]
    finally:
        service.reconciled = None
    assert (last["breaks_total"], len(last["breaks"]), last["breaks_by_kind"]) == (
        501,
        500,
        {"quantity_differs": 501},
    )
    assert "last_events" not in last["breaks"][0]
    assert last["breaks"][0]["key"] == "AAPL" and last["finished_at"] == 1_700_000_001.5
    assert api.request("GET", "/reconcile?positions=eod.csv").status == 400


def test_the_drop_folders_statements_are_listed_by_name_newest_first(
    api: Api, service: FakeService, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    service.config = load_settings(flags={"reconcile.drop_dir": str(drop)}, environ={})
    assert api.get("/reconcile/statements").json == {"drop_dir": str(drop), "statements": []}
    drop.mkdir()
    files = [("positions-1.csv", 100), ("balances-1.csv", 100), ("eod.json", 200), (".hidden.csv", 300)]
    for name, mtime in files:
        (drop / name).write_text("account,symbol,quantity\n")
        os.utime(drop / name, (mtime, mtime))
    (drop / "notes.txt").write_text("not a statement")
    (drop / "dir.csv").mkdir()
    listed = api.get("/reconcile/statements").json["statements"]
    assert [(r["name"], r["kind"]) for r in listed] == [
        ("eod.json", None),
        ("balances-1.csv", "balances"),
        ("positions-1.csv", "positions"),
    ]
    assert listed[0]["bytes"] == len("account,symbol,quantity\n") and listed[0]["modified_at"] == 200


def test_the_reconciliation_routes_need_the_read_token_when_one_is_set(
    api: Api, service: FakeService
) -> None:
    _with_read_token(service)
    assert api.get("/reconcile").status == 401
    assert api.get("/reconcile/statements").status == 401
    assert api.request("GET", "/reconcile", {"Authorization": f"Bearer {READ_TOKEN}"}).status == 200
