"""The web console in a real browser (Debian's Chromium under Playwright) over a real ``rewind serve``
on the real broker: every panel shows the service's data, time travel shows what ``rewind replay``
builds, an order's timeline is ``rewind history``'s, a rebuild's progress moves on the page without a
reload, a statement dropped in the drop folder is reconciled from the page and its break listed, the
Snapshots table shows the remote snapshots of a real S3 server, and the browser reports no errors.
Waits are on conditions, never on durations.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from rewind.console_routes import CSP
from tests.cli_runner import run_rewind
from tests.console_service import TOKEN, PageLog, Service, chromium_missing, launch, serve
from tests.http_helpers import get
from tests.pipeline import Pipeline
from tests.reconcile_helpers import reference_models, statement_rows, write_csv
from tests.s3_server import remote_env

MISSING = chromium_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

WAIT_MS = 120_000
STATEMENT_COLUMNS = ["account", "symbol", "quantity", "avg_price"]
POISON_KEY = "ACC-0003"


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, json.loads(response.read())


def _cli(service: Service, *args: str) -> Any:
    result = run_rewind(*args, "--json", env=service.env, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def service(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("console") / "home"
    pipeline = Pipeline(bootstrap, f"t-console-{uuid.uuid4().hex[:8]}", home)
    pipeline.create_topics()
    pipeline.simulate(events=4_000, seed=21, anomaly_rate=0.02)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(pipeline.events, key=POISON_KEY.encode(), value=b"\x00 not an avro event")
    assert producer.flush(30) == 0
    with serve(pipeline, REWIND_SNAPSHOTS_EVERY_EVENTS="0", REWIND_SNAPSHOTS_EVERY_SECONDS="0") as running:
        running.wait_caught_up()
        assert _post(f"{running.url}/snapshots")[0] == 200
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    yield opened
    context.close()


def _count(page: Any, selector: str, expected: int) -> None:
    page.wait_for_function(
        "([selector, expected]) => document.querySelectorAll(selector).length === expected",
        arg=[selector, expected],
    )


def _exact_rows(page: Any, selector: str) -> list[list[str | None]]:
    rows: list[list[str | None]] = page.eval_on_selector_all(
        selector, "rows => rows.map(row => [...row.cells].map(cell => cell.dataset.exact ?? null))"
    )
    return rows


def test_the_page_and_its_assets_carry_a_strict_csp_and_need_no_token(service: Service) -> None:
    for path, kind in (("/", "text/html"), ("/console/console.js", "text/javascript")):
        with urllib.request.urlopen(service.url + path, timeout=30) as response:
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.headers.get_content_type() == kind
    assert "'unsafe-inline'" not in CSP and "default-src 'none'" in CSP
    assert get(f"{service.url}/console/nothing.js")[0] == 404


def test_every_panel_loads_with_real_data(service: Service, page: Any) -> None:
    log = PageLog(page)
    url = service.url
    page.goto(url + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "tab-overview"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"

    page.wait_for_selector("#recovery[data-state=RECOVERED]")
    health = get(f"{url}/health")[1]
    _count(page, "#health li.ok", len(health["checks"]))
    shown = page.eval_on_selector_all("#health li", "items => items.map(i => i.dataset.check)")
    assert sorted(shown) == sorted(health["checks"])

    lag = get(f"{url}/lag")[1]
    _count(page, "#lag tbody tr", len(lag["partitions"]))
    assert page.inner_text("#lag-status") == lag["status"]
    assert page.locator("#lag-chart polyline").count() == len(lag["partitions"])

    snapshots = get(f"{url}/snapshots")[1]["snapshots"]
    assert snapshots
    _count(page, "#snapshots tbody tr", len(snapshots))
    assert page.inner_text("#snapshots tbody tr >> nth=0").split("\t")[0] == snapshots[0]["store"]
    assert {row["location"] for row in snapshots} == {"local"}
    _count(page, "#snapshots tbody tr[data-location=local]", len(snapshots))

    assert get(f"{url}/reconcile")[1] == {"last": None}
    assert page.inner_text("#reconcile-status") == "none yet"
    assert page.is_disabled("#reconcile")

    anomalies = get(f"{url}/state/anomalies")[1]
    assert anomalies["total"] == len(_cli(service, "state", "anomalies")) > 0
    _count(page, "#anomalies tbody tr", len(anomalies["anomalies"]))
    newest = anomalies["anomalies"][0]
    assert page.inner_text("#anomalies tbody tr >> nth=0 >> td >> nth=1") == f"{newest['offset']:,}"
    assert str(anomalies["total"]) in page.inner_text("#anomalies-total")

    page.wait_for_selector("#dead-letters tbody tr")
    dead = get(f"{url}/dead-letters")[1]["dead_letters"]
    assert [row["key"] for row in dead] == [POISON_KEY]
    source = f"{dead[0]['source_topic']}[{dead[0]['source_partition']}]@{dead[0]['source_offset']}"
    assert source in page.inner_text("#dead-letters tbody")

    page.wait_for_selector("#recovery-history tbody tr")
    assert page.inner_text("#recovery-history tbody tr >> nth=0 >> td >> nth=1") == "recovery"

    # State: every position, exact values kept, accounts and symbols link to their history.
    page.keyboard.press("2")
    positions = get(f"{url}/state/positions")[1]["positions"]
    _count(page, "#positions tbody tr", len(positions))
    rows = _exact_rows(page, "#positions tbody tr")
    assert rows[0] == [
        positions[0][name]
        for name in (
            "account_id",
            "symbol",
            "quantity",
            "average_cost",
            "realized_pnl",
            "unrealized_pnl",
            "fees",
        )
    ]
    account = positions[0]["account_id"]
    assert page.locator(f"#positions a[href='#history/account/{account}']").count() >= 1

    page.keyboard.press("/")
    wanted = positions[-1]["symbol"]
    page.keyboard.type(wanted)
    matching = [
        p
        for p in positions
        if wanted.lower() in p["account_id"].lower() or wanted.lower() in p["symbol"].lower()
    ]
    _count(page, "#positions tbody tr", len(matching))
    page.fill("#search", "")
    _count(page, "#positions tbody tr", len(positions))

    page.click(f"#positions a[href='#state/account/{account}'] >> nth=0")
    page.wait_for_selector("#account h3")
    document = get(f"{url}/state/accounts/{account}")[1]
    exposure = page.get_attribute("#account dd[data-field=gross_exposure]", "data-exact")
    assert exposure == document["risk"]["gross_exposure"]
    _count(page, "#account-balances tbody tr", len(document["balances"]))

    orders = _cli(service, "state", "orders")
    order = orders[0]
    page.fill("#order-id", order["order_id"])
    page.click("#order-form button")
    page.wait_for_selector(f"#order a[href='#history/order/{order['order_id']}']")
    assert page.get_attribute("#order dd[data-field=filled]", "data-exact") == order["filled"]

    # The other panels, and the theme, from the keyboard.
    page.keyboard.press("Escape")
    page.locator("body").focus()
    page.keyboard.press("3")
    page.wait_for_selector("#panel-timetravel:not([hidden])")
    page.keyboard.press("4")
    page.wait_for_selector("#panel-history:not([hidden])")
    before = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.keyboard.press("t")
    page.wait_for_function("before => getComputedStyle(document.body).backgroundColor !== before", arg=before)
    page.keyboard.press("1")
    page.wait_for_selector("#panel-overview:not([hidden])")
    assert log.errors() == []


def test_time_travel_shows_the_state_rewind_replay_builds(
    service: Service, page: Any, tmp_path: Path
) -> None:
    log = PageLog(page)
    lag = get(f"{service.url}/lag")[1]
    ends = {
        ("config" if p["topic"] == service.pipeline.config else str(p["partition"])): p["log_end_offset"]
        for p in lag["partitions"]
    }
    point = ",".join(f"{label}:{end // 2}" for label, end in sorted(ends.items()))

    page.goto(service.url + "/#timetravel")
    page.check("input[name=tt-mode][value=to]")
    page.fill("#tt-to", point)
    page.click("#tt-start")
    page.wait_for_selector("#tt-result[data-ready=true]")
    page.wait_for_selector("#tt-positions[data-complete=true]", state="attached")

    out = tmp_path / "replay"
    run_rewind("replay", "--to", point, "--out", str(out), "--json", env=service.env, check=True, timeout=300)
    positions = _cli(service, "state", "positions", "--state", str(out))
    fields = ("account_id", "symbol", "quantity", "average_cost", "realized_pnl", "unrealized_pnl", "fees")
    assert _exact_rows(page, "#tt-positions tbody tr") == [[row[f] for f in fields] for row in positions]
    balances = _cli(service, "state", "balances", "--state", str(out))
    assert _exact_rows(page, "#tt-balances tbody tr") == [
        [row["account_id"], None, row["amount"]] for row in balances
    ]

    diff = _cli(service, "diff", str(out), str(service.state_dir))
    differing = sorted(store["store"] for store in diff["stores"] if not store["identical"])
    shown = page.eval_on_selector_all("#tt-diff details.store", "ds => ds.map(d => d.dataset.store)")
    assert sorted(shown) == differing and differing
    assert log.errors() == []


def test_time_travel_to_a_time_shows_the_state_rewind_replay_builds(
    service: Service, page: Any, tmp_path: Path
) -> None:
    log = PageLog(page)
    account = _cli(service, "state", "positions")[0]["account_id"]
    rows = _cli(service, "history", "--account", account)["rows"]
    moment = rows[len(rows) // 2]["logged_at"]

    page.goto(service.url + "/#timetravel")
    page.fill("#tt-at", moment)
    page.press("#tt-at", "Enter")
    page.wait_for_selector("#tt-result[data-ready=true]")
    page.wait_for_selector("#tt-positions[data-complete=true]", state="attached")

    out = tmp_path / "replay"
    run_rewind(
        "replay", "--at", moment, "--out", str(out), "--json", env=service.env, check=True, timeout=300
    )
    positions = _cli(service, "state", "positions", "--state", str(out))
    fields = ("account_id", "symbol", "quantity", "average_cost", "realized_pnl", "unrealized_pnl", "fees")
    assert _exact_rows(page, "#tt-positions tbody tr") == [[row[f] for f in fields] for row in positions]
    assert moment in page.inner_text("#tt-summary")
    assert log.errors() == []


def test_an_orders_history_timeline_is_rewind_historys(service: Service, page: Any) -> None:
    log = PageLog(page)
    orders = _cli(service, "state", "orders")
    order = max(orders, key=lambda o: (o["event_count"], o["order_id"]))
    assert order["event_count"] >= 2
    expected = _cli(service, "history", "--order", order["order_id"])

    page.goto(f"{service.url}/#state/order/{order['order_id']}")
    page.click(f"#order a[href='#history/order/{order['order_id']}'] >> nth=0")
    page.wait_for_selector("#timeline[data-ready=true]")
    shown = page.eval_on_selector_all(
        "#timeline li.event",
        """items => items.map(item => ({
            partition: Number(item.dataset.partition), offset: Number(item.dataset.offset),
            event_type: item.dataset.eventType, state: JSON.parse(item.dataset.state)}))""",
    )
    assert shown == [
        {
            "partition": r["partition"],
            "offset": r["offset"],
            "event_type": r["event_type"],
            "state": r["state"],
        }
        for r in expected["rows"]
    ]
    last = expected["rows"][-1]["state"]["order"]
    filled = page.eval_on_selector_all(
        "#timeline li.event dd[data-field=filled]", "cells => cells.map(c => c.dataset.exact)"
    )
    assert filled[-1] == last["filled"]
    assert log.errors() == []


def test_a_reconciliation_from_the_page_needs_the_token_and_a_confirmation_and_lists_its_break(
    service: Service, page: Any
) -> None:
    log = PageLog(page)
    rows = statement_rows(reference_models(service.pipeline))["positions"]
    account, symbol = key = sorted(rows)[0]
    broken = dict(rows)
    broken[key] = dict(rows[key], quantity=str(Decimal(rows[key]["quantity"]) + 3))
    drop = service.pipeline.home / "reconcile"
    drop.mkdir(exist_ok=True)
    write_csv(drop / "positions-console.csv", list(broken.values()), STATEMENT_COLUMNS)

    page.goto(service.url + "/")
    page.wait_for_selector("#reconcile-positions option[value='positions-console.csv']", state="attached")
    assert page.is_disabled("#reconcile")
    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_selector("#reconcile:not([disabled])")
    assert page.input_value("#reconcile-positions") == "positions-console.csv"

    page.click("#reconcile")
    page.wait_for_selector("#confirm[open]")
    assert "positions positions-console.csv" in page.inner_text("#confirm-text")
    page.click("#confirm-cancel")
    page.wait_for_selector("#confirm", state="hidden")
    assert get(f"{service.url}/reconcile")[1] == {"last": None}

    page.click("#reconcile")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    page.wait_for_selector("#reconcile-breaks tbody tr[data-kind=quantity_differs]")
    last = get(f"{service.url}/reconcile")[1]["last"]
    assert last["statement"]["name"] and last["clean"] is False
    found = [b for b in last["breaks"] if (b["kind"], b["account"], b["key"]) == ("quantity_differs", *key)]
    assert len(found) == 1 and abs(Decimal(found[0]["difference"])) == 3, last["breaks"]
    _count(page, "#reconcile-breaks tbody tr", len(last["breaks"]))
    shown = page.eval_on_selector_all(
        "#reconcile-breaks tbody tr",
        "rows => rows.map(r => [r.dataset.kind, r.cells[1].dataset.exact, r.cells[2].dataset.exact])",
    )
    assert shown == [[b["kind"], b["account"], b["key"]] for b in last["breaks"]]
    assert page.inner_text("#reconcile-status") == f"{last['breaks_total']} breaks"
    assert "quantity_differs" in page.inner_text("#reconcile-counts")
    history = f"#history/account/{account}/{symbol}"
    row = page.locator(f"#reconcile-breaks tbody tr[data-kind=quantity_differs]:has(a[href='{history}'])")
    assert row.locator("td >> nth=0").inner_text() == "quantity_differs"
    assert row.locator(f"a[href='#history/account/{account}']").count() == 1
    row.locator(f"a[href='{history}']").click()
    page.wait_for_selector("#timeline[data-ready=true]")
    assert page.input_value("#history-id") == account and page.input_value("#history-symbol") == symbol

    # A statement gone from the drop folder between choosing and confirming: the error and its fix.
    (drop / "positions-gone.csv").write_text("account,symbol,quantity\n")
    page.keyboard.press("1")
    page.wait_for_selector("#reconcile-positions option[value='positions-gone.csv']", state="attached")
    page.select_option("#reconcile-positions", "positions-gone.csv")
    page.click("#reconcile")
    page.wait_for_selector("#confirm[open]")
    # gone once the choice is made (a refresh of the list before it would change the choice)
    (drop / "positions-gone.csv").unlink()
    page.click("#confirm-ok")
    page.wait_for_selector("#error:not([hidden])")
    shown = page.inner_text("#error")
    assert "no statement 'positions-gone.csv'" in shown and str(drop) in shown, shown
    assert get(f"{service.url}/reconcile")[1]["last"]["finished_at"] == last["finished_at"]
    assert log.errors(expected_statuses=(400,)) == []


def test_the_snapshots_table_shows_local_and_remote_snapshots_with_their_age_and_size(
    bootstrap: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path, page: Any
) -> None:
    log = PageLog(page)
    pipeline = Pipeline(bootstrap, f"t-console-s3-{uuid.uuid4().hex[:8]}", tmp_path / "home")
    pipeline.create_topics()
    pipeline.simulate(events=600, seed=23)
    settings = remote_env(s3_endpoint, s3_bucket) | {
        "REWIND_SNAPSHOTS_EVERY_EVENTS": "0",
        "REWIND_SNAPSHOTS_EVERY_SECONDS": "0",
    }
    with serve(pipeline, **settings) as running:
        running.wait_caught_up()
        taken = {(row["store"], row["offset"]) for row in _post(f"{running.url}/snapshots")[1]["snapshots"]}
        rows = running.wait_until(
            "the snapshots in the bucket",
            lambda: (
                (found := get(f"{running.url}/snapshots")[1]["snapshots"])
                and taken <= {(r["store"], r["offset"]) for r in found if r["location"] == "remote"}
                and found
            ),
        )
        remote = [row for row in rows if row["location"] == "remote"]
        local = [row for row in rows if row["location"] == "local"]
        assert local and all("error" not in row for row in rows), rows
        assert all(row["path"].startswith(f"s3://{s3_bucket}/") for row in remote)

        page.goto(running.url + "/")
        _count(page, "#snapshots tbody tr[data-location=remote]", len(remote))
        _count(page, "#snapshots tbody tr[data-location=local]", len(local))
        cells = page.eval_on_selector_all(
            "#snapshots tbody tr[data-location=remote]",
            "rows => rows.map(r => [...r.cells].map(c => [c.textContent, c.title]))",
        )
        for row, (store, offset, age, size, location) in zip(remote, cells, strict=True):
            assert (store[0], offset[0], location) == (
                row["store"],
                f"{row['offset']:,}",
                ["remote", row["path"]],
            )
            assert age[0].endswith((" s", " min")) and age[1]
            assert size[1] == f"{row['file_size']} bytes" and size[0].endswith("B")
    assert log.errors() == []


def test_a_rebuild_needs_the_token_and_a_confirmation_and_its_progress_updates_live(
    service: Service, page: Any
) -> None:
    log = PageLog(page)
    service.pipeline.simulate(events=30_000, seed=22)
    service.wait_caught_up()
    recoveries = len(get(f"{service.url}/recovery/history")[1]["history"])

    page.goto(service.url + "/")
    page.wait_for_selector("#recovery[data-state=RECOVERED]")
    page.evaluate("window.keptAcrossUpdates = 'same page'")
    assert page.is_disabled("#rebuild") and page.is_disabled("#snapshot-now")

    page.fill("#token", TOKEN)
    page.press("#token", "Enter")
    page.wait_for_selector("#rebuild:not([disabled])")

    page.click("#snapshot-now")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    page.wait_for_function("() => document.getElementById('action-result').textContent === 'snapshot: done'")

    page.click("#rebuild")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-cancel")
    page.wait_for_selector("#confirm", state="hidden")
    assert len(get(f"{service.url}/recovery/history")[1]["history"]) == recoveries

    page.click("#rebuild")
    page.wait_for_selector("#confirm[open]")
    page.click("#confirm-ok")
    page.wait_for_function(
        """() => [...document.querySelectorAll('#recovery-seen li')]
            .some(li => !['RECOVERED', 'HEALTHY'].includes(li.dataset.state))"""
    )
    page.wait_for_function(
        "recoveries => document.querySelectorAll('#recovery-history tbody tr').length > recoveries",
        arg=recoveries,
    )
    page.wait_for_selector("#recovery[data-state=RECOVERED][data-percent='100']")
    seen = page.eval_on_selector_all("#recovery-seen li", "items => items.map(i => i.textContent)")
    states = [line.split(" ")[1] for line in reversed(seen)]
    working = [i for i, state in enumerate(states) if state not in ("RECOVERED", "HEALTHY")]
    assert working and states[-1] == "RECOVERED" and states.index("RECOVERED", working[0]) > working[0]
    assert page.inner_text("#recovery-history tbody tr >> nth=0 >> td >> nth=1") == "rebuild"
    assert page.evaluate("window.keptAcrossUpdates") == "same page"
    assert log.errors(expected_statuses=(503,)) == []
