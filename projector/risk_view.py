"""Risk rows with limit usage: the one place where stored risk meets the current configuration.

Limit usage is derived at read time from the configuration as it is now, never stored, so a limit
change shows up at once without replaying anything. Shared by ``rewind state risk`` and the HTTP API
so both say the same thing.
"""

from __future__ import annotations

from typing import Any

from projector import queries, views
from projector.model import ConfigEntry
from projector.state_directory import StateDirectory
from schemas.fixed import SCALE, format_fixed

GROSS_LIMIT_KEY = "risk.max_gross_exposure"


def gross_limit(config: list[ConfigEntry], account: str) -> int | None:
    """The gross-exposure limit of an account (scale 8): ``risk.max_gross_exposure.<account>``,
    else the desk-wide ``risk.max_gross_exposure``; None when neither is a number."""
    by_key = {c.key: c for c in config}
    entry = by_key.get(f"{GROSS_LIMIT_KEY}.{account}") or by_key.get(GROSS_LIMIT_KEY)
    if entry is None or isinstance(entry.value, bool) or not isinstance(entry.value, int):
        return None
    return entry.value


def risk_rows(state: StateDirectory, account: str | None) -> list[dict[str, Any]]:
    """Risk per account (:func:`projector.views.risk_to_dict`) plus ``gross_limit`` and
    ``gross_limit_usage_percent`` derived now from the current configuration (None without a limit)."""
    config = queries.config_entries(state)
    rows = []
    for risk in queries.risks(state, account):
        row = views.to_dict(risk)
        limit = gross_limit(config, risk.account_id)
        row["gross_limit"] = None if limit is None else format_fixed(limit, SCALE)
        row["gross_limit_usage_percent"] = (
            None if limit is None else views.limit_usage_percent(risk.gross_exposure, limit)
        )
        rows.append(row)
    return rows
