"""The pure lag status rules: every status, the edge cases between them, and group aggregation."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rewind.lag_status import (
    Commit,
    Sample,
    Status,
    consume_rate,
    explain,
    group_status,
    partition_status,
)

NOW = 1_000_000.0
WINDOW = 60.0


def status(samples: list[Sample], commits: list[Commit]) -> Status:
    return partition_status(samples, commits, now=NOW, window_seconds=WINDOW)


def sample(ago: float, committed: int, end: int, start: int = 0, waiting_ago: float | None = None) -> Sample:
    waiting = None if waiting_ago is None else NOW - waiting_ago
    return Sample(NOW - ago, start, end, committed, waiting_since=waiting)


def commits(*pairs: tuple[float, int]) -> list[Commit]:
    return [Commit(NOW - ago, offset) for ago, offset in pairs]


def test_caught_up_is_ok() -> None:
    assert status([sample(0, 100, 100)], commits((5, 100))) is Status.OK


def test_moving_consumer_with_steady_lag_is_ok() -> None:
    samples = [sample(40, 80, 100), sample(20, 90, 110), sample(0, 100, 120)]
    assert status(samples, commits((45, 78), (25, 88), (5, 99))) is Status.OK


def test_lag_growing_while_committing_is_warning() -> None:
    samples = [sample(40, 80, 90), sample(20, 85, 100), sample(0, 90, 120)]
    assert status(samples, commits((30, 82), (10, 88), (1, 90))) is Status.WARNING


def test_lag_that_shrinks_once_is_not_warning() -> None:
    samples = [sample(40, 80, 90), sample(20, 95, 100), sample(0, 100, 120)]
    assert status(samples, commits((30, 90), (1, 100))) is Status.OK


def test_warning_needs_two_samples() -> None:
    assert status([sample(0, 90, 120)], commits((30, 80), (1, 90))) is Status.OK


def test_committing_the_same_offset_with_waiting_work_is_stalled() -> None:
    samples = [sample(0, 50, 100, waiting_ago=120)]
    assert status(samples, commits((20, 50), (10, 50), (1, 50))) is Status.STALLED


def test_one_commit_matching_the_baseline_is_stalled() -> None:
    samples = [sample(0, 50, 100, waiting_ago=300)]
    assert status(samples, commits((90, 50), (10, 50))) is Status.STALLED


def test_a_sample_with_lag_before_the_commit_is_evidence_of_stalling() -> None:
    samples = [sample(30, 50, 60), sample(0, 50, 70)]
    assert status(samples, commits((10, 50))) is Status.STALLED


def test_idle_consumer_that_just_received_a_message_is_not_stalled() -> None:
    """It re-committed its position while caught up; the message arrived after that commit."""
    samples = [sample(0, 50, 51, waiting_ago=0.5)]
    assert status(samples, commits((20, 50), (10, 50), (2, 50))) is Status.OK


def test_a_single_commit_without_a_baseline_is_no_evidence_of_stalling() -> None:
    """That commit may be the one that moved the offset to 50, even with old work waiting."""
    assert status([sample(0, 50, 100)], commits((10, 50))) is Status.OK
    assert status([sample(0, 50, 100, waiting_ago=120)], commits((10, 50))) is Status.OK


def test_no_commit_in_the_window_with_old_lag_is_stopped() -> None:
    samples = [sample(0, 50, 100, waiting_ago=120)]
    assert status(samples, commits((90, 50))) is Status.STOPPED


def test_no_commit_at_all_with_lag_is_stopped() -> None:
    assert status([sample(0, 50, 100, waiting_ago=3600)], []) is Status.STOPPED


def test_lag_younger_than_the_window_is_not_yet_stopped() -> None:
    """The consumer has not had a whole window to pick the message up."""
    samples = [sample(0, 50, 51, waiting_ago=5)]
    assert status(samples, commits((600, 50))) is Status.OK


def test_without_a_timestamp_no_commit_and_lag_is_stopped() -> None:
    assert status([sample(0, 50, 100)], commits((90, 50))) is Status.STOPPED


def test_a_message_seen_arriving_in_the_window_is_not_stopped_whatever_its_timestamp() -> None:
    """Idle and caught up at 100 (its last commit long ago); a sample saw the log end at 100 30 s
    ago, so the record waiting now arrived since, whatever its timestamp says (a backfill with
    historical CreateTime, MirrorMaker keeping source timestamps, a producer clock behind)."""
    for waiting_ago in (3600.0, None):
        samples = [sample(30, 100, 100), sample(0, 100, 101, waiting_ago=waiting_ago)]
        assert status(samples, commits((600, 100))) is Status.OK
        assert status(samples, []) is Status.OK


def test_stopped_once_the_message_waited_a_whole_window_without_a_commit() -> None:
    for waiting_ago in (3600.0, None):
        samples = [
            sample(70, 100, 100),
            sample(30, 100, 101, waiting_ago=waiting_ago),
            sample(0, 100, 101, waiting_ago=waiting_ago),
        ]
        assert status(samples, commits((600, 100))) is Status.STOPPED


def test_a_committed_offset_that_changed_between_samples_is_a_commit_in_the_window() -> None:
    """Without commit times (no commit log), the samples themselves show the consumer committing."""
    samples = [sample(30, 40, 100, waiting_ago=600), sample(0, 60, 100, waiting_ago=600)]
    assert status(samples, []) is Status.OK


def test_an_idle_consumer_recommitting_its_offset_is_not_stalled_by_an_old_timestamp() -> None:
    """A Java consumer re-commits its position every 5 s while idle. The record waiting now arrived
    after the sample that saw it caught up; nothing shows it waiting at any of those commits."""
    for waiting_ago in (3600.0, None):
        samples = [sample(12, 100, 100), sample(0, 100, 101, waiting_ago=waiting_ago)]
        assert status(samples, commits((15, 100), (10, 100), (5, 100))) is Status.OK


def test_stuck_on_a_message_seen_arriving_in_the_window_is_stalled() -> None:
    """Caught up, then a sample saw a message waiting, and the offset was re-committed since: the
    sample, not the record's timestamp, dates the work."""
    samples = [sample(30, 100, 100), sample(20, 100, 101), sample(0, 100, 101, waiting_ago=3600)]
    assert status(samples, commits((15, 100), (10, 100), (5, 100))) is Status.STALLED


