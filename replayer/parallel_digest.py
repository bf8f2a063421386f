"""The digests of a state directory's stores, computed by this process and a helper side by side.

Recovery validates by recomputing every store's digest from its own content: a read of the whole
state, CPU-bound, and under the GIL in one process. Here a second interpreter
(``python -m replayer.parallel_digest DIR STORE...``) digests part of the stores while this process
digests the rest, so validation uses two cores. What is guaranteed: the result is exactly
``{name: (store.offset(), store.digest())}`` for every store; if the helper fails in any way, its
stores are digested here instead (slower, same answer) and the failure is logged, never ignored.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from projector.state_directory import StateDirectory

log = logging.getLogger(__name__)

HELPER_SHARE = 0.45
"""The helper's share of the bytes: a little under half, since it first has to start up."""


def store_digests(
    root: Path, names: list[str], progress: Callable[[int], None] | None = None
) -> dict[str, tuple[int, str]]:
    """(offset, digest) of each named store of the state directory at ``root``; ``progress`` is told
    how many stores are done as that grows."""
    mine, helpers = _split(root, names)
    helper = _start_helper(root, helpers) if helpers else None
    results: dict[str, tuple[int, str]] = {}
    with StateDirectory.open_readonly(root) as directory:
        for name in mine if helper is not None else names:
            results[name] = _digest(directory, name)
            if progress is not None:
                progress(len(results))
        if helper is not None:
            found = _finish_helper(helper, helpers)
            for name in helpers:
                results[name] = found[name] if name in found else _digest(directory, name)
            if progress is not None:
                progress(len(results))
    return results


def _digest(directory: StateDirectory, name: str) -> tuple[int, str]:
    store = directory.store(name)
    return store.offset(), store.digest()


def _split(root: Path, names: list[str]) -> tuple[list[str], list[str]]:
    """Largest stores first, each to whichever side has less to read (the helper's side weighted)."""
    sizes = {name: (root / name / "data.mdb").stat().st_size for name in names}
    mine: list[str] = []
    helpers: list[str] = []
    load_mine = load_helper = 0.0
    for name in sorted(names, key=lambda n: (-sizes[n], n)):
        if load_helper / HELPER_SHARE < load_mine / (1 - HELPER_SHARE):
            helpers.append(name)
            load_helper += sizes[name]
        else:
            mine.append(name)
            load_mine += sizes[name]
    return mine, helpers


def _start_helper(root: Path, names: list[str]) -> subprocess.Popen[str] | None:
    try:
        return subprocess.Popen(
            [sys.executable, "-m", __name__, str(root), *names],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as exc:
        log.warning("digest helper did not start (%s); digesting %d stores here", exc, len(names))
        return None


def _finish_helper(helper: subprocess.Popen[str], names: list[str]) -> dict[str, tuple[int, str]]:
    out, err = helper.communicate()
    try:
        if helper.returncode != 0:
            raise ValueError(f"exit {helper.returncode}: {err.strip()[-500:]}")
        found = {name: (int(offset), str(digest)) for name, (offset, digest) in json.loads(out).items()}
        if set(found) != set(names):
            raise ValueError(f"digested {sorted(found)}, asked for {sorted(names)}")
        return found
    except (ValueError, TypeError) as exc:  # a failed run, or output that is not {name: [offset, digest]}
        log.warning("digest helper failed (%s); digesting its %d stores here", exc, len(names))
        return {}


def main(argv: list[str]) -> None:
    """Helper entry point: print {store: [offset, digest]} as JSON for the stores named in ``argv``."""
    root, names = Path(argv[0]), argv[1:]
    with StateDirectory.open_readonly(root) as directory:
        print(json.dumps({name: list(_digest(directory, name)) for name in names}))


if __name__ == "__main__":
    main(sys.argv[1:])
