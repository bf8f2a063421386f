"""Where a benchmark's figures go: one JSON file per run in ``bench/results/`` (git-ignored)."""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_results(kind: str, result: object) -> Path:
    """Write ``result`` as ``bench/results/<kind>-<time>.json``, say where, and return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}", flush=True)
    return path
