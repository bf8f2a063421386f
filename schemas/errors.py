"""Errors of the schema catalog and the event codec.

Every error says what is wrong and how to fix it. The decode errors carry where in the record value
the problem was found (``offset``, a byte index into the value) and the writer fingerprint when it is
known, so a dead-letter entry or a log line is enough to find the cause without the raw bytes.
"""

from __future__ import annotations


class SchemaCatalogError(Exception):
    """The ``.avsc`` files under ``schemas/`` are missing, malformed or inconsistent."""


class EventEncodeError(ValueError):
    """An event cannot be encoded with the current schema of its type."""


class EventDecodeError(Exception):
    """A record value cannot be decoded into an event.

    ``fingerprint`` is the writer fingerprint as 16 lowercase hex digits (the little-endian wire
    bytes, as they appear in a hex dump of the value), or ``None`` when the value is too short to
    hold one. ``offset`` is the byte index into the value where decoding failed.
    """

    def __init__(self, message: str, *, fingerprint: str | None, offset: int) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.offset = offset


class UnknownFingerprintError(EventDecodeError):
    """The value is framed correctly but was written with a schema this build does not know."""

    def __init__(self, fingerprint: str, offset: int = 2) -> None:
        super().__init__(
            f"unknown writer schema fingerprint {fingerprint} at byte {offset}: the event was written "
            "with a schema this rewind does not ship; deploy a rewind whose schemas/ contains the "
            "writer schema (every version of every event type must be kept in schemas/<type>/vN.avsc)",
            fingerprint=fingerprint,
            offset=offset,
        )


class UndecodableEventError(EventDecodeError):
    """The value is not a valid single-object-encoded event (bad marker, truncated, corrupt body)."""

    def __init__(self, reason: str, *, fingerprint: str | None, offset: int) -> None:
        where = f"writer fingerprint {fingerprint}" if fingerprint else "no writer fingerprint"
        super().__init__(
            f"undecodable event at byte {offset} ({where}): {reason}; the record was not written by "
            "rewind's codec or was corrupted: route it to the dead-letter topic and fix the producer",
            fingerprint=fingerprint,
            offset=offset,
        )
        self.reason = reason
