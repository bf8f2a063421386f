"""How fast the web console shows its data: page load with many positions, and a time travel's round trip.

One real ``rewind serve`` (its own REWIND_HOME and topics, snapshots off) over ``--events`` simulated
events across ``--accounts`` accounts and 20 symbols (``--accounts 500`` and enough events give about
10,000 positions), driven by Debian's Chromium under Playwright (:mod:`tests.console_service`).
Each of ``--runs`` fresh pages (no cache) is measured with the browser's own clock
(``performance``):

* ``/`` (Overview): first paint, first contentful paint, DOMContentLoaded, and ``rewind:overview``
  (recovery, health, lag, snapshots and anomalies drawn);
* ``/#state`` (State): the same, ``rewind:positions`` (every position fetched, the first 100 rows
  drawn) and ``rewind:positions-all`` (the first 1,000 rows drawn, 300 per animation frame);
* a time travel to half of each partition's log (``--to``), from the button press to the state and
  diff drawn (``rewind:timetravel-start`` to ``rewind:timetravel-done``).

Reports the median and the worst of each, and writes ``bench/results/console-<time>.json``. The
target: first paint of the State panel in at most 1 s with 10k positions.

    .venv/bin/python -m bench.bench_console --events 300000 --accounts 500 --runs 5
    .venv/bin/python -m bench.bench_console --events 3000 --accounts 20 --runs 2   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench.harness import bench_broker
from tests.console_service import chromium_missing, launch, serve
from tests.http_helpers import get
from tests.pipeline import Pipeline

RESULTS = Path(__file__).resolve().parent / "results"
WAIT_MS = 600_000

_TIMINGS = """names => {
  const found = {};
  for (const entry of performance.getEntriesByType('paint')) found[entry.name] = entry.startTime;
  const navigation = performance.getEntriesByType('navigation')[0];
  found['DOMContentLoaded'] = navigation.domContentLoadedEventEnd;
  for (const name of names) {
    const marks = performance.getEntriesByName(name);
    if (marks.length) found[name] = marks[marks.length - 1].startTime;
  }
  return found;
}"""


def _load(browser: Any, url: str, ready: str, *marks: str) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    for mark in marks:
        page.wait_for_function("name => performance.getEntriesByName(name).length > 0", arg=mark)
    page.wait_for_selector(ready)
    timings: dict[str, float] = page.evaluate(_TIMINGS, list(marks))
    context.close()
    return timings


def _time_travel(browser: Any, url: str, point: str) -> float:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url + "/#timetravel")
    page.check("input[name=tt-mode][value=to]")
    page.fill("#tt-to", point)
    page.click("#tt-start")
    page.wait_for_selector("#tt-result[data-ready=true]")
    seconds: float = page.evaluate(
        """() => (performance.getEntriesByName('rewind:timetravel-done')[0].startTime
                  - performance.getEntriesByName('rewind:timetravel-start')[0].startTime) / 1000"""
    )
    context.close()
    return seconds


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def run(args: argparse.Namespace, bootstrap: str, scratch: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    pipeline = Pipeline(bootstrap, f"bench-console-{os.getpid()}-{int(time.time())}", scratch / "home")
    pipeline.create_topics()
    summary = pipeline.simulate(events=args.events, seed=5, anomaly_rate=0.001, accounts=args.accounts)
    print(f"  produced {summary.events:,} events", flush=True)
    with serve(pipeline, REWIND_SNAPSHOTS_EVERY_EVENTS="0", REWIND_SNAPSHOTS_EVERY_SECONDS="0") as service:
        service.wait_caught_up()
        positions = len(get(f"{service.url}/state/positions")[1]["positions"])
        ends = {
            ("config" if p["topic"] == pipeline.config else str(p["partition"])): p["log_end_offset"]
            for p in get(f"{service.url}/lag")[1]["partitions"]
        }
        point = ",".join(f"{label}:{end // 2}" for label, end in sorted(ends.items()))
        print(f"  {positions:,} positions; time travel to {point}", flush=True)
        loads: dict[str, list[dict[str, float]]] = {"overview": [], "state": []}
        trips: list[float] = []
        with sync_playwright() as playwright:
            browser = launch(playwright)
            try:
                for run_index in range(args.runs):
                    loads["overview"].append(
                        _load(browser, service.url + "/", "#lag tbody tr", "rewind:overview")
                    )
                    loads["state"].append(
                        _load(
                            browser,
                            service.url + "/#state",
                            "#positions tbody tr",
                            "rewind:positions",
                            "rewind:positions-all",
                        )
                    )
                    trips.append(_time_travel(browser, service.url, point))
                    state = loads["state"][-1]
                    print(
                        f"  run {run_index + 1}: state first paint {state.get('first-paint', -1):.0f} ms, "
                        f"first positions drawn {state['rewind:positions']:.0f} ms, "
                        f"all shown {state['rewind:positions-all']:.0f} ms, "
                        f"time travel {trips[-1]:.2f} s",
                        flush=True,
                    )
            finally:
                browser.close()
    result: dict[str, Any] = {
        "events": summary.events,
        "accounts": args.accounts,
        "positions": positions,
        "runs": args.runs,
        "time_travel_point": point,
        "time_travel_seconds": {k: round(v, 3) for k, v in _summary_seconds(trips).items()},
    }
    for panel, samples in loads.items():
        names = sorted({name for sample in samples for name in sample})
        result[f"{panel}_ms"] = {name: _summary([s[name] for s in samples if name in s]) for name in names}
    return result


def _summary_seconds(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "max": max(values)}


def delete_bench_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics this process made (their names start with ``prefix`` and its pid)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    mine = f"{prefix}{os.getpid()}-"
    names = [name for name in admin.list_topics(timeout=30).topics if name.startswith(mine)]
    if names:
        for future in admin.delete_topics(names).values():
            future.result()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", default=os.environ.get("REWIND_TEST_BOOTSTRAP"))
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    missing = chromium_missing()
    if missing is not None:
        print(f"error: {missing}", file=sys.stderr)
        sys.exit(1)
    with bench_broker(args.bootstrap) as (bootstrap, scratch):
        try:
            result = run(args, bootstrap, scratch)
        finally:
            delete_bench_topics(bootstrap, "bench-console-")
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"console-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
