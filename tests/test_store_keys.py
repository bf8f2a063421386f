"""Stores are keyed by name: what topic and partition each folds, and how a person names it."""

from __future__ import annotations

import pytest

from projector.runner import labelled_store, store_label, store_partition, store_source
from replayer.timetravel import parse_points, stores_with_config
from rewind.ground.errors import RewindError
from rewind.ground.settings import load_settings


def test_a_store_maps_to_the_topic_and_partition_it_folds() -> None:
    settings = load_settings(environ={})
    assert store_source(settings, "config") == (settings.config_topic, 0)
    assert store_source(settings, "events-p0003") == (settings.events_topic, 3)
    assert store_partition("events-p0011") == 11
    for name in ("events-p3", "events-p-001", "snapshots", ""):
        with pytest.raises(ValueError, match="is not the name of a store"):
            store_source(settings, name)


def test_labels_name_a_store_as_the_command_line_does() -> None:
    assert [store_label(s) for s in stores_with_config([0, 7])] == ["config", "0", "7"]
    assert [labelled_store(label) for label in ("config", "7")] == ["config", "events-p0007"]
    for label in ("-1", "x", ""):
        with pytest.raises(ValueError):
            labelled_store(label)


def test_points_are_keyed_by_store() -> None:
    assert parse_points("3:1200,config:40", 4) == {"events-p0003": 1200, "config": 40}
    for text in ("4:1", "-1:5", "3", "3:-1", "three:1"):
        with pytest.raises(RewindError, match="--to"):
            parse_points(text, 4)
