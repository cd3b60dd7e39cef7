"""Token bucket (GCRA) against a continuous reference model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quotaguard import TokenBucket
from quotaguard.core import token_bucket

SECOND = 1_000_000
START = 1_767_225_600 * SECOND


class Reference:
    """Tokens as a real number: refill ``rate`` per second up to ``capacity``."""

    def __init__(self, capacity: int, per_second: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = float(capacity)
        self.at = START

    def take(self, now: int, cost: int) -> bool | None:
        tokens = min(self.capacity, self.tokens + (now - self.at) / SECOND * self.per_second)
        if abs(tokens - cost) < 1e-6:
            return None  # on the boundary: either answer is fine
        self.at = now
        self.tokens = tokens
        if tokens >= cost:
            self.tokens -= cost
            return True
        return False


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 100),
    st.sampled_from(["1/second", "7/second", "60/minute", "3/hour", "1000/day"]),
    st.lists(st.tuples(st.integers(0, 5 * SECOND), st.integers(0, 20)), max_size=60),
)
def test_gcra_admits_exactly_what_a_continuous_bucket_admits(capacity, refill, steps):
    spec = TokenBucket("b", capacity, refill)
    reference = Reference(capacity, spec.refill.amount / spec.refill.period_seconds)
    state = None
    now = START
    for gap, cost in steps:
        now += gap
        expected = reference.take(now, cost)
        new_state, status, _ = token_bucket.check(spec, state, now, cost)
        if expected is None:
            return
        assert status.allowed == expected
        if expected:
            # "remaining N" means N more units are admitted right now
            _, peeked, _ = token_bucket.check(spec, new_state, now, 0)
            assert peeked.remaining == status.remaining
            if status.remaining:
                assert token_bucket.check(spec, new_state, now, status.remaining)[1].allowed
        state = new_state
        assert 0 <= status.remaining <= capacity


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 50), st.integers(1, 60), st.integers(1, 50))
def test_retry_after_is_exactly_when_the_cost_first_fits(capacity, used, cost):
    spec = TokenBucket("b", capacity, "7/second")
    state, _, _ = token_bucket.check(spec, None, START, min(used, capacity))
    _, status, _ = token_bucket.check(spec, state, START, cost)
    if status.allowed or cost > capacity:
        return
    wait = round(status.retry_after * SECOND)  # a whole number of microseconds
    assert wait == status.retry_after * SECOND or abs(wait - status.retry_after * SECOND) < 1e-6
    assert not token_bucket.check(spec, state, START + wait - 1, cost)[1].allowed
    assert token_bucket.check(spec, state, START + wait, cost)[1].allowed


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 1000),
    st.sampled_from(["1/second", "3/second", "7/second", "2/3 seconds", "1000000/minute"]),
)
def test_a_full_bucket_admits_exactly_its_capacity_in_unit_calls(capacity, refill):
    spec = TokenBucket("b", capacity, refill)
    state = None
    for _ in range(capacity):
        state, status, _ = token_bucket.check(spec, state, START, 1)
        assert status.allowed
    assert not token_bucket.check(spec, state, START, 1)[1].allowed


def test_debt_from_a_settlement_delays_later_requests():
    spec = TokenBucket("b", 10, "1/second")
    state, _ = token_bucket.settle(spec, None, START, START, "lease", 25)
    _, status, _ = token_bucket.check(spec, state, START, 1)
    assert not status.allowed
    assert status.retry_after == 16
    assert status.remaining == 0
    assert status.used == 25


def test_a_refund_never_fills_the_bucket_beyond_full():
    spec = TokenBucket("b", 10, "1/second")
    state, _, _ = token_bucket.check(spec, None, START, 3)
    state, _ = token_bucket.settle(spec, state, START, START, "lease", -100)
    assert state is None
    _, status, _ = token_bucket.check(spec, state, START, 0)
    assert status.remaining == 10


def test_refill_after_is_the_time_to_the_next_whole_unit():
    spec = TokenBucket("b", 10, "2/second")
    state, status, _ = token_bucket.check(spec, None, START, 10)
    assert status.remaining == 0
    assert status.refill_after == 0.5
    assert status.reset_after == 5.0
    _, later, _ = token_bucket.check(spec, state, START + SECOND // 4, 0)
    assert later.refill_after == 0.25
