"""`rewind lag` as a user runs it, against the real broker; kcat as the independent witness."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from projector.state_directory import StateDirectory
from rewind.commands.lag_cmd import stored_offsets
from rewind.ground.settings import load_settings
from tests.cli_runner import run_rewind
from tests.kafka_helpers import create_topic
from tests.lag_helpers import ScriptedConsumer, StoppedGroup, make_stopped_group, produce_old


@pytest.fixture(scope="module")
def stopped(bootstrap: str) -> StoppedGroup:
    return make_stopped_group(bootstrap)


def test_a_stopped_group_is_reported_stopped_in_json(bootstrap: str, stopped: StoppedGroup) -> None:
    before = time.time()
    result = run_rewind(
        "lag", "--json", "--group", stopped.group, "--window", str(stopped.window),
        env={"REWIND_BOOTSTRAP": bootstrap}, check=True,
    )  # fmt: skip
    after = time.time()
    report = json.loads(result.stdout)
    assert (report["group"], report["status"], report["commit_timestamps"]) == (
        stopped.group,
        "STOPPED",
        "commit-log",
    )
    (row,) = report["partitions"]
    assert (row["topic"], row["status"], row["committed_offset"], row["lag_messages"]) == (
        stopped.topic,
        "STOPPED",
        stopped.committed,
        stopped.lag,
    )
    assert before - stopped.first_unconsumed_ts <= row["lag_seconds"] <= after - stopped.first_unconsumed_ts
    assert report["total_lag_messages"] == stopped.lag and report["max_lag_seconds"] == row["lag_seconds"]


def test_the_table_shows_the_status_and_figures(bootstrap: str, stopped: StoppedGroup) -> None:
    result = run_rewind(
        "lag", "--group", stopped.group, "--topic", stopped.topic, "--window", str(stopped.window),
        env={"REWIND_BOOTSTRAP": bootstrap}, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"group {stopped.group}  topic {stopped.topic}  status STOPPED")
    assert lines[2].split()[:3] == ["TOPIC", "PART", "LOG"]
    assert lines[3].split()[:6] == [stopped.topic, "0", "0", "12", "3", "9"]
    assert lines[3].split()[-1] == "STOPPED"


def test_without_group_or_state_the_projectors_group_in_kafka_is_measured(
    bootstrap: str, stopped: StoppedGroup, rewind_home: str
) -> None:
    env = {
        "REWIND_HOME": rewind_home,  # no state directory there
        "REWIND_BOOTSTRAP": bootstrap,
        "REWIND_PROJECTOR_GROUP": stopped.group,
        "REWIND_TOPICS_EVENTS": stopped.topic,
        "REWIND_LAG_WINDOW_SECONDS": str(stopped.window),
    }
    report = json.loads(run_rewind("lag", "--json", env=env, check=True).stdout)
    assert (report["group"], report["topic"], report["status"]) == (stopped.group, stopped.topic, "STOPPED")


def _projector_state(
    root: Path, topic: str, committed: dict[int, int], opened: list[int]
) -> tuple[float, float]:
    """A projector state directory for ``topic``: the stores of ``committed`` applied events up to
    the given offset, those of ``opened`` (and the config store) exist with nothing applied yet.
    Returns the wall-clock bounds of the commits."""
    settings = load_settings(flags={"state.dir": str(root)}, environ={"REWIND_TOPICS_EVENTS": topic})
    with StateDirectory.open(root, settings, durable=False) as directory:
        directory.config()
        for partition in opened:
            directory.partition(partition)
        before = time.time()
        for partition, offset in committed.items():
            directory.partition(partition).commit({}, offset, offset + 1)
        after = time.time()
    return before, after


def test_without_group_the_stored_offsets_are_measured_and_empty_stores_left_out(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topic, group = unique_name, f"{unique_name}-projector"
    create_topic(bootstrap, topic, partitions=3)
    produce_old(bootstrap, topic, {0: 10, 1: 6, 2: 4})
    root = tmp_path / "state"
    before, after = _projector_state(root, topic, committed={0: 6, 2: 3}, opened=[1])
    env = {"REWIND_BOOTSTRAP": bootstrap, "REWIND_TOPICS_EVENTS": topic, "REWIND_PROJECTOR_GROUP": group}

    report = json.loads(run_rewind("lag", "--json", "--state", str(root), env=env, check=True).stdout)
    assert (report["group"], report["topic"], report["commit_timestamps"]) == (group, topic, "caller")
    rows = [(r["partition"], r["committed_offset"], r["lag_messages"]) for r in report["partitions"]]
    assert rows == [(0, 7, 3), (2, 4, 0)], "partition 1 applied nothing: it has no offset to show"
    assert all(before <= r["last_commit_at"] <= after for r in report["partitions"])

    table = run_rewind("lag", "--state", str(root), env=env, check=True).stdout.splitlines()
    listed = [line.split()[:5] for line in table if line.startswith(topic)]
    assert listed == [[topic, "0", "0", "10", "7"], [topic, "2", "0", "4", "4"]]


def test_stored_offsets_are_keyed_by_the_topic_and_partition_each_store_folds(tmp_path: Path) -> None:
    root = tmp_path / "state"
    settings = load_settings(flags={"state.dir": str(root)}, environ={})
    with StateDirectory.open(root, settings, durable=False) as directory:
        directory.config().commit({}, 4, 5)
        directory.partition(3).commit({}, 11, 12)
        directory.partition(5)
    offsets, commit_times = stored_offsets(settings, None)
    assert offsets == {(settings.config_topic, 0): 5, (settings.events_topic, 3): 12}
    assert set(commit_times) == set(offsets)
    assert stored_offsets(settings, settings.config_topic)[0] == {(settings.config_topic, 0): 5}


def test_without_group_a_state_that_applied_nothing_is_a_clear_error(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topic = unique_name
    create_topic(bootstrap, topic, partitions=2)
    produce_old(bootstrap, topic, {0: 3, 1: 3})
    root = tmp_path / "state"
    _projector_state(root, topic, committed={}, opened=[0, 1])
    env = {"REWIND_BOOTSTRAP": bootstrap, "REWIND_TOPICS_EVENTS": topic}
    result = run_rewind("lag", "--state", str(root), env=env)
    assert result.returncode == 1, result.stdout
    assert f"the projector's state in {root} has no stored offsets on topic {topic}" in result.stderr
    assert "fix:" in result.stderr


def test_an_offset_past_the_log_end_is_reported_with_its_reason_and_fix(
    bootstrap: str, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic, partitions=2)
    produce_old(bootstrap, topic, {0: 3, 1: 3})
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, 40)
    consumer.commit(topic, 1, 3)
    consumer.close()
    env = {"REWIND_BOOTSTRAP": bootstrap}

    report = json.loads(run_rewind("lag", "--json", "--group", group, env=env, check=True).stdout)
    assert (report["status"], report["severity"]) == ("OFFSET_BEYOND_LOG_END", 6)
    beyond, caught_up = report["partitions"]
    assert (beyond["status"], beyond["committed_offset"], beyond["log_end_offset"]) == (
        "OFFSET_BEYOND_LOG_END",
        40,
        3,
    )
    assert beyond["reason"].startswith("committed offset 40, log end 3: ") and beyond["fix"]
    assert (caught_up["status"], caught_up["reason"], caught_up["fix"]) == ("OK", None, None)

    table = run_rewind("lag", "--group", group, env=env, check=True).stdout.splitlines()
    assert table[0].startswith(f"group {group}  topic (all)  status OFFSET_BEYOND_LOG_END")
    assert table[3].split()[-1] == "OFFSET_BEYOND_LOG_END"
    (note,) = [i for i, line in enumerate(table) if line.startswith(f"OFFSET BEYOND LOG END {topic}[0]: ")]
    assert "committed offset 40, log end 3" in table[note]
    assert table[note + 1].startswith("  fix: ")


def test_the_projectors_stored_offset_past_the_log_end_is_offset_beyond_log_end(
    bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """The projector keeps its offsets with its state; the events topic now ends before them."""
    topic = unique_name
    create_topic(bootstrap, topic)
    produce_old(bootstrap, topic, {0: 5})
    root = tmp_path / "state"
    _projector_state(root, topic, committed={0: 59}, opened=[])
    env = {"REWIND_BOOTSTRAP": bootstrap, "REWIND_TOPICS_EVENTS": topic}
    report = json.loads(run_rewind("lag", "--json", "--state", str(root), env=env, check=True).stdout)
    ((row),) = report["partitions"]
    assert (row["status"], row["committed_offset"], row["log_end_offset"]) == ("OFFSET_BEYOND_LOG_END", 60, 5)


def test_watch_feeds_the_window_and_prints_one_document_per_sample(bootstrap: str, unique_name: str) -> None:
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic)
    produce_old(bootstrap, topic, {0: 10})
    consumer = ScriptedConsumer(bootstrap, group)
    consumer.commit(topic, 0, consumer.read(topic, 0, 0, 10))
    consumer.close()
    result = run_rewind(
        "lag", "--group", group, "--json", "--watch", "--interval", "0.2", "--count", "3",
        env={"REWIND_BOOTSTRAP": bootstrap}, check=True,
    )  # fmt: skip
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["status"] for d in documents] == ["OK", "OK", "OK"]
    assert [d["partitions"][0]["lag_messages"] for d in documents] == [0, 0, 0]
    assert documents[0]["evaluated_at"] < documents[1]["evaluated_at"] < documents[2]["evaluated_at"]


def test_an_unknown_group_is_a_clear_error(bootstrap: str, unique_name: str) -> None:
    result = run_rewind("lag", "--group", f"{unique_name}-nobody", env={"REWIND_BOOTSTRAP": bootstrap})
    assert result.returncode == 1
    assert f"consumer group {unique_name}-nobody has no committed offsets" in result.stderr
    assert "fix:" in result.stderr


def test_interval_without_watch_is_a_usage_error(bootstrap: str) -> None:
    result = run_rewind("lag", "--interval", "2", env={"REWIND_BOOTSTRAP": bootstrap})
    assert result.returncode == 2 and "--interval needs --watch" in result.stderr


def kcat(bootstrap: str, topic: str, partition: int, offset: str, *extra: str) -> list[tuple[int, int]]:
    """(offset, timestamp ms) of the records kcat prints for one partition from ``offset``."""
    command = ["kcat", "-b", bootstrap, "-C", "-t", topic, "-p", str(partition), "-o", offset, "-e"]
    output = subprocess.run(
        [*command, *extra, "-f", "%o %T\\n"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [(int(o), int(t)) for o, t in (line.split() for line in output.splitlines())]


def test_figures_equal_kcats(bootstrap: str, unique_name: str) -> None:
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed: the independent check of offsets and timestamps needs it")
    topic, group = unique_name, f"{unique_name}-g"
    create_topic(bootstrap, topic, partitions=3)
    produce_old(bootstrap, topic, {0: 25, 1: 8, 2: 15})
    consumer = ScriptedConsumer(bootstrap, group)
    committed = {0: 9, 1: 8, 2: 12}
    for partition, offset in committed.items():
        consumer.commit(topic, partition, offset)
    consumer.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_records([TopicPartition(topic, 2, 4)])[TopicPartition(topic, 2, 4)].result(timeout=30)

    before = time.time()
    report = json.loads(
        run_rewind("lag", "--json", "--group", group, env={"REWIND_BOOTSTRAP": bootstrap}, check=True).stdout
    )
    after = time.time()
    rows = {row["partition"]: row for row in report["partitions"]}
    for partition, offset in committed.items():
        row = rows[partition]
        ((last, _),) = kcat(bootstrap, topic, partition, "-1")
        ((first, _),) = kcat(bootstrap, topic, partition, "beginning", "-c", "1")
        assert (row["log_start_offset"], row["log_end_offset"]) == (first, last + 1)
        assert row["lag_messages"] == last + 1 - offset
        if row["lag_messages"] == 0:
            assert row["lag_seconds"] == 0.0
            continue
        ((unconsumed, stamp),) = kcat(bootstrap, topic, partition, str(offset), "-c", "1")
        assert (row["first_unconsumed_offset"], row["first_unconsumed_timestamp"]) == (
            unconsumed,
            stamp / 1000,
        )
        assert before - stamp / 1000 <= row["lag_seconds"] <= after - stamp / 1000
