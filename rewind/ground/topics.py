"""The three topics rewind needs, created idempotently and never altered behind the user's back.

Events and config are kept forever (``retention.ms=-1``): they are the system of record and are
replayed years later. ``min.insync.replicas`` is 2 whenever the replication factor allows it (so an
acknowledged write survives one broker loss) and 1 on a single-broker cluster.
An existing topic whose partition count or configuration differs is reported, not changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from rewind.ground.errors import RewindError
from rewind.ground.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    """What one topic should look like."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


@dataclass
class TopicOutcome:
    """What `topics create` did for one topic, and any difference it found."""

    name: str
    action: str  # created | exists | differs
    differences: list[str] = field(default_factory=list)


def min_insync_replicas(replication_factor: int) -> int:
    return 2 if replication_factor >= 3 else 1


def desired_topics(settings: Settings) -> list[TopicSpec]:
    rf = int(settings["topics.replication_factor"])
    forever = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
    isr = {"min.insync.replicas": str(min_insync_replicas(rf))}
    return [
        TopicSpec(settings.events_topic, int(settings["topics.partitions"]), rf, forever | isr),
        TopicSpec(settings.config_topic, 1, rf, forever | isr),
        TopicSpec(settings.deadletter_topic, 1, rf, isr | {"retention.ms": str(30 * 24 * 3600 * 1000)}),
    ]


def ensure_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30.0) -> list[TopicOutcome]:
    """Create missing topics; compare existing ones with the spec and report every difference."""
    existing = admin.list_topics(timeout=timeout).topics
    outcomes: list[TopicOutcome] = []
    to_create = [s for s in specs if s.name not in existing]
    created = {s.name for s in to_create}
    if to_create:
        futures = admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in to_create],
            operation_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
            except Exception as exc:
                raise RewindError(
                    f"creating topic {name} failed: {exc}",
                    "check the broker is reachable and that the replication factor "
                    "(topics.replication_factor) does not exceed the number of brokers",
                ) from exc
            outcomes.append(TopicOutcome(name, "created"))
    for spec in specs:
        if spec.name in created:
            continue
        outcomes.append(_compare(admin, spec, existing[spec.name], timeout))
    order = {s.name: i for i, s in enumerate(specs)}
    return sorted(outcomes, key=lambda o: order[o.name])


def _compare(admin: AdminClient, spec: TopicSpec, metadata: object, timeout: float) -> TopicOutcome:
    differences: list[str] = []
    partitions = len(metadata.partitions)  # type: ignore[attr-defined]
    if partitions != spec.partitions:
        differences.append(f"partitions: wanted {spec.partitions}, topic has {partitions}")
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
    described = admin.describe_configs([resource], request_timeout=timeout)[resource].result()
    for key, wanted in sorted(spec.config.items()):
        actual = described[key].value if key in described else None
        if actual != wanted:
            differences.append(f"{key}: wanted {wanted}, topic has {actual}")
    return TopicOutcome(spec.name, "differs" if differences else "exists", differences)


def events_partition_count(admin: AdminClient, topic: str, wait_seconds: float = 10.0) -> int:
    """How many partitions the events topic has; a clear error when it does not exist.

    Asks about this one topic only (a cluster may hold thousands), with the admin API, which never
    creates a topic it is asked about. Waits briefly for the topic to appear: metadata of a
    just-created topic can lag behind.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            found = admin.describe_topics(TopicCollection([topic]), request_timeout=30)[topic].result()
            if found.partitions:
                return len(found.partitions)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not isinstance(error, KafkaError) or error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise RewindError(
                    f"could not describe topic {topic}: {exc}",
                    "check that the brokers in kafka.bootstrap.servers are reachable",
                ) from exc
        if time.monotonic() >= deadline:
            raise RewindError(
                f"topic {topic} does not exist", "create the topics with `rewind topics create`"
            )
        time.sleep(0.25)
