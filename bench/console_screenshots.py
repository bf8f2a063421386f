"""The screenshots of docs/console.md: every panel of the web console over a real service.

Starts a real ``rewind serve`` on fresh topics (``--bootstrap``, or ``REWIND_TEST_BOOTSTRAP``, or a
local broker of its own), simulates a trading day with a few anomalies and one undecodable record
(a dead letter), takes a snapshot, and photographs each panel with Debian's Chromium under
Playwright into ``docs/images/console-*.png``. The topics are deleted afterwards.

    make console-screenshots
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.bench_console import delete_bench_topics
from bench.harness import bench_broker
from tests.console_service import TOKEN, chromium_missing, launch, serve
from tests.http_helpers import get
from tests.pipeline import Pipeline

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


def take(bootstrap: str, scratch: Path) -> None:
    from playwright.sync_api import sync_playwright

    pipeline = Pipeline(bootstrap, f"{PREFIX}{os.getpid()}-{int(time.time())}", scratch / "home")
    pipeline.create_topics()
    pipeline.simulate(events=6_000, seed=31, anomaly_rate=0.01)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(pipeline.events, key=b"ACC-0004", value=b"\x00 not an avro event")
    producer.flush(30)
    IMAGES.mkdir(parents=True, exist_ok=True)
    with serve(pipeline, REWIND_SNAPSHOTS_EVERY_EVENTS="0", REWIND_SNAPSHOTS_EVERY_SECONDS="0") as service:
        service.wait_caught_up()
        _snapshot(service.url)
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
