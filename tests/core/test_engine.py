"""All limits of a request, decided together."""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from quotaguard import Concurrency, LimitStatus, Plan, RollingWindow, TokenBucket
from quotaguard.core import engine
from quotaguard.core.decision import MOST_SECONDS, as_statuses, whole_seconds_up

SECOND = 1_000_000
START = 1_767_225_600 * SECOND

LIMITS = (
    TokenBucket("burst", 10, "2/second"),
    RollingWindow("hour", 40, "1 hour", "5 minutes"),
    RollingWindow("day", 100, "1 day", "1 hour"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 120 * SECOND), st.integers(0, 15)), max_size=80))
def test_a_refusal_changes_no_state_and_an_admission_changes_every_limit(steps):
    states: list = [None] * len(LIMITS)
    now = START
    for gap, cost in steps:
        now += gap
        allowed, new_states, statuses, _ = engine.evaluate(LIMITS, states, now, cost)
        _, _, slow_statuses, _ = engine.evaluate_slowly(LIMITS, states, now, cost)
        used = statuses.used  # computed from the kept states, before the statuses exist
        levels = statuses.remaining_and_refill
        whole = statuses.remaining_and_refill_seconds
        slow_levels = slow_statuses.remaining_and_refill  # by kind, without a compiled one
        assert whole == slow_statuses.remaining_and_refill_seconds == _whole(statuses)
        assert statuses.specs == LIMITS
        assert statuses == slow_statuses  # the compiled evaluation matches the plain loop
        assert used == tuple(status.used for status in statuses)
        assert levels == slow_levels == _levels(statuses)
        assert statuses.remaining_and_refill == levels  # and once built, from the statuses
        assert allowed == all(status.allowed for status in statuses)
        if not allowed:
            assert new_states == states
            assert engine.retry_after(statuses) > 0
        states = new_states


def _levels(statuses: Sequence[LimitStatus]) -> tuple[tuple[int, float], ...]:
    return tuple((status.remaining, status.refill_after) for status in statuses)


def _whole(statuses: Sequence[LimitStatus]) -> tuple[int, ...]:
    """The header's numbers, from the built statuses: remaining >= 0, seconds rounded up."""
    values: list[int] = []
    for status in statuses:
        values += [max(status.remaining, 0), max(math.ceil(status.refill_after), 0)]
    return tuple(values)


def test_fresh_limits_show_their_whole_quota():
    _, _, statuses, _ = engine.evaluate(LIMITS, [None, None, None], START, 0)
    assert statuses.remaining_and_refill == ((10, 0.0), (40, 0.0), (100, 0.0))


def test_any_sequence_of_statuses_has_the_accessors():
    _, _, statuses, _ = engine.evaluate(LIMITS, [None, None, None], START, 3)
    built = tuple(statuses)
    assert as_statuses(statuses) is statuses
    wrapped = as_statuses(built)
    assert wrapped == built and wrapped.specs == LIMITS
    assert wrapped.used == statuses.used == (3, 3, 3)
    assert wrapped.remaining_and_refill == _levels(built)
    assert wrapped.remaining_and_refill_seconds == statuses.remaining_and_refill_seconds


def test_whole_seconds_round_up_and_stop_at_the_largest_header_integer():
    _, _, statuses, _ = engine.evaluate(LIMITS, [None, None, None], START, 10)
    whole = statuses.remaining_and_refill_seconds
    assert whole[:2] == (0, 1)  # 10 of a 2/second bucket spent: the next unit in 0.5 s
    never = LimitStatus(LIMITS[0], False, -3, 13.0, math.inf, math.inf, math.inf)
    assert as_statuses((never,)).remaining_and_refill_seconds == (0, MOST_SECONDS)


def test_evaluating_a_plan_leaves_it_as_it_was():
    plan = Plan("p", TOKEN_LIMITS)
    before = [repr(getattr(plan, field.name)) for field in attrs.fields(Plan)]
    states: list = [None] * len(TOKEN_LIMITS)
    for cost in (1, {"tokens": 5}):
        fast = engine.evaluate_plan(plan, states, START, cost, ("l", None))
        assert fast == engine.evaluate_slowly(TOKEN_LIMITS, states, START, cost, ("l", None))
        states = fast[1]
    assert [repr(getattr(plan, field.name)) for field in attrs.fields(Plan)] == before
    immutable = str | bool | tuple
    assert all(isinstance(getattr(plan, field.name), immutable) for field in attrs.fields(Plan))


def test_plans_with_other_limits_get_their_own_evaluation():
    small = Plan("p", [TokenBucket("burst", 1, "1/minute")])
    large = Plan("p", [TokenBucket("burst", 9, "9/minute")])
    for _ in range(2):  # the second time from the cache
        assert engine.evaluate_plan(small, [None], START, 2)[0] is False
        assert engine.evaluate_plan(large, [None], START, 2)[0] is True


def test_retry_after_takes_the_latest_refusing_limit():
    limits = (TokenBucket("burst", 5, "1/second"), RollingWindow("hour", 5, "1 hour", "1 minute"))
    _, states, _, _ = engine.evaluate(limits, [None, None], START, 5)
    allowed, _, statuses, _ = engine.evaluate(limits, states, START, 1)
    assert not allowed
    assert [s.retry_after for s in statuses] == [1.0, 3660.0]
    assert engine.retry_after(statuses) == 3660.0


def test_per_unit_costs_charge_requests_once():
    limits = (
        TokenBucket("rpm", 60, "60/minute"),
        RollingWindow("tpm", 1000, "1 minute", "1 second", unit="tokens"),
    )
    _, _, statuses, _ = engine.evaluate(limits, [None, None], START, {"tokens": 300})
    assert [s.remaining for s in statuses] == [59, 700]


def test_lease_ttl_defaults():
    assert engine.lease_ttl(LIMITS, None) == engine.DEFAULT_LEASE_TTL_US
    assert engine.lease_ttl((Concurrency("c", 1, lease_ttl=30),), None) == 30 * SECOND
    assert engine.lease_ttl(LIMITS, 5) == 5


TOKEN_LIMITS = (
    TokenBucket("rpm", 20, "20/minute"),
    RollingWindow("tpm", 5000, "1 minute", "1 second", unit="tokens"),
    Concurrency("slots", 3, lease_ttl=30),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20 * SECOND), st.integers(0, 900)), max_size=60))
def test_compiled_per_unit_evaluation_matches_the_plain_loop(steps):
    states: list = [None] * len(TOKEN_LIMITS)
    now = START
    for index, (gap, tokens) in enumerate(steps):
        now += gap
        lease = (f"lease-{index}", None) if index % 3 == 0 else None
        cost = {"tokens": tokens}
        fast = engine.evaluate(TOKEN_LIMITS, states, now, cost, lease)
        slow = engine.evaluate_slowly(TOKEN_LIMITS, states, now, cost, lease)
        levels = fast[2].remaining_and_refill  # a concurrency limit's too, before building
        whole = fast[2].remaining_and_refill_seconds
        assert fast == slow
        assert whole == slow[2].remaining_and_refill_seconds == _whole(fast[2])
        assert levels == slow[2].remaining_and_refill == _levels(fast[2])
        states = fast[1]


def test_whole_seconds_up_rounds_up_and_never_overflows_a_header_integer():
    assert [whole_seconds_up(x) for x in (-1.0, 0.0, 1e-9, 1.0, 1.5)] == [0, 0, 1, 1, 2]
    for unbounded in (1e300, math.inf, math.nan, float(MOST_SECONDS)):
        assert whole_seconds_up(unbounded) == MOST_SECONDS
