"""Where the test session's Kafka broker comes from (see ``conftest.bootstrap``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def session_broker() -> Iterator[str]:
    explicit = os.environ.get("REWIND_TEST_BOOTSTRAP")
    if explicit:
        yield explicit
        return
    raise RuntimeError("set REWIND_TEST_BOOTSTRAP (local broker launcher not wired yet)")
