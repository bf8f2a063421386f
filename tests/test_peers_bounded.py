"""A peer pass stopped at its time budget is compared with rewind's state at exactly the offsets it
had applied, never with rewind's final state.

The peer's side is the Faust peer's fold over the first events of the log, exported with its
offsets as a bounded pass writes them; rewind's side is the real projector step folding into a real
LMDB store up to the time-travel point those offsets give (bench/peers/crosscheck.py); the last test
builds that state with rewind's time travel from a real topic, as the benchmark does. The runner's
``--peer-seconds`` parsing is checked here too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from bench.harness import bench_topics, produce
from bench.peers.crosscheck import (
    differences,
    load_export,
    load_offsets,
    points_at_offsets,
    rewind_export,
    rewind_export_at,
)
from bench.peers.run_peers import peer_budgets
from schemas.codec import decode
from tests.test_peers_fold import _events, _peer_fold, _rewind_state


def _bounded_export(path: Path, events: list[dict[str, object]], applied: int) -> Path:
    fold = _peer_fold().PeerFold({}, {}, {}, {})
    for event in events[:applied]:
        fold.apply(event)
    path.write_text(json.dumps({**fold.export(), "offsets": {"0": applied}}))
    return path


def test_a_bounded_pass_equals_rewind_at_its_offsets_only(tmp_path: Path) -> None:
    events = _events()
    export = _bounded_export(tmp_path / "peer.json", events, 3_500)

    offsets = load_offsets(export)
    assert offsets == {0: 3_500}
    points = points_at_offsets(offsets, {0: len(events)})
    assert points == {"events-p0000": 3_500}

    at_offsets = rewind_export(_rewind_state(tmp_path / "at", events[: points["events-p0000"]]))
    assert differences(at_offsets, load_export(export)) == []
    later = rewind_export(_rewind_state(tmp_path / "later", events[: points["events-p0000"] + 500]))
    assert differences(later, load_export(export)) != []
    final = rewind_export(_rewind_state(tmp_path / "final", events))
    assert differences(final, load_export(export)) != []


def test_an_export_of_a_full_pass_carries_no_offsets(tmp_path: Path) -> None:
    path = tmp_path / "peer.json"
    path.write_text('{"orders": {}, "positions": {}, "balances": {}}')
    assert load_offsets(path) is None


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ({0: 10}, "not comparable"),
        ({0: 10, 1: 5, 2: 1}, "not comparable"),
        ({0: -1, 1: 5}, "partition 0: -1 events applied"),
        ({0: 10, 1: 21}, "partition 1: 21 events applied, its log holds 20"),
    ],
)
def test_offsets_that_do_not_fit_the_log_are_refused(offsets: dict[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        points_at_offsets(offsets, {0: 10, 1: 20})


def test_offsets_at_the_log_start_and_end_are_points() -> None:
    assert points_at_offsets({1: 20, 0: 0}, {0: 10, 1: 20}) == {"events-p0000": 0, "events-p0001": 20}


def test_peer_seconds_for_every_peer_or_per_peer() -> None:
    assert peer_budgets("60") == {"kafka_streams": 60.0, "faust": 60.0}
    assert peer_budgets("faust=90") == {"faust": 90.0}
    assert peer_budgets("faust=90,kafka_streams=0") == {"faust": 90.0, "kafka_streams": None}
    for bad in ("spark=10", "faust=soon", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            peer_budgets(bad)


def _log_of(bootstrap: str, topic: str, end: int) -> list[dict[str, object]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "peers-bounded-test"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    events: list[dict[str, object]] = []
    try:
        while len(events) < end:
            message = consumer.poll(10.0)
            assert message is not None, f"{topic}: {len(events)} of {end} events read"
            assert message.error() is None, message.error()
            events.append(dict(decode(message.value())))
    finally:
        consumer.close()
    return events


def test_rewinds_time_travel_gives_the_state_at_a_bounded_peers_offsets(
    bootstrap: str, tmp_path: Path
) -> None:
    with bench_topics(bootstrap, tmp_path, 1) as settings:
        produced = produce(settings, 4_000, seed=3, accounts=40)
        end = produced.last_offsets[settings.events_topic][0] + 1
        export = _bounded_export(
            tmp_path / "peer.json", _log_of(bootstrap, settings.events_topic, end), 2_500
        )
        offsets = load_offsets(export)
        assert offsets is not None

        at_offsets = rewind_export_at(settings, tmp_path / "at", points_at_offsets(offsets, {0: end}))
        assert differences(at_offsets, load_export(export)) == []
        assert len(at_offsets["orders"]) > 300
        at_end = rewind_export_at(settings, tmp_path / "end", points_at_offsets({0: end}, {0: end}))
        assert differences(at_end, load_export(export)) != []
