"""What every benchmark needs: a broker (given, or a local one started in a scratch directory),
private topics, and simulated events in them. Benchmarks clean up their topics and brokers."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka.admin import AdminClient

from producers.event_producer import EventProducer
from producers.simulator import SimulationParams, SimulationSummary, run_simulation
from rewind.ground.settings import Settings, load_settings
from rewind.ground.topics import desired_topics, ensure_topics
from rewind.kafka_local import LocalKafka


@contextmanager
def bench_broker(bootstrap: str | None) -> Iterator[tuple[str, Path]]:
    """(bootstrap address, scratch directory): ``bootstrap`` if given, else a local broker of its own."""
    with tempfile.TemporaryDirectory(prefix="rewind-bench-") as scratch:
        if bootstrap is not None:
            yield bootstrap, Path(scratch)
            return
        broker = LocalKafka(Path(scratch) / "home")
        try:
            yield str(broker.start().address), Path(scratch)
        finally:
            broker.stop()


@contextmanager
def bench_topics(bootstrap: str, scratch: Path, partitions: int, **extra: str) -> Iterator[Settings]:
    """Settings for a fresh set of topics (deleted afterwards); ``extra`` adds REWIND_* variables."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    environ = {
        "REWIND_BOOTSTRAP": bootstrap,
        "REWIND_HOME": str(scratch / f"home-{prefix}"),
        "REWIND_TOPICS_EVENTS": f"{prefix}.events",
        "REWIND_TOPICS_CONFIG": f"{prefix}.config",
        "REWIND_TOPICS_DEADLETTER": f"{prefix}.dlq",
        "REWIND_TOPICS_PARTITIONS": str(partitions),
    } | extra
    settings = load_settings(environ=environ)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_topics(admin, desired_topics(settings))
    try:
        yield settings
    finally:
        admin.delete_topics([settings.events_topic, settings.config_topic, settings.deadletter_topic])


def produce(settings: Settings, events: int, seed: int, accounts: int = 500) -> SimulationSummary:
    """Simulated events into the settings' topics, as fast as the producer goes."""
    with EventProducer(
        settings.client_config(), events_topic=settings.events_topic, config_topic=settings.config_topic
    ) as producer:
        summary = run_simulation(SimulationParams(events=events, accounts=accounts, seed=seed), producer)
    print(f"  produced {summary.events:,} events in {summary.seconds:.1f} s", flush=True)
    return summary
