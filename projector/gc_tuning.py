"""Garbage-collector settings for processes that project events.

The projector allocates many short-lived objects (decoded events) and keeps a large cache of
entities, none of which form reference cycles. CPython's default young-generation threshold (700
allocations) makes the collector re-scan that heap thousands of times per second for cycles that do
not exist. Freezing what exists at start and collecting less often measured +10% events per
CPU-second (bench: default vs tuned, alternating rounds). Cycles are still collected, just later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000


def tune_gc_for_projection() -> None:
    """Call once at the start of a process that projects events (CLI entry points, not libraries)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
