"""The per-process limiters with an injected clock: exact counts, refill, window edges, and the
bound on memory."""

from __future__ import annotations

import pytest

from fastgw.plugins.ratelimit.algorithms import (
    BucketState,
    SlidingWindow,
    TokenBucket,
    WindowState,
    whole_seconds,
)


def hits(limiter: TokenBucket | SlidingWindow, now: float, n: int, key: str = "k") -> list[int]:
    return [limiter.hit(key, now) for _ in range(n)]


# -- token bucket: 3 per 3 s is a burst of 3, then one token a second ------------------------------


def test_bucket_admits_a_burst_of_limit_then_refuses() -> None:
    bucket = TokenBucket(3, 3.0)
    assert hits(bucket, 0.0, 5) == [2, 1, 0, -1, -1]
    assert bucket.retry_in("k", 0.0) == pytest.approx(1.0)


def test_bucket_refills_continuously_at_limit_per_window() -> None:
    bucket = TokenBucket(3, 3.0)
    hits(bucket, 0.0, 3)
    assert bucket.hit("k", 0.5) == -1  # half a token
    assert bucket.retry_in("k", 0.5) == pytest.approx(0.5)
    assert bucket.hit("k", 1.0) == 0  # one whole token, taken
    assert bucket.hit("k", 1.0) == -1
    assert hits(bucket, 3.0, 3) == [1, 0, -1]  # two more seconds, two more tokens


def test_bucket_never_holds_more_than_limit() -> None:
    bucket = TokenBucket(3, 3.0)
    bucket.hit("k", 0.0)
    assert hits(bucket, 1000.0, 4) == [2, 1, 0, -1]
    assert bucket.reset_in("k", 1000.0) == pytest.approx(3.0)  # empty: a whole window to refill


def test_bucket_keys_are_independent() -> None:
    bucket = TokenBucket(1, 60.0)
    assert [bucket.hit("a", 0.0), bucket.hit("b", 0.0), bucket.hit("a", 0.0)] == [0, 0, -1]


# -- sliding window: 10 per 10 s -------------------------------------------------------------------


def test_window_admits_exactly_limit_in_the_first_window() -> None:
    window = SlidingWindow(10, 10.0)
    assert hits(window, 1.0, 11) == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1]
    assert window.reset_in("k", 1.0) == pytest.approx(9.0)
    # full current window: admitted again once the next window's weight of these 10 allows one
    assert window.retry_in("k", 1.0) == pytest.approx(10.0)  # at t=11: 10 * 0.9 + 1 <= 10


def test_window_weighs_the_previous_window_by_what_is_left_of_it() -> None:
    window = SlidingWindow(10, 10.0)
    hits(window, 1.0, 10)
    assert window.hit("k", 11.0) == 0  # 10 * 0.9 = 9 used, one left
    assert window.hit("k", 11.0) == -1  # 9 + 1 = 10
    assert window.retry_in("k", 11.0) == pytest.approx(1.0)  # at t=12: 10 * 0.8 + 1 = 9
    assert window.hit("k", 12.0) == 0
    assert hits(window, 15.0, 4) == [2, 1, 0, -1]  # 10 * 0.5 + 2 = 7 used at t=15


def test_window_edges_belong_to_the_next_window() -> None:
    window = SlidingWindow(10, 10.0)
    assert hits(window, 9.999, 10)[-1] == 0
    assert window.hit("k", 10.0) == -1  # the whole previous window still weighs
    assert window.hit("k", 20.0) == 9  # window 2: window 1 was empty
    window.hit("k", 25.0)
    assert window.hit("k", 40.0) == 9  # two windows of silence forget everything


def test_window_retry_in_the_same_window_when_the_current_count_leaves_room() -> None:
    window = SlidingWindow(4, 10.0)
    hits(window, 9.0, 4)
    assert window.hit("k", 12.0) == -1  # 4 * 0.8 + 1 > 4
    assert window.hit("k", 13.0) == 0  # 4 * 0.7 + 1 <= 4
    assert window.hit("k", 13.0) == -1  # 2.8 + 1 + 1 > 4
    # 4 * (1 - x) + 1 + 1 <= 4 from x = 0.5: t = 15
    assert window.retry_in("k", 13.0) == pytest.approx(2.0)


# -- bounded memory --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [TokenBucket, SlidingWindow])
def test_idle_keys_are_dropped_when_room_is_needed(kind: type[TokenBucket | SlidingWindow]) -> None:
    limiter = kind(5, 10.0, max_keys=16)
    for i in range(16):
        limiter.hit(f"old{i}", 0.0)
    limiter.hit("new", 100.0)  # every old key is idle by now
    assert list(limiter.states) == ["new"]


@pytest.mark.parametrize("kind", [TokenBucket, SlidingWindow])
def test_busy_keys_are_dropped_oldest_first_when_nothing_is_idle(
    kind: type[TokenBucket | SlidingWindow],
) -> None:
    limiter = kind(5, 10.0, max_keys=16)
    for i in range(16):
        limiter.hit(f"k{i}", 0.0)
    limiter.hit("new", 0.0)
    assert len(limiter.states) == 13  # room for a quarter made at once, then the new key
    assert "k0" not in limiter.states and "k15" in limiter.states and "new" in limiter.states


def test_whole_seconds_round_up() -> None:
    assert [whole_seconds(0.0), whole_seconds(0.2), whole_seconds(1.0), whole_seconds(1.0001)] == [0, 1, 1, 2]


# -- admit: the hit and the reset for the headers from one lookup (what the compiled hook calls) --


@pytest.mark.parametrize("kind", [TokenBucket, SlidingWindow])
def test_admit_answers_as_hit_then_reset_in(kind: type[TokenBucket] | type[SlidingWindow]) -> None:
    """Exactly what a hit followed by reset_in answers, at every step: a new key, a busy one, one
    refilled or rolled over, one refused (no reset then), across window edges."""
    combined, separate = kind(3, 10.0), kind(3, 10.0)
    for now in (0.0, 0.0, 2.5, 4.0, 4.0, 4.0, 9.99, 10.0, 13.7, 13.7, 13.7, 13.7, 31.0, 31.25):
        remaining = separate.hit("k", now)
        expected = (remaining, separate.reset_in("k", now) if remaining >= 0 else -1.0)
        assert combined.admit_for_headers("k", now) == expected, now
    assert {k: fields(v) for k, v in combined.states.items()} == {
        k: fields(v) for k, v in separate.states.items()
    }


def fields(state: BucketState | WindowState) -> tuple[float, ...]:
    if isinstance(state, BucketState):
        return (state.tokens, state.updated)
    return (state.index, state.previous, state.current)
