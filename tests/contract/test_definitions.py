"""A limit name reused with another definition: the stored state is converted, never misread.

The rule (docs/concepts.md, "When a limit's definition changes"): a token bucket keeps
the units it has used, clamped to the new capacity; a rolling window keeps its counts;
concurrency slots stay held; another kind or another unit starts fresh.
"""

from __future__ import annotations

import pytest

from quotaguard import Concurrency, Outcome, Plan, RollingWindow, TokenBucket


def reused_plans() -> list[Plan]:
    return [
        Plan("free", [TokenBucket("burst", 10, "1/second")]),
        Plan("m", [RollingWindow("burst", 5, "1 minute")]),
        Plan("fast", [TokenBucket("burst", 4, "5/second")]),
        Plan("benchmark", [Concurrency("burst", 2)]),
    ]


def test_a_name_reused_with_another_kind_starts_fresh_instead_of_crashing(make_guard):
    guard = make_guard(reused_plans(), default_plan="free", failure="closed")
    assert guard.acquire("c").allowed
    guard.assign("c", "m")
    decision = guard.acquire("c")
    assert decision.outcome is Outcome.ALLOWED
    assert decision.limit("burst").used == 1  # a fresh window, then this call
    assert guard.usage("c").limit("burst").remaining == 4
    guard.override("c", Concurrency("burst", 3))
    assert guard.acquire("c").outcome is Outcome.ALLOWED
    assert guard.usage("c").limit("burst").remaining == 3


def test_a_revocation_whose_scope_plan_reuses_a_name_and_the_restore_after_it(make_guard):
    guard = make_guard(reused_plans(), default_plan="free", failure="closed")
    for _ in range(3):
        assert guard.acquire("c").allowed
    guard.revoke("c", "abuse", allow_scopes={"benchmark": "benchmark"})
    lease = guard.reserve("c", 1, scope="benchmark")
    assert lease.decision.outcome is Outcome.ALLOWED
    assert lease.decision.limit("burst").remaining == 1
    lease.settle()
    assert guard.acquire("c").outcome is Outcome.REVOKED
    guard.restore("c")
    decision = guard.acquire("c")
    assert decision.outcome is Outcome.ALLOWED
    # the bucket's own units waited beside the scope plan's slots: 3 + this call
    assert decision.limit("burst").used == pytest.approx(4)


def test_an_overridden_refill_keeps_the_units_used(make_guard, clock):
    guard = make_guard(reused_plans(), default_plan="free")
    assert guard.acquire("c").allowed
    guard.override("c", "burst", "5/second")
    status = guard.usage("c").limit("burst")
    assert (status.used, status.remaining, status.quota) == (pytest.approx(1), 9, 10)
    for _ in range(9):
        assert guard.acquire("c").allowed
    refused = guard.acquire("c")
    assert refused.retry_after == pytest.approx(0.2)  # as a fresh 5/second bucket
    clock.advance(refused.retry_after)
    assert guard.acquire("c").allowed


def test_moving_to_a_smaller_bucket_clamps_the_units_used_to_its_capacity(make_guard, clock):
    guard = make_guard(reused_plans(), default_plan="free")
    assert guard.acquire("c", 10).allowed
    guard.assign("c", "fast")
    status = guard.usage("c").limit("burst")
    assert (status.used, status.remaining) == (pytest.approx(4), 0)
    assert not guard.acquire("c").allowed  # the first decision under "fast" converts
    clock.advance(0.2)  # one unit at 5/second
    assert guard.acquire("c").allowed
    assert not guard.acquire("c").allowed


def test_a_window_keeps_its_counts_across_a_change_of_granularity(make_guard, clock):
    plans = [
        Plan("fine", [RollingWindow("weekly", 100, "7 days", "1 hour", unit="tokens")]),
        Plan("coarse", [RollingWindow("weekly", 80, "7 days", "1 day", unit="tokens")]),
    ]
    guard = make_guard(plans, default_plan="fine")
    assert guard.acquire("c", 30).allowed
    clock.advance(5 * 3600)
    assert guard.acquire("c", 20).allowed
    guard.assign("c", "coarse")
    assert guard.usage("c").limit("weekly").used == 50
    assert guard.acquire("c", 30).allowed
    assert not guard.acquire("c", 1).allowed
    guard.assign("c", "fine")
    assert guard.usage("c").limit("weekly").used == 80


def test_another_unit_starts_fresh(make_guard):
    plans = [
        Plan("requests", [RollingWindow("daily", 10, "1 day")]),
        Plan("tokens", [RollingWindow("daily", 1000, "1 day", unit="tokens")]),
    ]
    guard = make_guard(plans, default_plan="requests")
    assert guard.acquire("c", 10).allowed
    guard.assign("c", "tokens")
    assert guard.usage("c").limit("daily").used == 0


def test_the_old_definition_is_not_lost_by_a_refused_call_or_a_look(make_guard):
    guard = make_guard(reused_plans(), default_plan="free")
    assert guard.acquire("c", 3).allowed
    assert guard.usage("c", plan="m").limit("burst").used == 0  # a look converts nothing
    assert not guard.acquire("c", 6, plan="m").allowed  # refused: nothing stored
    assert guard.usage("c").limit("burst").used == pytest.approx(3)


def test_a_lowered_window_quota_shows_the_excess_until_it_rolls_off(make_guard, clock):
    guard = make_guard([Plan("p", [RollingWindow("daily", 10, "1 day")])], default_plan="p")
    assert guard.acquire("c", 8).allowed
    guard.override("c", "daily", 5)
    status = guard.usage("c").limit("daily")
    assert (status.used, status.remaining, status.quota) == (8, 0, 5)
    assert not guard.acquire("c").allowed
    clock.advance(24 * 3600 + 600)
    assert guard.acquire("c").allowed
