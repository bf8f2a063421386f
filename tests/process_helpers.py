"""What /proc says about a test's processes: a process's children, and whether one still runs."""

from __future__ import annotations

from pathlib import Path


def child_pids(pid: int) -> set[int]:
    """The pids of ``pid``'s children (of every thread of it), as the kernel lists them."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(child) for child in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
