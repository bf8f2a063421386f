"""Configuration: one place, three sources, flags win, bad values named, secrets masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewind.ground.errors import ConfigError
from rewind.ground.settings import load_settings, unknown_variables
from tests.cli_runner import run_rewind


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rewind.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[topics]\nevents = "from-file"\npartitions = 6\n[projector]\nbatch_events = 100\n'
        '[kafka.properties]\n"security.protocol" = "SASL_SSL"\n"sasl.password" = "file-secret"\n',
    )
    env = {"REWIND_TOPICS_PARTITIONS": "8", "REWIND_KAFKA_SASL_USERNAME": "desk", "REWIND_BOOTSTRAP": "h:1"}
    settings = load_settings(
        flags={"topics.partitions": 9, "topics.events": None},
        kafka_flags=("sasl.password=flag-secret",),
        config_file=str(path),
        environ=env,
    )
    assert settings.events_topic == "from-file"
    assert settings["topics.partitions"] == 9
    assert settings.sources["topics.partitions"] == "flag"
    assert settings["projector.batch_events"] == 100
    assert settings.bootstrap == "h:1"
    client = settings.client_config()
    assert client["security.protocol"] == "SASL_SSL"
    assert client["sasl.username"] == "desk"
    assert client["sasl.password"] == "flag-secret"


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ("[projector]\nbatch_events = 0\n", {}, "projector.batch_events must be a positive integer"),
        ("[projector]\nanomaly_policy = 'ignore'\n", {}, "projector.anomaly_policy must be one of"),
        ("[topics]\nevnts = 'x'\n", {}, "unknown setting 'topics.evnts'"),
        ("", {"REWIND_HTTP_PORT": "http"}, "env REWIND_HTTP_PORT: http.port"),
        ("[projector]\nbatch_events = 'abc'\n", {}, "projector.batch_events"),
        ("", {"REWIND_STATE_MAX_MAP_MB": "0"}, "state.max_map_mb must be a positive integer"),
        ("", {"REWIND_HTTP_HEADER_TIMEOUT_SECONDS": "0"}, "http.header_timeout_seconds must be a positive"),
        ("[http]\nkeepalive_seconds = 'long'\n", {}, "http.keepalive_seconds must be a positive integer"),
        ("", {"REWIND_CLUSTER_GROUP_PROTOCOL": "eager"}, "cluster.group_protocol must be one of"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=str(path), environ=env)
    assert named in str(caught.value)


def test_http_limits_and_read_token_default_and_come_from_the_environment() -> None:
    defaults = load_settings(environ={})
    assert (defaults["http.header_timeout_seconds"], defaults["http.keepalive_seconds"]) == (10, 75)
    assert defaults["http.read_token"] == ""
    env = {
        "REWIND_HTTP_HEADER_TIMEOUT_SECONDS": "3",
        "REWIND_HTTP_KEEPALIVE_SECONDS": "30",
        "REWIND_HTTP_READ_TOKEN": "r3ad",
    }
    settings = load_settings(environ=env)
    assert (settings["http.header_timeout_seconds"], settings["http.keepalive_seconds"]) == (3, 30)
    assert settings.masked()["http.read_token"] == {
        "value": "********",
        "source": "env REWIND_HTTP_READ_TOKEN",
    }


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[topics\n")
    with pytest.raises(ConfigError, match=r"rewind\.toml: not valid TOML"):
        load_settings(config_file=str(path), environ={})


def test_missing_bootstrap_says_how_to_get_one(tmp_path: Path) -> None:
    settings = load_settings(flags={"home": str(tmp_path)}, environ={})
    with pytest.raises(ConfigError, match="rewind kafka start"):
        _ = settings.bootstrap


def test_config_show_masks_secrets_and_names_sources(tmp_path: Path) -> None:
    path = _write(tmp_path, '[http]\ntoken = "t0ps3cret"\n[kafka.properties]\n"sasl.password" = "hunter2"\n')
    result = run_rewind(
        "--config",
        str(path),
        "-X",
        "ssl.key.password=k3y",
        "config",
        "show",
        "--json",
        env={"REWIND_KAFKA_SASL_USERNAME": "desk"},
        check=True,
    )
    shown = json.loads(result.stdout)
    assert "hunter2" not in result.stdout and "t0ps3cret" not in result.stdout and "k3y" not in result.stdout
    assert shown["http.token"] == {"value": "********", "source": str(path)}
    assert shown["kafka.properties.sasl.password"]["value"] == "********"
    assert shown["kafka.properties.ssl.key.password"]["source"] == "flag -X"
    assert shown["kafka.properties.sasl.username"] == {
        "value": "desk",
        "source": "env REWIND_KAFKA_SASL_USERNAME",
    }


def test_bad_config_exits_1_with_the_key_and_bad_usage_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, "[projector]\nbatch_events = -5\n")
    result = run_rewind("--config", str(path), "config", "show")
    assert result.returncode == 1
    assert "projector.batch_events" in result.stderr and "fix:" in result.stderr
    assert run_rewind("config", "show", "--no-such-flag").returncode == 2


def test_a_misspelled_variable_is_named_with_the_closest_one() -> None:
    environ = {"REWIND_TOPIC_EVENTS": "x", "REWIND_HOME": "/tmp", "REWIND_KAFKA_LINGER_MS": "5"}
    assert unknown_variables(environ) == [
        "warning: REWIND_TOPIC_EVENTS is not a rewind variable and is ignored; "
        "did you mean REWIND_TOPICS_EVENTS?"
    ]
    assert unknown_variables({"REWIND_PURE_PYTHON": "1", "REWIND_BOOTSTRAP": "h:1"}) == []


def test_the_cli_warns_of_a_misspelled_variable_and_still_runs(tmp_path: Path) -> None:
    env = {"REWIND_HOME": str(tmp_path), "REWIND_BOOTSTRAP": "127.0.0.1:9", "REWIND_HTTP_PROT": "9000"}
    result = run_rewind("config", "show", env=env)
    assert result.returncode == 0, result.stderr
    assert "REWIND_HTTP_PROT is not a rewind variable" in result.stderr
    assert "did you mean REWIND_HTTP_PORT?" in result.stderr
