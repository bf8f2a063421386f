"""The screenshots of docs/console.md: every panel of the web console over a real service.

Starts a real ``rewind serve`` on fresh topics (``--bootstrap``, or ``REWIND_TEST_BOOTSTRAP``, or a
local broker of its own), simulates a trading day with a few anomalies and one undecodable record
(a dead letter), takes a snapshot that the service ships to a real S3 server (rewind's S3Proxy, as
in the tests), reconciles a statement with two breaks from the page, and photographs each panel with
Debian's Chromium under Playwright into ``docs/images/console-*.png``. The topics are deleted
afterwards.

    make console-screenshots
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.bench_console import delete_bench_topics
from bench.harness import bench_broker
from tests.console_service import TOKEN, Service, chromium_missing, launch, serve
from tests.http_helpers import get
from tests.pipeline import Pipeline
from tests.reconcile_helpers import reference_models, statement_rows, write_csv
from tests.s3_server import remote_env, s3_client, session_s3

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
WAIT_MS = 300_000
PREFIX = "bench-console-"


def _snapshot(url: str) -> None:
    request = urllib.request.Request(
        f"{url}/snapshots", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        json.loads(response.read())


def _shoot(page: Any, name: str) -> None:
    path = IMAGES / f"console-{name}.png"
    page.screenshot(path=str(path))
    print(f"  {path}", flush=True)


def _shoot_card(page: Any, heading: str, name: str) -> None:
    path = IMAGES / f"console-{name}.png"
    page.locator(f"article[aria-labelledby={heading}]").screenshot(path=str(path))
    print(f"  {path}", flush=True)


def take(bootstrap: str, scratch: Path) -> None:
    pipeline = Pipeline(bootstrap, f"{PREFIX}{os.getpid()}-{int(time.time())}", scratch / "home")
    pipeline.create_topics()
    pipeline.simulate(events=6_000, seed=31, anomaly_rate=0.01)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(pipeline.events, key=b"ACC-0004", value=b"\x00 not an avro event")
    producer.flush(30)
    IMAGES.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(session_s3())
        bucket = f"{PREFIX}{os.getpid()}"
        s3_client(endpoint).create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        service = stack.enter_context(
            serve(
                pipeline,
                REWIND_SNAPSHOTS_EVERY_EVENTS="0",
                REWIND_SNAPSHOTS_EVERY_SECONDS="0",
                **remote_env(endpoint, bucket),
            )
        )
        service.wait_caught_up()
        _snapshot(service.url)
        service.wait_until(
            "the snapshots in the bucket",
            lambda: any(r["location"] == "remote" for r in get(f"{service.url}/snapshots")[1]["snapshots"]),
        )
        _photograph(pipeline, service)


def _drop_statement(pipeline: Pipeline) -> None:
    """A positions statement of the whole log with two breaks: one quantity off, one row missing."""
    rows = statement_rows(reference_models(pipeline))["positions"]
    first, second = sorted(rows)[:2]
    rows[first] = dict(rows[first], quantity=str(Decimal(rows[first]["quantity"]) + 5))
    del rows[second]
    drop = pipeline.home / "reconcile"
    drop.mkdir(parents=True, exist_ok=True)
    write_csv(drop / "positions-eod.csv", list(rows.values()), ["account", "symbol", "quantity", "avg_price"])


def _photograph(pipeline: Pipeline, service: Service) -> None:
    from playwright.sync_api import sync_playwright

    url = service.url
    account = get(f"{url}/state/positions")[1]["positions"][0]["account_id"]
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(url + "/")
            page.wait_for_selector("#dead-letters tbody tr")
            pipeline.simulate(events=3_000, seed=32)
            page.wait_for_function("() => document.querySelectorAll('#lag-chart polyline').length > 0")
            page.wait_for_function(
                "() => Number(document.getElementById('lag-window').textContent.split(', ')[1]"
                ".split(' ')[0]) >= 6"
            )
            _shoot(page, "overview")

            page.goto(f"{url}/#state/account/{account}")
            page.wait_for_selector("#account h3")
            _shoot(page, "state")

            page.goto(url + "/#timetravel")
            ends = {
                ("config" if p["topic"] == pipeline.config else str(p["partition"])): p["log_end_offset"]
                for p in get(f"{url}/lag")[1]["partitions"]
            }
            page.check("input[name=tt-mode][value=to]")
            page.fill("#tt-to", ",".join(f"{k}:{v // 2}" for k, v in sorted(ends.items())))
            page.click("#tt-start")
            page.wait_for_selector("#tt-result[data-ready=true]")
            page.click("#tt-diff details.store >> nth=1 >> summary")
            _shoot(page, "timetravel")

            page.goto(f"{url}/#history/account/{account}")
            page.wait_for_selector("#timeline[data-ready=true]")
            _shoot(page, "history")

            service.wait_caught_up()
            _drop_statement(pipeline)
            page.goto(url + "/")
            page.wait_for_selector("#snapshots tbody tr[data-location=remote]")
            page.fill("#token", TOKEN)
            page.press("#token", "Enter")
            page.wait_for_selector("#reconcile:not([disabled])")
            page.click("#reconcile")
            page.wait_for_selector("#confirm[open]")
            page.click("#confirm-ok")
            page.wait_for_selector("#reconcile-breaks tbody tr")
            page.locator("#h-reconcile").scroll_into_view_if_needed()
            _shoot_card(page, "h-reconcile", "reconciliation")
            _shoot_card(page, "h-snapshots", "snapshots")

            page.goto(url + "/")
            page.wait_for_selector("#lag tbody tr")
            page.keyboard.press("t")
            page.fill("#token", TOKEN)
            page.press("#token", "Enter")
            page.click("#rebuild")
            page.wait_for_selector("#confirm[open]")
            _shoot(page, "dark-confirm")
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("REWIND_TEST_BOOTSTRAP"))
    args = parser.parse_args()
    missing = chromium_missing()
    if missing is not None:
        print(f"error: {missing}", file=sys.stderr)
        sys.exit(1)
    with bench_broker(args.bootstrap) as (bootstrap, scratch):
        try:
            take(bootstrap, scratch)
        finally:
            delete_bench_topics(bootstrap, PREFIX)


if __name__ == "__main__":
    main()