def test_a_timestamp_no_sample_contradicts_still_dates_the_work() -> None:
    """The record says it arrived 20 s ago, after the sample that saw the log end at 100: consistent,
    so it shows the work waiting at the two re-commits since."""
    samples = [sample(40, 100, 100), sample(0, 100, 101, waiting_ago=20)]
    assert status(samples, commits((50, 100), (10, 100), (5, 100))) is Status.STALLED


def test_no_commits_but_no_lag_is_ok() -> None:
    assert status([sample(0, 100, 100)], commits((600, 100))) is Status.OK


def test_a_commit_below_the_previous_one_is_rewound() -> None:
    samples = [sample(0, 40, 100, waiting_ago=10)]
    assert status(samples, commits((20, 90), (10, 40))) is Status.REWOUND


def test_a_rewind_against_the_baseline_is_rewound() -> None:
    samples = [sample(0, 40, 100, waiting_ago=10)]
    assert status(samples, commits((120, 90), (10, 40))) is Status.REWOUND


def test_a_rewind_seen_only_in_samples_is_rewound() -> None:
    samples = [sample(30, 90, 100), sample(0, 40, 100)]
    assert status(samples, commits((10, 40))) is Status.REWOUND


def test_rewound_then_caught_up_is_still_rewound_while_in_the_window() -> None:
    assert status([sample(0, 100, 100)], commits((20, 100), (10, 0), (1, 100))) is Status.REWOUND


def test_a_rewind_that_left_the_window_is_forgotten() -> None:
    samples = [sample(0, 100, 100)]
    assert status(samples, commits((300, 100), (200, 0), (100, 60), (1, 100))) is Status.OK


def test_committed_below_log_start_is_data_loss() -> None:
    samples = [sample(0, 10, 100, start=30, waiting_ago=500)]
    assert status(samples, commits((5, 10), (1, 10))) is Status.DATA_LOSS


def test_data_loss_outranks_stopped() -> None:
    assert status([sample(0, 10, 100, start=30, waiting_ago=500)], []) is Status.DATA_LOSS


def test_a_committed_offset_past_the_log_end_is_offset_beyond_log_end() -> None:
    """The topic was re-created (or truncated) under a group that had committed 500."""
    assert status([sample(0, 500, 5)], commits((30, 500))) is Status.OFFSET_BEYOND_LOG_END
    assert status([sample(0, 500, 0)], []) is Status.OFFSET_BEYOND_LOG_END


