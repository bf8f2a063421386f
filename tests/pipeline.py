"""Test plumbing for whole-pipeline tests: a private set of topics, events in them, and the reference
model's digests computed straight from the log (independently of the projector)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from producers.event_producer import EventProducer
from producers.simulator import SimulationParams, SimulationSummary, run_simulation
from projector.digest import state_digest
from rewind.ground.settings import load_settings
from rewind.ground.topics import desired_topics, ensure_topics
from schemas.codec import decode
from schemas.errors import EventDecodeError
from tests.kafka_helpers import read_partition
from tests.reference_model import ReferenceModel


@dataclass(frozen=True)
class Pipeline:
    """One test's topics and rewind home; ``env`` configures the real CLI for them."""

    bootstrap: str
    prefix: str
    home: Path
    partitions: int = 4

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def config(self) -> str:
        return f"{self.prefix}.config"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def env(self) -> dict[str, str]:
        return {
            "REWIND_BOOTSTRAP": self.bootstrap,
            "REWIND_HOME": str(self.home),
            "REWIND_TOPICS_EVENTS": self.events,
            "REWIND_TOPICS_CONFIG": self.config,
            "REWIND_TOPICS_DEADLETTER": self.deadletter,
            "REWIND_TOPICS_PARTITIONS": str(self.partitions),
        }

    def create_topics(self) -> None:
        settings = load_settings(environ=self.env)
        ensure_topics(AdminClient({"bootstrap.servers": self.bootstrap}), desired_topics(settings))

    def producer(self) -> EventProducer:
        return EventProducer(
            {"bootstrap.servers": self.bootstrap}, events_topic=self.events, config_topic=self.config
        )

    def simulate(
        self, events: int, seed: int, anomaly_rate: float = 0.0, accounts: int = 12
    ) -> SimulationSummary:
        params = SimulationParams(events=events, seed=seed, anomaly_rate=anomaly_rate, accounts=accounts)
        with self.producer() as producer:
            return run_simulation(params, producer)

    def reference_digests(self, upto: dict[int, int] | None = None) -> dict[str, str]:
        """Per-store digests of the reference model fed every decodable event of the log.

        ``upto`` maps a partition to the last offset to include (time travel); absent: everything.
        """
        digests: dict[str, str] = {}
        for partition in range(self.partitions):
            model = ReferenceModel()
            for message in read_partition(self.bootstrap, self.events, partition):
                offset = message.offset()
                assert offset is not None
                if upto is not None and offset > upto.get(partition, -1):
                    break
                try:
                    event = decode(message.value())
                except EventDecodeError:
                    model.offset = offset
                    continue
                if event["event_type"] == "ConfigChanged" or message.key() != event["account_id"].encode():
                    model.offset = offset  # refused by the contract: the dead-letter topic's
                    continue
                model.apply(event, partition, offset)
            digests[f"events-p{partition:04d}"] = state_digest(model.records())
        model = ReferenceModel()
        for message in read_partition(self.bootstrap, self.config, 0):
            offset = message.offset()
            assert offset is not None
            try:
                event = decode(message.value())
            except EventDecodeError:
                model.config_offset = offset
                continue
            if event["event_type"] != "ConfigChanged" or message.key() != event["key"].encode():
                model.config_offset = offset  # refused by the contract: the dead-letter topic's
                continue
            model.apply_config(event, offset)
        digests["config"] = state_digest(model.config_records())
        return digests
