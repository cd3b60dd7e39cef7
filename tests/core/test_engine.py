"""All limits of a request, decided together."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quotaguard import Concurrency, RollingWindow, TokenBucket
from quotaguard.core import engine

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
        assert statuses.specs == LIMITS
        assert statuses == slow_statuses  # the compiled evaluation matches the plain loop
        assert used == tuple(status.used for status in statuses)
        assert allowed == all(status.allowed for status in statuses)
        if not allowed:
            assert new_states == states
            assert engine.retry_after(statuses) > 0
        states = new_states


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
        assert fast == slow
        states = fast[1]
