"""Where the test session's Kafka broker comes from (see ``conftest.bootstrap``).

In order: ``REWIND_TEST_BOOTSTRAP`` (an existing broker); a testcontainers ``KafkaContainer`` when a
Docker engine answers; otherwise rewind's own local broker in a throw-away ``REWIND_HOME``, stopped
when the session ends.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KAFKA_IMAGE = "apache/kafka:4.3.1"


def docker_engine_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:
        return False


@contextmanager
def session_broker() -> Iterator[str]:
    explicit = os.environ.get("REWIND_TEST_BOOTSTRAP")
    if explicit:
        yield explicit
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

        with KafkaContainer(KAFKA_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from rewind.kafka_local import LocalKafka

    with tempfile.TemporaryDirectory(prefix="rewind-test-broker-") as home:
        broker = LocalKafka(Path(home))
        status = broker.start(timeout=90)
        assert status.address
        try:
            yield status.address
        finally:
            broker.stop()
