"""A stop that always ends: after SIGTERM or SIGINT, a process still running some seconds later exits.

``rewind serve`` and ``rewind project`` stop by finishing their current batch and closing what they
hold; that normally takes well under a second, and the Kafka consumer's close is bounded on its own
(:data:`projector.runner.CONSUMER_CLOSE_SECONDS`). Whatever else could hold a stop up (a request to
brokers that are gone, a recovery halfway through its replay) is cut short here: exiting at any
instant is safe, because the state and its offsets are committed together per batch and a recovery
never touches the live state before its final swap. This is the exit a ``SIGKILL`` would be, minus
the surprise: it says what it was waiting for.

The report and the exit run on a thread of their own, which needs the interpreter's lock. Should
something hold that lock for good (a C library stuck while holding it), the kernel ends the process
one second later instead: SIGALRM with its default action, which needs no Python code to run.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Final

STOP_SECONDS: Final = 8.0
"""From the first stop signal to the forced exit: inside the 10 s an orchestrator is promised."""
BACKSTOP_SECONDS: Final = 1
"""After the forced exit's moment, how long until the kernel's SIGALRM ends a process that could not
run it."""

_armed = threading.Lock()


def arm(command: str, doing: Callable[[], str], seconds: float = STOP_SECONDS) -> None:
    """After ``seconds``, if the process is still running, say what it was ``doing()`` and exit 1.

    Call it from the stop signal's handler (the main thread); calls after the first do nothing.
    """
    if not _armed.acquire(blocking=False):
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(seconds) + BACKSTOP_SECONDS)

    def overrun() -> None:
        try:
            sys.stderr.write(
                f"error: `{command}` had not stopped {seconds:g} s after the stop signal (it was "
                f"{doing()}); exiting now without finishing that\n"
                "  fix: nothing to undo: the state is as of its last committed batch and the next "
                "start resumes (or recovers) from it; if every stop overruns, check that the brokers "
                "in kafka.bootstrap answer\n"
            )
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # a closed pipe or a failing report must not keep the process alive
            pass
        finally:
            os._exit(1)

    timer = threading.Timer(seconds, overrun)
    timer.name = "stop-deadline"
    timer.daemon = True
    timer.start()
