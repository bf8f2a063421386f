"""The pure lag status rules: every status, the edge cases between them, and group aggregation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rewind.lag_status import Commit, Sample, Status, consume_rate, group_status, partition_status

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
    order = [Status.OK, Status.WARNING, Status.REWOUND, Status.STALLED, Status.STOPPED, Status.DATA_LOSS]
    assert sorted(Status) == order


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
