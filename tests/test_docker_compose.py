"""docker-compose.yml cannot run here (no Docker engine), so check that it agrees with rewind."""

from __future__ import annotations

from pathlib import Path

import yaml

from rewind.ground.settings import SETTINGS, load_settings
from rewind.kafka_local import KAFKA_VERSION

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_image_is_pinned_and_kafka_matches_the_local_broker() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {image} is not pinned"
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_rewind_environment_is_valid_configuration_and_ports_agree() -> None:
    services = _compose()["services"]
    env = {k: str(v) for k, v in services["rewind"]["environment"].items()}
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
