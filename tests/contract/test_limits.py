"""The contract every backend honours: limits, costs, all-or-nothing, retry-after."""

from __future__ import annotations

import math

import pytest

from quotaguard import (
    Concurrency,
    Outcome,
    Plan,
    RollingWindow,
    TokenBucket,
)

HOUR = 3600.0


def burst_plan(capacity: int = 5, refill: str = "1/second") -> Plan:
    return Plan("burst-only", [TokenBucket("burst", capacity, refill)])


def three_limits() -> Plan:
    return Plan(
        "pro",
        [
            TokenBucket("burst", 10, "1/second"),
            RollingWindow("five_hour", 100, "5 hours", "5 minutes", unit="tokens"),
            RollingWindow("weekly", 300, "7 days", "1 hour", unit="tokens"),
        ],
    )


def test_token_bucket_admits_capacity_then_refuses_with_exact_retry_after(make_guard, clock):
    guard = make_guard([burst_plan()], default_plan="burst-only")
    remaining = [guard.acquire("alice").limit("burst").remaining for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    refused = guard.acquire("alice")
    assert not refused.allowed
    assert refused.outcome is Outcome.DENIED
    assert refused.denied_by == ("burst",)
    assert refused.retry_after == pytest.approx(1.0)
    clock.advance(0.999)
    assert not guard.acquire("alice").allowed
    clock.advance(0.001)
    assert guard.acquire("alice").allowed


def test_token_bucket_refills_at_its_rate(make_guard, clock):
    guard = make_guard([burst_plan(capacity=60, refill="60/minute")], default_plan="burst-only")
    assert guard.acquire("bob", cost=60).allowed
    clock.advance(10)
    status = guard.usage("bob").limit("burst")
    assert status.remaining == 10
    assert status.reset_after == pytest.approx(50)
    assert guard.acquire("bob", cost=10).allowed
    assert not guard.acquire("bob", cost=1).allowed


def test_weighted_cost_waits_for_enough_refill(make_guard, clock):
    guard = make_guard([burst_plan(capacity=10, refill="2/second")], default_plan="burst-only")
    assert guard.acquire("carol", cost=10).allowed
    refused = guard.acquire("carol", cost=4)
    assert refused.retry_after == pytest.approx(2.0)
    clock.advance(2.0)
    assert guard.acquire("carol", cost=4).allowed


def test_cost_above_capacity_is_never_admitted(make_guard):
    guard = make_guard([burst_plan(capacity=5)], default_plan="burst-only")
    decision = guard.acquire("dave", cost=6)
    assert not decision.allowed
    assert decision.never
    assert decision.retry_after == math.inf
    assert "never" in decision.describe()
    assert guard.usage("dave").limit("burst").remaining == 5


def test_rolling_window_counts_within_the_window_and_frees_whole_buckets(make_guard, clock):
    plan = Plan("w", [RollingWindow("hourly", 10, "1 hour", "10 minutes")])
    guard = make_guard([plan], default_plan="w")
    start = clock.now()
    assert guard.acquire("erin", cost=4).allowed
    clock.advance(15 * 60)
    assert guard.acquire("erin", cost=6).allowed
    refused = guard.acquire("erin", cost=1)
    assert not refused.allowed
    # The first 4 units sit in the bucket [start, start+10min); it leaves the window once
    # the current bucket starts after start + 1 hour, i.e. at start + 70 minutes.
    assert refused.retry_after == pytest.approx(start + 70 * 60 - clock.now())
    clock.set(start + 70 * 60 - 1)
    assert not guard.acquire("erin", cost=1).allowed
    clock.set(start + 70 * 60)
    decision = guard.acquire("erin", cost=4)
    assert decision.allowed
    assert decision.limit("hourly").remaining == 0


def test_a_request_refused_by_one_limit_consumes_nothing_from_the_others(make_guard):
    guard = make_guard([three_limits()], default_plan="pro")
    assert guard.acquire("frank", cost=10).allowed  # burst now empty
    refused = guard.acquire("frank", cost=5)
    assert refused.denied_by == ("burst",)
    usage = guard.usage("frank")
    assert usage.limit("five_hour").used == 10
    assert usage.limit("weekly").used == 10
    # statuses of the limits that would have admitted show the state as it is
    assert refused.limit("weekly").allowed
    assert refused.limit("weekly").remaining == 290


def test_weekly_cap_refusal_leaves_the_burst_bucket_untouched(make_guard, clock):
    plan = Plan(
        "capped",
        [
            TokenBucket("burst", 100, "100/second"),
            RollingWindow("weekly", 150, "7 days", "1 hour"),
        ],
    )
    guard = make_guard([plan], default_plan="capped")
    assert guard.acquire("gina", cost=100).allowed
    clock.advance(1)
    assert guard.acquire("gina", cost=50).allowed
    clock.advance(1)
    refused = guard.acquire("gina", cost=10)
    assert refused.denied_by == ("weekly",)
    assert guard.usage("gina").limit("burst").remaining == 100
    assert refused.retry_after > 6 * 24 * HOUR


def test_retry_after_is_when_every_refusing_limit_admits(make_guard, clock):
    plan = Plan(
        "two",
        [
            TokenBucket("burst", 2, "1/minute"),
            RollingWindow("hourly", 3, "1 hour", "1 minute"),
        ],
    )
    guard = make_guard([plan], default_plan="two")
    assert guard.acquire("hank", cost=2).allowed
    clock.advance(60)
    assert guard.acquire("hank", cost=1).allowed
    refused = guard.acquire("hank", cost=1)
    assert set(refused.denied_by) == {"burst", "hourly"}
    assert refused.retry_after == max(s.retry_after for s in refused.limits)
    clock.advance(refused.retry_after)
    assert guard.acquire("hank", cost=1).allowed


def test_customers_do_not_share_state(make_guard):
    guard = make_guard([burst_plan(capacity=1)], default_plan="burst-only")
    assert guard.acquire("ivy").allowed
    assert guard.acquire("jack").allowed
    assert not guard.acquire("ivy").allowed


def test_zero_cost_peeks_without_consuming(make_guard):
    guard = make_guard([burst_plan(capacity=3)], default_plan="burst-only")
    decision = guard.acquire("kate", cost=0)
    assert decision.allowed
    assert decision.limit("burst").remaining == 3


def test_float_costs_are_counted_exactly(make_guard):
    plan = Plan("tokens", [RollingWindow("daily", 10, "1 day", "1 hour", unit="tokens")])
    guard = make_guard([plan], default_plan="tokens")
    assert guard.acquire("liam", cost=2.5).allowed
    assert guard.acquire("liam", cost=7.5).allowed
    assert not guard.acquire("liam", cost=0.5).allowed


def test_concurrency_slots_are_held_by_leases_only(make_guard, clock):
    plan = Plan("c", [Concurrency("in_flight", 2, lease_ttl=30)])
    guard = make_guard([plan], default_plan="c")
    first = guard.reserve("mia", cost=1)
    second = guard.reserve("mia", cost=1)
    assert first.allowed and second.allowed
    refused = guard.reserve("mia", cost=1)
    assert not refused.allowed
    assert refused.lease_id is None
    assert refused.decision.denied_by == ("in_flight",)
    assert refused.decision.retry_after == pytest.approx(30)
    assert not guard.acquire("mia").allowed  # acquire admits only while a slot is free
    first.settle()
    assert guard.acquire("mia").allowed
    assert guard.reserve("mia", cost=1).allowed


def test_an_unreleased_slot_frees_itself_after_its_ttl(make_guard, clock):
    plan = Plan("c", [Concurrency("in_flight", 1, lease_ttl=30)])
    guard = make_guard([plan], default_plan="c")
    assert guard.reserve("noah", cost=1).allowed
    clock.advance(29.9)
    assert not guard.reserve("noah", cost=1).allowed
    clock.advance(0.1)
    assert guard.reserve("noah", cost=1).allowed


def test_reserve_with_a_ttl_argument_overrides_the_default(make_guard, clock):
    plan = Plan("c", [Concurrency("in_flight", 1, lease_ttl=600)])
    guard = make_guard([plan], default_plan="c")
    assert guard.reserve("olga", cost=1, ttl=5).allowed
    clock.advance(5)
    assert guard.reserve("olga", cost=1).allowed
