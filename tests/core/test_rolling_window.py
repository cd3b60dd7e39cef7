"""Rolling window: the bucketed count against an exact event log."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quotaguard import RollingWindow
from quotaguard.core import rolling_window

SECOND = 1_000_000
WINDOW = 3600 * SECOND
GRANULARITY = 300 * SECOND
START = 1_767_225_600 * SECOND

steps = st.lists(
    st.tuples(st.integers(0, 900 * SECOND), st.integers(0, 50)), min_size=1, max_size=80
)


def exact(events: list[tuple[int, int]], since: int, until: int) -> int:
    """Units of the events in (since, until]."""
    return sum(cost for at, cost in events if since < at <= until)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_count_is_within_one_bucket_of_the_exact_window(steps):
    spec = RollingWindow("w", 10**9, WINDOW / SECOND, GRANULARITY / SECOND)
    state = None
    now = START
    events: list[tuple[int, int]] = []
    for gap, cost in steps:
        now += gap
        state, status, _ = rolling_window.check(spec, state, now, cost)
        assert status.allowed
        assert status == rolling_window.status(spec, state, now, True, 0.0)
        events.append((now, cost))
        # covers everything in the window, and nothing older than one bucket beyond it
        assert exact(events, now - WINDOW, now) <= status.used
        assert status.used <= exact(events, now - WINDOW - GRANULARITY, now)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(1, 200))
def test_no_span_of_one_window_ever_admits_more_than_the_quota(steps, quota):
    spec = RollingWindow("w", quota, WINDOW / SECOND, GRANULARITY / SECOND)
    state = None
    now = START
    admitted: list[tuple[int, int]] = []
    for gap, cost in steps:
        now += gap
        state, status, _ = rolling_window.check(spec, state, now, cost)
        if status.allowed:
            admitted.append((now, cost))
        for at, _ in admitted:
            assert exact(admitted, at - WINDOW, at) <= quota


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(1, 200), st.integers(1, 60))
def test_retry_after_is_exactly_when_the_cost_first_fits(steps, quota, cost):
    spec = RollingWindow("w", quota, WINDOW / SECOND, GRANULARITY / SECOND)
    state = None
    now = START
    for gap, step_cost in steps:
        now += gap
        state, _, _ = rolling_window.check(spec, state, now, step_cost)
    _, status, _ = rolling_window.check(spec, state, now, cost)
    if status.allowed or cost > quota:
        return
    wait = round(status.retry_after * SECOND)
    _, before, _ = rolling_window.check(spec, state, now + wait - 1, cost)
    _, after, _ = rolling_window.check(spec, state, now + wait, cost)
    assert not before.allowed
    assert after.allowed


@settings(max_examples=200, deadline=None)
@given(steps)
def test_state_stays_bounded_and_expires(steps):
    spec = RollingWindow("w", 10**9, WINDOW / SECOND, GRANULARITY / SECOND)
    state = None
    now = START
    expiry = 0.0
    for gap, cost in steps:
        now += gap
        state, _, expiry = rolling_window.check(spec, state, now, cost)
        assert state is None or len(state) <= 1 + 2 * (spec.buckets + 1)
    # once the state has expired it no longer changes any decision
    _, status, _ = rolling_window.check(spec, state, int(expiry), 0)
    assert status.used == 0


SECOND_US = 1_000_000


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 5, 10]),
    st.sampled_from([1, 2, 3, 5, 10, 30]),
    st.lists(st.tuples(st.integers(0, 3 * SECOND_US), st.integers(1, 5)), max_size=20),
)
def test_a_converted_window_counts_every_event_no_shorter_and_exactly_when_coarser(
    old_g, new_g, events
):
    from quotaguard.core.rolling_window import convert

    start = 1_767_225_600 * SECOND_US
    old = RollingWindow("w", 10**6, 60, old_g)
    new = RollingWindow("w", 10**6, 60, new_g)
    state = direct = None
    now = start
    for gap, cost in events:
        now += gap
        state = rolling_window.step(old, state, now, cost)[0]
        direct = rolling_window.step(new, direct, now, cost)[0]
    converted = convert(new, old.granularity_us, state, now)
    if state is None:
        assert converted is None
        return
    assert converted[0] == direct[0]  # the total is kept
    if new_g % old_g == 0:
        assert converted == direct  # exactly the new window's own buckets
    for later in range(now, now + 80 * SECOND_US, 7 * SECOND_US):
        assert rolling_window.used(new, converted, later) >= rolling_window.used(new, direct, later)