def test_beyond_the_log_end_while_the_offset_stays_after_the_log_grew_past_it() -> None:
    """A sample saw 500 past the log end; the log has grown past 500 since, and a consumer resuming
    at 500 skips offsets 5 to 499 of the new log unread."""
    samples = [sample(20, 500, 5), sample(0, 500, 700, waiting_ago=1)]
    assert status(samples, commits((30, 500))) is Status.OFFSET_BEYOND_LOG_END


def test_a_consumer_that_reset_its_offset_is_rewound_not_beyond_the_end() -> None:
    samples = [sample(20, 500, 5), sample(0, 0, 40, waiting_ago=1)]
    assert status(samples, commits((30, 500), (10, 0))) is Status.REWOUND


def test_committed_at_the_log_end_is_not_beyond_it() -> None:
    assert status([sample(0, 500, 500)], commits((30, 500))) is Status.OK


def test_every_status_says_what_it_means_and_every_problem_has_a_fix() -> None:
    for each in Status:
        assert explain(each).meaning
        assert (explain(each).fix is None) == (each is Status.OK)


def test_commits_stamped_after_now_count_as_in_the_window() -> None:
    samples = [sample(0, 50, 100, waiting_ago=120)]
    assert status(samples, [Commit(NOW + 0.2, 50), Commit(NOW - 1, 50)]) is Status.STALLED


def test_samples_outside_the_window_are_ignored() -> None:
    samples = [sample(400, 10, 20), sample(200, 15, 40), sample(0, 100, 100)]
    assert status(samples, commits((1, 100))) is Status.OK


def test_no_sample_in_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="no sample"):
        status([sample(120, 1, 2)], [])


def test_a_non_positive_window_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        partition_status([sample(0, 1, 2)], [], now=NOW, window_seconds=0)


def test_severity_order() -> None:
    order = [
        Status.OK,
        Status.WARNING,
        Status.REWOUND,
        Status.STALLED,
        Status.STOPPED,
        Status.DATA_LOSS,
        Status.OFFSET_BEYOND_LOG_END,
    ]
    assert sorted(Status) == order
    assert [int(s) for s in order] == list(range(7))


def test_group_status_is_the_worst_partition() -> None:
    assert group_status([Status.OK, Status.STALLED, Status.WARNING]) is Status.STALLED
    assert group_status([Status.REWOUND, Status.WARNING]) is Status.REWOUND
    assert group_status([Status.OK, Status.DATA_LOSS, Status.STOPPED]) is Status.DATA_LOSS
    assert group_status([]) is Status.OK


@given(st.lists(st.sampled_from(list(Status)), max_size=20))
def test_group_status_is_a_member_no_better_than_any(statuses: list[Status]) -> None:
    worst = group_status(statuses)
    assert all(worst >= s for s in statuses)
    assert worst in statuses or (not statuses and worst is Status.OK)


@given(
    st.lists(st.tuples(st.floats(0, 59), st.integers(0, 1000)), max_size=8),
    st.integers(0, 1000),
    st.integers(0, 2000),
)
def test_without_lag_only_ok_or_rewound(history: list[tuple[float, int]], committed: int, extra: int) -> None:
    """Lag 0 can never be STALLED, STOPPED or WARNING, whatever the commits."""
    samples = [Sample(NOW, 0, committed, committed)]
    got = status(samples, commits(*history))
    assert got in (Status.OK, Status.REWOUND)


def test_consume_rate_from_the_baseline() -> None:
    samples = [sample(0, 700, 800)]
    rate = consume_rate(samples, commits((90, 100), (30, 400)), now=NOW, window_seconds=WINDOW)
    assert rate == pytest.approx((700 - 100) / WINDOW)


def test_consume_rate_without_a_baseline_starts_at_the_oldest_observation() -> None:
    samples = [sample(0, 700, 800)]
    rate = consume_rate(samples, commits((40, 300), (10, 600)), now=NOW, window_seconds=WINDOW)
    assert rate == pytest.approx((700 - 300) / 40)


