"""Shared fixtures: a real Kafka broker for the whole session and unique topic names per test.

The broker is, in order of preference: ``REWIND_TEST_BOOTSTRAP`` if set; a testcontainers
``KafkaContainer`` when a Docker engine answers; otherwise rewind's own local broker
(``rewind kafka start``) in a throw-away ``REWIND_HOME``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from rewind.ground.native_build import check_native_build
from tests.broker import session_broker


def pytest_configure(config: pytest.Config) -> None:
    """Stop before any test if a compiled module is older than its source (it would test old code)."""
    check_native_build()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker ``kafka``, so ``pytest -m "not kafka"`` runs the rest.

    A test needs the broker when it asks for the ``bootstrap`` fixture, directly or through another
    fixture; a test that starts a broker of its own carries the marker itself.
    """
    for item in items:
        if "bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """The bootstrap address of a real Kafka broker, up for the whole test session."""
    with session_broker() as address:
        yield address


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic-name prefix no other test uses, so tests never see each other's data."""
    test = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:60]
    return f"t-{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rewind_home(tmp_path: os.PathLike[str]) -> str:
    """A fresh REWIND_HOME directory for one test."""
    return str(tmp_path)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint of a real S3 server (S3Proxy unless REWIND_TEST_S3_ENDPOINT), up for the session."""
    from tests.s3_server import session_s3

    with session_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str, unique_name: str) -> str:
    """A new, empty bucket on the session's S3 server, for one test."""
    from tests.s3_server import s3_client

    test, suffix = unique_name.rsplit("-", 1)
    name = test.lower().replace("_", "-")[:50].rstrip("-") + "-" + suffix
    s3_client(s3_endpoint).create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name
