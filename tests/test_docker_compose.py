"""docker-compose.yml cannot run here (no Docker engine), so check that it agrees with rewind: its
settings, ports, images, the files it mounts, the read token Prometheus sends, and how it supervises
`rewind serve` (tests/test_deploy.py runs its healthcheck against a real HTTP API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rewind.commands.stop_deadline import STOP_SECONDS
from rewind.ground.settings import SETTINGS, load_settings
from rewind.kafka_local import KAFKA_VERSION

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_image_is_pinned_and_kafka_matches_the_local_broker() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {image} is not pinned"
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_rewind_environment_is_valid_configuration_and_ports_agree() -> None:
    services = _compose()["services"]
    env = {k: str(v) for k, v in services["rewind"]["environment"].items() if not k.startswith("AWS_")}
    known = {s.env for s in SETTINGS} | {"REWIND_BOOTSTRAP"}
    assert set(env) <= known, f"unknown REWIND_* variables: {set(env) - known}"
    settings = load_settings(environ=env)
    assert settings.bootstrap == "kafka:29092"
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "INTERNAL://kafka:29092" in advertised
    port = settings["http.port"]
    assert f"127.0.0.1:{port}:{port}" in services["rewind"]["ports"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [f"rewind:{port}"]


def test_mounted_deploy_files_exist() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_rewind_serve_is_the_containers_main_process_and_is_supervised() -> None:
    rewind = _compose()["services"]["rewind"]
    script = rewind["command"][-1]
    assert script.endswith("exec rewind serve"), "docker compose stop must reach rewind serve itself"
    grace = rewind["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > STOP_SECONDS + 1
    assert rewind["restart"].startswith("on-failure")
    healthcheck = rewind["healthcheck"]
    assert healthcheck["test"][-1] == "/health"
    assert "Authorization" not in " ".join(healthcheck["test"]), "/health needs no read token"
    for key in ("interval", "timeout", "start_period"):
        assert healthcheck[key].endswith("s"), key
    assert healthcheck["retries"] >= 1


def test_prometheus_sends_the_read_token_rewind_is_given() -> None:
    """The API listens beyond loopback in the container, so it needs a read token and every scrape
    must send it."""
    env = _compose()["services"]["rewind"]["environment"]
    settings = load_settings(environ={k: str(v) for k, v in env.items()})
    assert settings["http.read_token"], "http.host is not loopback: the service refuses to start without it"
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["authorization"]["credentials"] == settings["http.read_token"]