def test_consume_rate_is_unknown_with_one_point_or_across_a_rewind() -> None:
    assert consume_rate([sample(0, 7, 9)], [], now=NOW, window_seconds=WINDOW) is None
    rewound = consume_rate([sample(0, 5, 9)], commits((20, 50)), now=NOW, window_seconds=WINDOW)
    assert rewound is None


# Falling behind, told apart from the sawtooth of periodic commits

Production = Callable[[float], int]
"""Log end offset at t seconds."""


def steady(rate: float) -> Production:
    return lambda t: int(rate * t)


def swinging(t: float) -> int:
    """1,000 to 2,000 messages per second, the rate swinging over 37 s."""
    swing = 500 * 37 / (2 * math.pi)
    return int(1500 * t + swing * (1 - math.cos(2 * math.pi * t / 37)))


def watch(
    produced: Production,
    *,
    commit_every: float,
    sample_every: float,
    capacity: float | None = None,
    seconds: float = 600,
) -> list[Status]:
    """The status at each evaluation of a monitor that samples every ``sample_every`` s a consumer
    polling every 100 ms, reading all there is (or at most ``capacity`` messages per second since it
    started) and committing its position every ``commit_every`` s. Times are whole milliseconds."""

    def position(ms: int) -> int:
        poll = ms - ms % 100
        available = produced(poll / 1000)
        return available if capacity is None else min(available, int(capacity * poll / 1000))

    commit_ms, sample_ms = round(commit_every * 1000), round(sample_every * 1000)
    samples: list[Sample] = []
    made: list[Commit] = []
    statuses: list[Status] = []
    next_commit, ms = 0, 1000
    while ms < seconds * 1000:
        while next_commit <= ms:
            made.append(Commit(NOW + next_commit / 1000, position(next_commit)))
            next_commit += commit_ms
        at = NOW + ms / 1000
        samples.append(Sample(at, 0, produced(ms / 1000), made[-1].offset))
        statuses.append(partition_status(samples, made, now=at, window_seconds=WINDOW))
        ms += sample_ms
    return statuses


@pytest.mark.parametrize("sample_every", [5.2, 4.8, 5.0, 2.5, 7.3, 10.4])
def test_a_consumer_that_keeps_up_is_ok_whatever_the_sampling_cadence(sample_every: float) -> None:
    """It commits every 5 s at 1,000 to 2,000 messages per second. Sampled every 5.2 s (a 5 s sleep
    plus the evaluation), the commit sawtooth aliases into a rise longer than the window: sampling,
    not behaviour."""
    for produced in (steady(1500), swinging):
        statuses = watch(produced, commit_every=5.0, sample_every=sample_every)
        assert set(statuses) == {Status.OK}


@pytest.mark.parametrize("sample_every", [5.2, 2.5, 10.4])
def test_a_consumer_slower_than_its_producers_is_warning(sample_every: float) -> None:
    """It reads 1,200 of the 1,500 messages produced per second: once the growth outgrows one commit
    interval's reading, every evaluation says so."""
    statuses = watch(steady(1500), commit_every=5.0, sample_every=sample_every, capacity=1200)
    settled = statuses[math.ceil(WINDOW / sample_every) :]
    assert settled
    assert set(settled) == {Status.WARNING}


@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 40), st.booleans(), st.booleans()),
        min_size=2,
        max_size=50,
    )
)
def test_warning_only_when_the_true_lag_grew(seconds: list[tuple[int, int, bool, bool]]) -> None:
    """A consumer simulated second by second: messages produced, messages it reads, whether it
    commits its position, whether the monitor samples. WARNING is stated only if its true lag (log
    end minus its position, which no sample sees) was higher at a later sample than at an earlier
    one."""
    end = position = committed = 0
    samples: list[Sample] = []
    made: list[Commit] = []
    true_lags: list[int] = []
    for second, (produced, read, commit, sampled) in enumerate(seconds):
        end += produced
        position = min(end, position + read)
        at = NOW - len(seconds) + second
        if commit:
            committed = position
            made.append(Commit(at + 0.25, position))
        if sampled:
            samples.append(Sample(at + 0.5, 0, end, committed))
            true_lags.append(end - position)
    if not samples:
        return
    got = partition_status(samples, made, now=samples[-1].at, window_seconds=WINDOW)
    if got is Status.WARNING:
        assert any(later > earlier for i, earlier in enumerate(true_lags) for later in true_lags[i + 1 :])
