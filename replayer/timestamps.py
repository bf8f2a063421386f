"""Moments as people read them and as Kafka stores them: ISO-8601 UTC text, and the millisecond
bounds of a window.

Kafka record timestamps are milliseconds; a window given to the microsecond maps to exactly the
records logged inside it: :func:`first_millis_at_or_after` rounds up, :func:`first_millis_after`
is the first millisecond past the moment. No float is involved.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def iso_millis(millis: int) -> str:
    """A Kafka timestamp (ms since the epoch) as ISO-8601 UTC with milliseconds."""
    moment = _EPOCH + timedelta(milliseconds=millis)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_micros(micros: int) -> str:
    """An ``occurred_at`` (µs since the epoch) as ISO-8601 UTC with microseconds, exactly."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def first_millis_at_or_after(moment: datetime) -> int:
    """The first Kafka timestamp (ms) at or after ``moment``."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


def first_millis_after(moment: datetime) -> int:
    """The first Kafka timestamp (ms) after ``moment``."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return micros // 1000 + 1
