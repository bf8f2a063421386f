"""The one error type the CLI turns into a clear message and a non-zero exit.

Every failure a user can act on is raised as a :class:`RewindError` that says *what* went wrong,
*where* (a key, a file, a partition and offset) and *how to fix it*. Anything else reaching the CLI
is a bug and shows a traceback.
"""

from __future__ import annotations


class RewindError(Exception):
    """A failure with a message for a person: what happened, and the fix."""

    exit_code = 1

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return self.what if not self.fix else f"{self.what}\n  fix: {self.fix}"


class ConfigError(RewindError):
    """A configuration value is missing or invalid; the message names the key."""


class DataLossError(RewindError):
    """The log no longer holds offsets this state needs: retention deleted them."""


class InvariantViolation(RewindError):
    """A check that protects stored state failed, and the operation stopped before writing anything
    that breaks it (an offset moving backwards, a store restored twice). Checked explicitly, never
    with ``assert``, so it holds under ``python -O`` too. The cause is a bug or a second writer, never
    bad input."""


class DamagedState(RewindError):
    """Stored state no longer holds what was written: a row's checksum does not match its bytes.
    Nothing of it is served, copied or folded; the state must be rebuilt (``rewind recover``).
    ``damage`` says which row, without where the store is."""

    def __init__(self, what: str, fix: str | None = None, damage: str = "") -> None:
        super().__init__(what, fix)
        self.damage = damage or what
