"""The contract every backend honours: an audit trail of every change, and listings."""

from __future__ import annotations

import pytest

from quotaguard import Plan, RollingWindow, TokenBucket, UnknownPlanError


def plans() -> list[Plan]:
    return [
        Plan("free", [TokenBucket("burst", 5, "1/second"), RollingWindow("weekly", 100, "7 days")]),
        Plan("pro", [TokenBucket("burst", 50, "1/second"), RollingWindow("weekly", 900, "7 days")]),
        Plan("benchmark", [RollingWindow("bench", 10, "1 day")]),
    ]


def test_every_change_is_audited_newest_first(make_guard):
    guard = make_guard(plans(), default_plan="free")
    guard.assign("acme", "pro", actor="alice")
    guard.override("acme", "weekly", 5000, actor="alice")
    guard.revoke("acme", "Chargeback.", allow_scopes={"benchmark": "benchmark"}, actor="bob")
    guard.restore("acme", actor="bob")
    guard.set_shadow("acme", True)
    guard.reset("acme", ["burst"], actor="carol")
    trail = guard.audit("acme")
    assert [entry.action for entry in trail] == [
        "reset",
        "shadow",
        "restore",
        "revoke",
        "override",
        "assign",
    ]
    revoke = trail[3]
    assert revoke.actor == "bob"
    assert revoke.reason == "Chargeback."
    assert revoke.detail == "allow_scopes=benchmark:benchmark"
    assert trail[4].detail == "weekly=5000"
    assert trail[5].detail == "plan=pro"
    assert trail[0].detail == "limits=burst"
    assert trail[1].actor == "api"
    assert trail[0].at >= trail[-1].at > 0
    assert len(guard.audit("acme", 2)) == 2
    assert guard.audit("nobody") == []


def test_a_refused_change_is_not_audited(make_guard):
    guard = make_guard(plans(), default_plan="free")
    with pytest.raises(UnknownPlanError):
        guard.assign("acme", "platinum")
    assert guard.audit("acme") == []


def test_customers_lists_those_with_usage_or_settings(make_guard):
    guard = make_guard(plans(), default_plan="free")
    guard.acquire("user-a")
    guard.acquire("user-b", cost=3)
    guard.assign("user-c", "pro")
    assert set(guard.customers()) == {"user-a", "user-b", "user-c"}
    assert len(guard.customers(2)) == 2
