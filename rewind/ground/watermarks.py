"""A partition's log start and end offsets, asked again while its leader is still being settled.

Right after a topic is created (``rewind topics create``, then at once ``rewind simulate``), or while a
broker restarts, the broker asked may answer "not leader for partition" or "leader not available"
for a moment. Those answers are transient: they are retried, with a short backoff, until the caller's
timeout; any other error, or one that outlasts the timeout, is raised as it came.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

# Not "unknown topic": a missing topic is reported at once, not after the timeout.
_TRANSIENT = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})


def watermark_offsets(consumer: Consumer, partition: TopicPartition, timeout: float) -> tuple[int, int]:
    """``(low, high)`` of ``partition``: the first offset the log holds and the next it will write."""
    deadline = time.monotonic() + timeout
    backoff = 0.05
    while True:
        remaining = deadline - time.monotonic()
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(partition.topic, partition.partition), timeout=max(remaining, 0.1)
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            transient = isinstance(error, KafkaError) and error.code() in _TRANSIENT
            if not transient or remaining <= backoff:
                raise
        time.sleep(backoff)
        backoff = min(2 * backoff, 1.0)
