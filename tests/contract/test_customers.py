"""The contract every backend honours: leases, plans, overrides, revocation, shadow, input."""

from __future__ import annotations

import math

import pytest

from quotaguard import (
    Concurrency,
    InvalidRequestError,
    LeaseError,
    Outcome,
    Plan,
    RollingWindow,
    TokenBucket,
    UnknownLimitError,
    UnknownPlanError,
)


def llm_plans() -> list[Plan]:
    return [
        Plan(
            "free",
            [
                TokenBucket("burst", 5, "1/second"),
                RollingWindow("weekly", 1000, "7 days", "1 hour", unit="tokens"),
            ],
        ),
        Plan(
            "pro",
            [
                TokenBucket("burst", 50, "10/second"),
                RollingWindow("weekly", 100_000, "7 days", "1 hour", unit="tokens"),
                Concurrency("in_flight", 2, lease_ttl=60),
            ],
        ),
        Plan("benchmark", [RollingWindow("benchmark_daily", 50, "1 day", "1 hour")]),
        Plan("safety", [RollingWindow("safety_daily", 20, "1 day", "1 hour")]),
    ]


# -- reserve and settle ---------------------------------------------------------------


def test_settling_below_the_estimate_refunds_the_difference(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    lease = guard.reserve("ann", cost={"tokens": 400})
    assert lease.allowed
    assert guard.usage("ann").limit("weekly").used == 400
    assert guard.usage("ann").limit("burst").used == pytest.approx(1)
    settlement = lease.settle({"tokens": 150})
    assert settlement.delta == {"tokens": -250}
    assert not settlement.already_settled
    assert guard.usage("ann").limit("weekly").used == 150


def test_settling_above_the_estimate_charges_the_excess_as_debt(make_guard, clock):
    guard = make_guard(llm_plans(), default_plan="free")
    lease = guard.reserve("ben", cost={"tokens": 100})
    lease.settle({"tokens": 1300})  # 300 over the weekly quota
    weekly = guard.usage("ben").limit("weekly")
    assert weekly.used == 1300
    assert weekly.remaining == 0
    clock.advance(10)
    refused = guard.acquire("ben", cost=1)
    assert refused.denied_by == ("weekly",)
    assert 0 < refused.retry_after < math.inf


def test_settling_twice_is_a_no_op(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    lease = guard.reserve("cat", cost={"tokens": 100})
    first = guard.settle(lease.lease_id, {"tokens": 50})
    second = guard.settle(lease.lease_id, {"tokens": 900})
    assert not first.already_settled
    assert second.already_settled
    assert second.actual == {"tokens": 50}
    assert guard.usage("cat").limit("weekly").used == 50


def test_settle_releases_the_concurrency_slot(make_guard):
    guard = make_guard(llm_plans(), default_plan="pro")
    leases = [guard.reserve("dan", cost={"tokens": 10}) for _ in range(2)]
    assert not guard.reserve("dan", cost={"tokens": 10}).allowed
    leases[0].settle({"tokens": 12})
    assert guard.reserve("dan", cost={"tokens": 10}).allowed


def test_a_late_settlement_still_charges_after_the_slot_expired(make_guard, clock):
    guard = make_guard(llm_plans(), default_plan="pro")
    lease = guard.reserve("eve", cost={"tokens": 100})
    clock.advance(90)  # slot expired after 60 s, the record is kept for another 60 s
    assert guard.usage("eve").limit("in_flight").remaining == 2
    lease.settle({"tokens": 300})
    assert guard.usage("eve").limit("weekly").used == 300


def test_settling_an_unknown_or_long_expired_lease_raises(make_guard, clock):
    guard = make_guard(llm_plans(), default_plan="pro")
    with pytest.raises(LeaseError):
        guard.settle("no-such-lease", 1)
    lease = guard.reserve("fay", cost=1)
    clock.advance(121)
    with pytest.raises(LeaseError):
        lease.settle(1)


def test_a_refused_reservation_has_nothing_to_settle(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    lease = guard.reserve("gus", cost={"tokens": 5000})
    assert not lease.allowed
    assert lease.lease_id is None
    assert lease.settle(10) is None
    assert guard.usage("gus").limit("weekly").used == 0


def test_a_per_unit_cost_charges_requests_once_and_tokens_by_amount(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    decision = guard.acquire("ada", cost={"tokens": 250})
    assert decision.limit("burst").remaining == 4
    assert decision.limit("weekly").remaining == 750
    refused = guard.acquire("ada", cost={"tokens": 800})
    assert refused.denied_by == ("weekly",)
    assert "800 requested" in refused.describe()


# -- plans ----------------------------------------------------------------------------


def test_the_default_plan_applies_when_none_is_given(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    assert guard.acquire("hal").plan == "free"
    assert guard.acquire("hal", plan="pro").plan == "pro"


def test_an_assigned_plan_wins_over_the_requested_one(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    guard.assign("ida", "pro")
    assert guard.acquire("ida").plan == "pro"
    assert guard.acquire("ida", plan="free").plan == "pro"
    assert guard.customer("ida").plan == "pro"
    guard.assign("ida", None)
    assert guard.acquire("ida").plan == "free"


def test_usage_is_kept_across_a_plan_change(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    assert guard.acquire("jon", cost=3).allowed
    guard.assign("jon", "pro")
    assert guard.acquire("jon", cost=7).allowed
    assert guard.usage("jon").limit("weekly").used == 10
    guard.assign("jon", "benchmark")
    guard.acquire("jon", cost=1)
    guard.assign("jon", "free")
    assert guard.usage("jon").limit("weekly").used == 10


def test_an_unknown_plan_is_refused_and_changes_nothing(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    with pytest.raises(UnknownPlanError, match="'platinum'"):
        guard.acquire("kim", plan="platinum")
    with pytest.raises(UnknownPlanError):
        guard.assign("kim", "platinum")
    assert guard.customer("kim").plan is None
    assert guard.usage("kim").limit("burst").remaining == 5


def test_without_a_default_plan_a_plan_is_required(make_guard):
    guard = make_guard(llm_plans())
    with pytest.raises(UnknownPlanError, match="no default plan"):
        guard.acquire("lee")
    assert guard.acquire("lee", plan="free").allowed


def test_a_plan_without_limits_admits_everything(make_guard):
    guard = make_guard([Plan("internal", [])], default_plan="internal")
    decision = guard.acquire("ops", cost=10**9)
    assert decision.allowed
    assert decision.limits == ()


# -- overrides ------------------------------------------------------------------------


def test_a_quota_override_applies_to_one_customer_only(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    guard.override("max", "weekly", 5000)
    assert guard.acquire("max", cost={"tokens": 2000}).allowed
    assert not guard.acquire("ned", cost={"tokens": 2000}).allowed
    guard.override("max", "weekly", None)
    assert guard.usage("max").limit("weekly").quota == 1000


def test_a_rate_override_replaces_a_refill_rate(make_guard, clock):
    guard = make_guard(llm_plans(), default_plan="free")
    guard.override("oli", "burst", "5/minute")
    assert guard.acquire("oli", cost=5).allowed
    clock.advance(1)
    assert not guard.acquire("oli").allowed
    clock.advance(11)
    assert guard.acquire("oli").allowed


def test_overriding_a_limit_the_plan_lacks_is_refused(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    with pytest.raises(UnknownLimitError, match="in_flight"):
        guard.override("pam", "in_flight", 3)
    assert guard.customer("pam").overrides == ()


# -- revocation -----------------------------------------------------------------------


def test_revocation_stops_every_request_with_the_reason(make_guard):
    guard = make_guard(llm_plans(), default_plan="pro")
    guard.revoke("quin", "Payment failed; contact billing.")
    decision = guard.acquire("quin")
    assert not decision.allowed
    assert decision.outcome is Outcome.REVOKED
    assert decision.revoked
    assert decision.reason == "Payment failed; contact billing."
    assert not guard.reserve("quin", cost=1).allowed


def test_revocation_keeps_allowed_scopes_on_their_own_plans(make_guard):
    guard = make_guard(llm_plans(), default_plan="pro")
    guard.revoke(
        "rae",
        "Terms of service violation.",
        allow_scopes={"benchmark": "benchmark", "safety-eval": "safety"},
    )
    assert guard.acquire("rae").revoked
    assert guard.acquire("rae", scope="chat").revoked
    benchmark = guard.acquire("rae", scope="benchmark", cost=50)
    assert benchmark.allowed
    assert benchmark.plan == "benchmark"
    assert not guard.acquire("rae", scope="benchmark").allowed
    assert guard.acquire("rae", scope="safety-eval", cost=20).plan == "safety"
    guard.restore("rae")
    assert guard.acquire("rae").allowed


def test_revocation_is_enforced_even_in_shadow_mode(make_guard):
    guard = make_guard(llm_plans(), default_plan="pro", shadow=True)
    guard.revoke("sam", "Suspended.")
    assert guard.acquire("sam").revoked


def test_revoking_with_an_unknown_scope_plan_is_refused(make_guard):
    guard = make_guard(llm_plans(), default_plan="pro")
    with pytest.raises(UnknownPlanError):
        guard.revoke("tia", "x", allow_scopes={"benchmark": "nope"})
    assert guard.customer("tia").revocation is None


def test_usage_of_a_revoked_customer_still_shows_their_plan(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    guard.acquire("uma", cost=2)
    guard.revoke("uma", "Suspended.")
    usage = guard.usage("uma")
    assert usage.revocation is not None
    assert usage.plan == "free"
    assert usage.limit("weekly").used == 2


# -- shadow mode ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["guard", "plan", "customer"])
def test_shadow_mode_reports_but_never_blocks_and_consumes_nothing_extra(make_guard, where):
    plans = [Plan("tiny", [TokenBucket("burst", 1, "1/hour")], shadow=where == "plan")]
    guard = make_guard(plans, default_plan="tiny", shadow=where == "guard")
    if where == "customer":
        guard.set_shadow("val", True)
    assert guard.acquire("val").outcome is Outcome.ALLOWED
    shadowed = guard.acquire("val")
    assert shadowed.allowed
    assert shadowed.shadowed
    assert shadowed.outcome is Outcome.SHADOW_DENIED
    assert shadowed.denied_by == ("burst",)
    assert shadowed.retry_after == pytest.approx(3600)
    assert guard.usage("val").limit("burst").used == pytest.approx(1)


def test_a_customer_can_be_enforced_while_the_plan_is_in_shadow(make_guard):
    plans = [Plan("tiny", [TokenBucket("burst", 1, "1/hour")], shadow=True)]
    guard = make_guard(plans, default_plan="tiny")
    guard.set_shadow("wes", False)
    guard.acquire("wes")
    assert guard.acquire("wes").outcome is Outcome.DENIED


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cost", [-1, -0.5, math.nan, math.inf, True, "3", None, {"tokens": -1}, {"": 1}]
)
def test_a_bad_cost_is_refused_and_changes_nothing(make_guard, cost):
    guard = make_guard(llm_plans(), default_plan="free")
    with pytest.raises(InvalidRequestError, match="cost"):
        guard.acquire("xia", cost=cost)
    with pytest.raises(InvalidRequestError, match="cost"):
        guard.reserve("xia", cost=cost)
    assert guard.usage("xia").limit("burst").remaining == 5


@pytest.mark.parametrize("customer", ["", None, 42, b"bytes"])
def test_a_bad_customer_id_is_refused(make_guard, customer):
    guard = make_guard(llm_plans(), default_plan="free")
    with pytest.raises(InvalidRequestError, match="customer"):
        guard.acquire(customer)


def test_a_bad_actual_cost_leaves_the_lease_open(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    lease = guard.reserve("yan", cost={"tokens": 10})
    with pytest.raises(InvalidRequestError):
        lease.settle(-5)
    assert lease.settle({"tokens": 4}).actual == {"tokens": 4}


def test_a_bad_scope_is_refused(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    with pytest.raises(InvalidRequestError, match="scope"):
        guard.acquire("zed", scope="has spaces")


# -- reset ----------------------------------------------------------------------------


def test_reset_forgets_usage_of_the_named_limits_or_all(make_guard):
    guard = make_guard(llm_plans(), default_plan="free")
    guard.acquire("abe", cost=5)
    guard.reset("abe", ["burst"])
    usage = guard.usage("abe")
    assert usage.limit("burst").remaining == 5
    assert usage.limit("weekly").used == 5
    guard.reset("abe")
    assert guard.usage("abe").limit("weekly").used == 0


def test_unusual_customer_ids_are_kept_apart(make_guard):
    guard = make_guard([Plan("one", [TokenBucket("burst", 1, "1/hour")])], default_plan="one")
    ids = ["a:b", "a", "{a}", "a b", "ü", "x" * 10_000, "a}:{b", "😀"]
    for customer in ids:
        assert guard.acquire(customer).allowed, customer
    for customer in ids:
        assert not guard.acquire(customer).allowed, customer
