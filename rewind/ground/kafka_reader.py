"""The one way rewind reads Kafka without taking part in it: a reader that never commits or guesses.

The projector, history, time travel, the config reader and the lag probes all read partitions they
assign themselves. Such a reader stores and commits no offsets on its own, and an offset the log no
longer holds is an error, never a jump to the other end of the log (``auto.offset.reset=error``): a
skipped event is lost silently. Where a reader needs something else (the lag probes want end-of-log
signals, the config reader starts at the log start) it says so in ``overrides``.

A consume error is turned into a message for a person by :func:`consume_error`, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from confluent_kafka import Consumer, KafkaError

from rewind.ground.errors import DataLossError, RewindError

ConfigValue = str | int | float | bool

READER_DEFAULTS: Final[Mapping[str, ConfigValue]] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "auto.offset.reset": "error",
}
"""What makes a consumer a reader: nothing committed or stored by itself, no silent offset reset."""


def reader_config(
    client_config: Mapping[str, ConfigValue], group: str, overrides: Mapping[str, ConfigValue] | None = None
) -> dict[str, ConfigValue]:
    """The librdkafka configuration of a reader in ``group`` (the group only names it to the broker)."""
    return {**client_config, **READER_DEFAULTS, "group.id": group, **(overrides or {})}


def open_reader(
    client_config: Mapping[str, ConfigValue], group: str, overrides: Mapping[str, ConfigValue] | None = None
) -> Consumer:
    """A reader on ``client_config``'s cluster; the caller assigns its partitions and closes it."""
    return Consumer(reader_config(client_config, group, overrides))


def consume_error(
    topic: str | None, partition: int | None, error: KafkaError, data_loss_fix: str
) -> RewindError:
    """The error to raise for a record that came back as ``error``.

    An offset reset refused by ``auto.offset.reset=error`` means retention deleted offsets the reader
    needs: a :class:`DataLossError` with ``data_loss_fix``. Anything else names the partition and
    points at the broker and the topics.
    """
    where = f"{topic}[{partition}]"
    if error.code() == KafkaError._AUTO_OFFSET_RESET:
        return DataLossError(f"data loss on {where}: {error.str()}", data_loss_fix)
    return RewindError(
        f"reading {where} failed: {error.str()}",
        "check the broker and that the topics exist (`rewind topics create`)",
    )
