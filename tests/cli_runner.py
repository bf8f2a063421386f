"""Runs the real ``rewind`` console script as a subprocess, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REWIND = str(Path(sys.executable).with_name("rewind"))


def run_rewind(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``rewind ARGS`` with ``env`` layered over the current environment."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run(
        [REWIND, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"rewind {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result
