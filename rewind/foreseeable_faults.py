"""Foreseeable faults as messages for a person: what went wrong, where, and the fix.

A misspelled Kafka property, a broker that does not answer, a full disk or a failing one are not
bugs of rewind: each gets an ``error:`` line and a ``fix:`` line and exit status 1, never a traceback.
:func:`explain` turns such an exception into a :class:`RewindError`; anything it does not recognise
is left alone (a bug still shows its traceback, so it gets reported).
"""

from __future__ import annotations

import errno

import lmdb
from confluent_kafka import KafkaError, KafkaException

from rewind.ground.errors import ConfigError, RewindError

_UNREACHABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
    }
)
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_KAFKA_PROPERTIES_FIX = (
    "correct or remove that property where it is set: [kafka.properties] in rewind.toml, a "
    "REWIND_KAFKA_* variable or a -X option (`rewind config show` lists the effective ones; "
    "librdkafka's CONFIGURATION.md lists the valid names)"
)
_BROKER_FIX = (
    "check that the brokers in kafka.bootstrap (REWIND_BOOTSTRAP, --bootstrap) are running and "
    "reachable from here; for the local broker, `rewind kafka status` and `rewind kafka start`. "
    "A command waits broker.wait_seconds (REWIND_BROKER_WAIT_SECONDS) for an answer"
)


def explain(exc: BaseException) -> RewindError | None:
    """The message for a foreseeable fault, or None when ``exc`` is not one."""
    if isinstance(exc, KafkaException):
        return _kafka(exc)
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        where = f" ({exc.filename})" if exc.filename else ""
        return RewindError(
            f"no space left on the device{where}: {exc.strerror}",
            "free space on that disk, or move REWIND_HOME (state and snapshots) to a larger one; "
            "the state stays as of its last commit",
        )
    if isinstance(exc, lmdb.MapFullError):
        return None  # the store reports its own ceiling with the setting that raises it
    if isinstance(exc, lmdb.Error):
        return RewindError(
            f"the LMDB state store failed: {exc}",
            "check the free space and the health of the disk holding the state directory "
            "(`df -h`, the kernel log); the state stays as of its last commit, which is what the "
            "next run resumes from",
        )
    return None


def _kafka(exc: KafkaException) -> RewindError:
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return RewindError(f"the Kafka client failed: {exc}", _BROKER_FIX)
    text = error.str()
    if error.code() == KafkaError._INVALID_ARG or "configuration property" in text:
        return ConfigError(f"the Kafka client refused its configuration: {text}", _KAFKA_PROPERTIES_FIX)
    if error.code() in _UNREACHABLE:
        return RewindError(f"Kafka did not answer: {text}", _BROKER_FIX)
    return RewindError(f"Kafka refused the request: {text}", _BROKER_FIX)
