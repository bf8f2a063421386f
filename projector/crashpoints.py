"""Named places where a test can make the process SIGKILL itself, to prove crash safety there.

``REWIND_CRASHPOINT=name:n`` kills the process the n-th time it reaches ``name`` (e.g.
``lmdb-commit:3``: inside the third LMDB write transaction, after every put, before the commit).
Unset (always, in production) it costs one dict lookup per batch, never per event.
"""

from __future__ import annotations

import os
import signal

_ARMED: dict[str, int] = {}
_SEEN: dict[str, int] = {}


def _arm() -> None:
    spec = os.environ.get("REWIND_CRASHPOINT", "")
    if spec:
        name, _, count = spec.partition(":")
        _ARMED[name] = int(count or "1")


def crashpoint(name: str) -> None:
    """Reach the crash point ``name``: SIGKILL this process if a test armed it for this visit."""
    if not _ARMED:
        return
    seen = _SEEN.get(name, 0) + 1
    _SEEN[name] = seen
    if _ARMED.get(name) == seen:
        os.kill(os.getpid(), signal.SIGKILL)


_arm()
