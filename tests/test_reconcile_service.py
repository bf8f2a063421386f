"""Reconciliation in `rewind serve`: POST /reconcile, the drop folder and its metric, and
`recovery.require_reconciliation` holding /ready until a clean reconciliation. Real broker, real
LMDB, the real service process, statements from the independent reference model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.cli_runner import REWIND
from tests.http_helpers import free_port, get
from tests.pipeline import Pipeline
from tests.reconcile_helpers import reference_models, statement_rows, write_csv
from tests.test_service import _wait_for

TOKEN = "reconcile-token-1"
COLUMNS = ["account", "symbol", "quantity", "avg_price"]


def _post(url: str, token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _breaks_metric(url: str) -> dict[str, float]:
    try:
        status, text = get(f"{url}/metrics")
    except OSError:
        return {}  # not listening yet
    assert status == 200
    for family in text_string_to_metric_families(text):
        if family.name == "rewind_reconciliation_breaks":
            return {s.labels["kind"]: s.value for s in family.samples}
    return {}


def test_the_service_reconciles_the_drop_folder_and_is_ready_only_after_a_clean_reconciliation(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    pipeline = Pipeline(bootstrap, unique_name, tmp_path / "home")
    pipeline.create_topics()
    pipeline.simulate(events=1500, seed=21, accounts=4)
    rows = statement_rows(reference_models(pipeline))["positions"]
    drop = tmp_path / "drop"
    drop.mkdir()
    write_csv(drop / "eod-clean.csv", list(rows.values()), COLUMNS)
    broken = dict(rows)
    key = sorted(broken)[0]
    broken[key] = dict(broken[key], quantity=str(Decimal(broken[key]["quantity"]) + 1))
    write_csv(drop / "positions-2026-11-21.csv", list(broken.values()), COLUMNS)
    (tmp_path / "secret.csv").write_text("account,symbol,quantity\n")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = (
        os.environ
        | pipeline.env
        | {
            "REWIND_HTTP_TOKEN": TOKEN,
            "REWIND_LAG_WINDOW_SECONDS": "5",
            "REWIND_RECONCILE_DROP_DIR": str(drop),
            "REWIND_RECONCILE_EVERY_SECONDS": "1",
            "REWIND_RECOVERY_REQUIRE_RECONCILIATION": "true",
        }
    )
    service = subprocess.Popen(
        [REWIND, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        counts = _wait_for(lambda: (c := _breaks_metric(url)).get("quantity_differs") == 1 and c, 90)
        assert sum(counts.values()) == 1
        last = get(f"{url}/reconcile")[1]["last"]
        assert last["statement"]["name"] == "positions-2026-11-21.csv" and last["breaks_total"] == 1
        assert [s["name"] for s in get(f"{url}/reconcile/statements")[1]["statements"]] == sorted(
            ["eod-clean.csv", "positions-2026-11-21.csv"],
            key=lambda name: -(drop / name).stat().st_mtime,
        )
        status, ready = get(f"{url}/ready")
        assert status == 503
        assert any("no clean reconciliation" in reason for reason in ready["reasons"]), ready
        status, health = get(f"{url}/health")
        assert health["checks"]["reconciliation"]["ok"] is False
        assert "reconciliation" not in health.get("failing", [])

        assert _post(f"{url}/reconcile?positions=eod-clean.csv", None)[0] == 401
        assert _post(f"{url}/reconcile?positions=eod-clean.csv", "wrong")[0] == 403
        status, refused = _post(f"{url}/reconcile?positions=../secret.csv")
        assert status == 400 and refused["parameter"] == "positions"
        status, refused = _post(f"{url}/reconcile?positions=missing.csv")
        assert status == 400 and refused["parameter"] == "positions"
        status, refused = _post(f"{url}/reconcile?positions=eod-clean.csv&path=/etc")
        assert status == 400 and refused["parameter"] == "path"

        status, report = _post(f"{url}/reconcile?positions=positions-2026-11-21.csv")
        assert status == 200 and report["clean"] is False
        assert [(b["kind"], b["account"], b["key"]) for b in report["breaks"]] == [("quantity_differs", *key)]
        assert get(f"{url}/ready")[0] == 503

        status, report = _post(f"{url}/reconcile?positions=eod-clean.csv")
        assert status == 200 and report["clean"] is True, report["breaks"]
        last = get(f"{url}/reconcile")[1]["last"]
        assert (last["clean"], last["breaks"], last["matches"]) == (True, [], report["matches"])
        assert report["matches"]["positions"] == len(rows)
        _wait_for(lambda: get(f"{url}/ready")[0] == 200, 60)
        assert sum(_breaks_metric(url).values()) == 0

        for _ in range(2):  # time travel inside the service, twice
            status, report = _post(f"{url}/reconcile?positions=eod-clean.csv&as_of=now")
            assert status == 200 and report["clean"] is True, report["breaks"]
            assert report["compared_with"]["source"].startswith("time travel to ")
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0, service.stderr.read() if service.stderr else ""
