"""Promises the issue found broken: exact retry-after, exact bursts, copied inputs, leases."""

from __future__ import annotations

import pytest

from quotaguard import Concurrency, InvalidRequestError, Plan, RollingWindow, TokenBucket


@pytest.mark.parametrize(
    "limits",
    [
        [TokenBucket("b", 5, "7/second")],
        [TokenBucket("b", 5, "3/second")],
        [TokenBucket("b", 5, "7/minute")],
        [TokenBucket("b", 3, "1000000/7 seconds")],
        [RollingWindow("w", 5, "7 seconds", "1 second")],
        [Concurrency("slots", 2, lease_ttl=1.3)],
        [TokenBucket("b", 4, "3/second"), RollingWindow("w", 6, "7 seconds", "1 second")],
    ],
    ids=["7/s", "3/s", "7/min", "fast", "window", "slots", "bucket+window"],
)
def test_waiting_exactly_retry_after_admits_the_same_request(make_guard, clock, limits):
    guard = make_guard([Plan("p", limits)], default_plan="p")
    for _ in range(4):
        while (lease := guard.reserve("c", 1)).allowed:
            pass
        assert lease.decision.retry_after > 0
        clock.advance(lease.decision.retry_after)
        assert guard.reserve("c", 1).allowed
        clock.advance(0.000137)  # off the refill grid


@pytest.mark.parametrize("refill", ["2000000/second", "1500000/second", "2000000/3 seconds"])
def test_a_full_bucket_admits_exactly_its_capacity_at_any_rate(make_guard, refill):
    guard = make_guard([Plan("p", [TokenBucket("b", 10, refill)])], default_plan="p")
    assert sum(guard.acquire("c").allowed for _ in range(60)) == 10


def test_a_reserved_cost_is_copied_when_kept(make_guard):
    plan = Plan("p", [RollingWindow("weekly", 100_000, "7 days", unit="tokens")])
    guard = make_guard([plan], default_plan="p")
    cost = {"tokens": 4000}
    lease = guard.reserve("a", cost)
    cost["tokens"] = 0
    actual = {"tokens": 1000}
    lease.settle(actual)
    actual["tokens"] = 99
    assert guard.usage("a").limit("weekly").used == 1000
    assert lease.settlement.actual == {"tokens": 1000}


def test_a_second_lease_settle_reports_already_settled_and_charges_nothing(make_guard):
    plan = Plan("p", [RollingWindow("weekly", 100_000, "7 days", unit="tokens")])
    guard = make_guard([plan], default_plan="p")
    lease = guard.reserve("a", {"tokens": 4000})
    first = lease.settle({"tokens": 1000})
    second = lease.settle({"tokens": 5000})
    assert not first.already_settled
    assert second.already_settled
    assert second.actual == {"tokens": 1000}  # the amount charged, the first time
    assert guard.usage("a").limit("weekly").used == 1000


@pytest.mark.parametrize("actual", [1e15, 2**53, 123456.789])
def test_a_huge_settlement_is_recorded_as_debt_on_every_backend(make_guard, actual):
    plans = [
        Plan(
            "p",
            [
                TokenBucket("b", 10, "1/second"),
                RollingWindow("w", 100, "1 day"),
                Concurrency("slots", 1, lease_ttl="142 years"),
            ],
        )
    ]
    guard = make_guard(plans, default_plan="p")
    settlement = guard.reserve("c", 1, ttl="142 years").settle(actual)
    assert not settlement.already_settled
    usage = guard.usage("c")
    assert usage.limit("w").used == actual + 0  # every unit counted
    assert usage.limit("b").used >= 10  # debt, capped at 2**52 microseconds of refill
    assert not guard.acquire("c").allowed


def test_the_issue_s_bad_inputs_get_named_errors_and_change_nothing(make_guard):
    plan = Plan("p", [TokenBucket("burst", 5, "1/second"), RollingWindow("w", 50, "1 hour")])
    guard = make_guard([plan], default_plan="p")
    assert guard.acquire("c", 2).allowed
    with pytest.raises(InvalidRequestError, match="got 1000000"):
        guard.acquire("c", 10**400)
    with pytest.raises(InvalidRequestError, match="'false'"):
        guard.set_shadow("c", "false")
    with pytest.raises(InvalidRequestError, match=r"\['p'\]"):
        guard.acquire("c", plan=["p"])
    with pytest.raises(InvalidRequestError, match="-1"):
        guard.customers(-1)
    assert guard.customer("c").shadow is None
    assert guard.usage("c").limit("burst").used == 2
    guard.reset("c", "burst")  # one name, not its letters
    assert guard.usage("c").limit("burst").used == 0
    assert guard.usage("c").limit("w").used == 2


def test_a_str_subclass_is_kept_as_a_plain_str(make_guard):
    class Name(str):
        pass

    guard = make_guard([Plan("p", [RollingWindow("w", 5, "1 hour")])], default_plan="p")
    decision = guard.acquire(Name("c"), scope=Name("s"), plan=Name("p"))
    assert type(decision.customer) is str and type(decision.plan) is str
    assert guard.usage("c").limit("w").used == 1
