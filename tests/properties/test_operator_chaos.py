"""Operator chaos: traffic interleaved with every operator action, memory and Redis side by side.

A hypothesis state machine drives two guards on one FakeClock, one on memory and one on a
real Redis server, through random acquire / reserve / settle / assign / override /
revoke (with allowed scopes) / restore / reset / set_shadow / time steps, over plans that
reuse limit names across kinds and parameters. After every step:

- nothing but a documented `QuotaguardError` is raised, and both guards raise the same;
- memory and Redis decide alike (outcome, plan, retry-after, every limit's numbers);
- a small reference model of the operator's settings predicts the plan (or revocation)
  and the shadow outcome of every decision;
- the ``weekly`` window (one definition in every plan) never admits more than its quota
  within any hour, counting the admitted charges, refunds and settled debt.
"""

from __future__ import annotations

import math
import os
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from quotaguard import (
    Concurrency,
    CustomerMeta,
    Guard,
    MemoryBackend,
    Outcome,
    Plan,
    QuotaguardError,
    RollingWindow,
    Settlement,
    TokenBucket,
)
from quotaguard.testing import FakeClock
from tests import redis_support

HOUR = 3600.0
WEEKLY = RollingWindow("weekly", 100, "1 hour", "1 minute", unit="tokens")
PLANS = [
    Plan("free", [TokenBucket("burst", 5, "1/second"), WEEKLY]),
    Plan(
        "pro",
        [RollingWindow("burst", 8, "10 seconds", "1 second"), WEEKLY, Concurrency("slots", 2, 30)],
    ),
    Plan(
        "fast", [TokenBucket("burst", 3, "7/second"), WEEKLY, TokenBucket("slots", 4, "3/second")]
    ),
    Plan("bench", [Concurrency("burst", 1, lease_ttl=20), WEEKLY]),
    Plan("open", []),
]
PLAN_NAMES = [plan.name for plan in PLANS]
CUSTOMERS = ["c1", "c2"]
OVERRIDES = [
    3,
    "5/second",
    "20/minute",
    None,
    Concurrency("burst", 2, lease_ttl=15),
    TokenBucket("burst", 2, "2/second"),
    RollingWindow("burst", 4, 5, 1),
]

customers = st.sampled_from(CUSTOMERS)
costs = st.one_of(
    st.integers(0, 6),
    st.sampled_from([0.5, 2.25, 7.000000000000001]),
    st.builds(lambda n: {"tokens": n}, st.integers(0, 60)),
    st.builds(lambda n: {"tokens": n, "requests": 2}, st.integers(0, 30)),
)
requested = st.sampled_from([None, None, "free", "pro", "fast", "bench", "open"])
scopes = st.sampled_from([None, None, "bench"])

try:
    STANDALONE: redis_support.RedisServer | None = (
        redis_support.standalone() if redis_support.available() else None
    )
except Exception:  # pragma: no cover - a machine without a usable redis-server
    STANDALONE = None


def _charge(cost: Any) -> float:
    if isinstance(cost, dict):
        return float(cost.get("tokens", 0))
    return float(cost)


def _shape(value: Any) -> Any:
    """What the two backends must agree on, of a call's result."""
    if hasattr(value, "outcome"):  # a Decision
        return (
            value.allowed,
            value.outcome,
            value.plan,
            value.retry_after,
            tuple(
                (s.name, s.allowed, s.remaining, round(s.used, 6), s.retry_after)
                for s in value.limits
            ),
        )
    if hasattr(value, "limits") and hasattr(value, "meta"):  # a Usage
        return (value.plan, tuple((s.name, s.remaining, round(s.used, 6)) for s in value.limits))
    if isinstance(value, Settlement):
        return (value.estimate, value.actual, value.already_settled)
    if isinstance(value, CustomerMeta) and value.revocation is not None:
        return attrs.evolve(value, revocation=attrs.evolve(value.revocation, revoked_at=0))
    return value


class OperatorChaos(RuleBasedStateMachine):
    """The memory and Redis guards under every operator action, against a small model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.guards: list[Guard] = [Guard(PLANS, MemoryBackend(), default_plan="free")]
        if STANDALONE is not None:
            import redis

            from quotaguard.backends.redis import ClientSettings, RedisBackend

            client = redis.Redis(host=redis_support.HOST, port=STANDALONE.port, socket_timeout=5)
            # every answer from Redis itself: the remembered denials' documented staleness
            # (per-limit figures of the moment Redis refused) is tested in tests/redis
            exact = ClientSettings(max_staleness=0)
            backend = RedisBackend(client, prefix=redis_support.fresh_prefix(), settings=exact)
            self.guards.append(Guard(PLANS, backend, default_plan="free"))
        for guard in self.guards:
            guard.clock = self.clock  # one clock, passed explicitly on every call
            guard.failure = "closed"
        # the reference model of each customer's settings
        self.assigned: dict[str, str | None] = dict.fromkeys(CUSTOMERS)
        self.revoked: dict[str, bool] = dict.fromkeys(CUSTOMERS, False)
        self.scoped: dict[str, bool] = dict.fromkeys(CUSTOMERS, False)
        self.shadow: dict[str, bool | None] = dict.fromkeys(CUSTOMERS)
        # charges counted by the weekly window: [at seconds, amount] per customer
        self.weekly: dict[str, list[list[float]]] = {customer: [] for customer in CUSTOMERS}

    def teardown(self) -> None:
        for guard in self.guards:
            guard.close()

    # -- running one call on every guard ---------------------------------------------

    def both(self, call: Any) -> Any:
        """Run ``call(guard)`` on every guard; they must answer (or refuse) alike."""
        results = []
        for guard in self.guards:
            try:
                results.append(("ok", call(guard)))
            except QuotaguardError as error:
                results.append(("error", type(error)))
            except Exception as error:  # pragma: no cover - the bug this test hunts
                raise AssertionError(f"{guard.backend.name} raised {error!r}") from error
        shapes = [(kind, _shape(value)) for kind, value in results]
        assert all(shape == shapes[0] for shape in shapes), shapes
        return results

    def expected_plan(self, customer: str, plan: str | None, scope: str | None) -> str | None:
        if self.revoked[customer]:
            return "bench" if self.scoped[customer] and scope == "bench" else None
        return self.assigned[customer] or plan or "free"

    def check_decision(self, decision: Any, customer: str, plan: Any, scope: Any) -> None:
        expected = self.expected_plan(customer, plan, scope)
        assert decision.outcome not in (Outcome.FAIL_OPEN, Outcome.FAIL_CLOSED), decision
        if expected is None:
            assert decision.outcome is Outcome.REVOKED
            return
        assert decision.plan == expected
        if decision.outcome is Outcome.SHADOW_DENIED:
            assert self.shadow[customer] is not False
        if decision.outcome is Outcome.DENIED:
            assert not self.shadow[customer]
        if decision.retry_after and not decision.never:
            assert decision.retry_after * 1e6 == pytest.approx(round(decision.retry_after * 1e6))
        if decision.outcome is Outcome.ALLOWED and "weekly" in [s.name for s in decision.limits]:
            self.count_weekly(customer, _charge(decision.cost))

    def count_weekly(self, customer: str, amount: float) -> None:
        now = self.clock.now()
        self.weekly[customer].append([now, amount])
        window = [a for at, a in self.weekly[customer] if at > now - HOUR]
        # settled debt is counted too: admitting anything means the hour is within quota
        assert sum(window) <= WEEKLY.quota + 1e-6, window

    # -- traffic ---------------------------------------------------------------------

    @rule(customer=customers, cost=costs, plan=requested, scope=scopes)
    def acquire(self, customer: str, cost: Any, plan: Any, scope: Any) -> None:
        results = self.both(lambda g: g.acquire(customer, cost, plan=plan, scope=scope))
        if results[0][0] == "ok":
            self.check_decision(results[0][1], customer, plan, scope)

    @rule(customer=customers, cost=costs, plan=requested, scope=scopes)
    def reserve_and_leave(self, customer: str, cost: Any, plan: Any, scope: Any) -> None:
        """A lease never settled: its slot frees itself at its TTL."""
        results = self.both(lambda g: g.reserve(customer, cost, plan=plan, scope=scope).decision)
        if results[0][0] == "ok":
            self.check_decision(results[0][1], customer, plan, scope)

    @rule(customer=customers, estimate=costs, actual=costs, plan=requested, scope=scopes)
    def reserve_and_settle(
        self, customer: str, estimate: Any, actual: Any, plan: Any, scope: Any
    ) -> None:
        leases = []
        for guard in self.guards:
            leases.append(guard.reserve(customer, estimate, plan=plan, scope=scope))
        shapes = [_shape(lease.decision) for lease in leases]
        assert all(shape == shapes[0] for shape in shapes), shapes
        decision = leases[0].decision
        self.check_decision(decision, customer, plan, scope)
        self.clock.advance(0.25)
        settled = self.both(lambda g: leases[self.guards.index(g)].settle(actual))
        second = self.both(lambda g: leases[self.guards.index(g)].settle(actual))
        if decision.outcome is not Outcome.ALLOWED:
            assert settled[0][1] is None
            return
        assert not settled[0][1].already_settled and second[0][1].already_settled
        if "weekly" in [s.name for s in decision.limits]:
            delta = _charge(actual) - _charge(decision.cost)
            entry = self.weekly[customer][-1]
            if delta < 0:
                entry[1] += delta  # the refund leaves the reservation's bucket
            elif delta > 0:
                self.weekly[customer].append([self.clock.now(), delta])

    @rule(seconds=st.sampled_from([0.0, 0.1, 0.37, 1.0, 7.0, 61.0, 3599.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- operator actions ------------------------------------------------------------

    @rule(customer=customers, plan=st.sampled_from([None, *PLAN_NAMES]))
    def assign(self, customer: str, plan: str | None) -> None:
        self.both(lambda g: g.assign(customer, plan, actor="chaos"))
        self.assigned[customer] = plan

    @rule(customer=customers, value=st.sampled_from(OVERRIDES))
    def override(self, customer: str, value: Any) -> None:
        if isinstance(value, TokenBucket | RollingWindow | Concurrency):
            self.both(lambda g: g.override(customer, value))
        else:
            self.both(lambda g: g.override(customer, "burst", value))

    @rule(customer=customers, scoped=st.booleans())
    def revoke(self, customer: str, scoped: bool) -> None:
        allow = {"bench": "bench"} if scoped else None
        self.both(lambda g: g.revoke(customer, "chaos", allow_scopes=allow))
        self.revoked[customer], self.scoped[customer] = True, scoped

    @rule(customer=customers)
    def restore(self, customer: str) -> None:
        self.both(lambda g: g.restore(customer))
        self.revoked[customer] = False

    @rule(customer=customers, limits=st.sampled_from([None, ["burst"], ["weekly"], "slots"]))
    def reset(self, customer: str, limits: Any) -> None:
        self.both(lambda g: g.reset(customer, limits))
        if limits is None or (limits != "slots" and "weekly" in limits):
            self.weekly[customer] = []

    @rule(customer=customers, shadow=st.sampled_from([True, False, None]))
    def set_shadow(self, customer: str, shadow: bool | None) -> None:
        self.both(lambda g: g.set_shadow(customer, shadow))
        self.shadow[customer] = shadow

    @precondition(lambda self: len(self.guards) > 1)
    @invariant()
    def usage_agrees(self) -> None:
        for customer in CUSTOMERS:
            results = self.both(lambda g, customer=customer: g.usage(customer))
            if results[0][0] == "ok":
                for status in results[0][1].limits:
                    assert status.remaining <= status.quota
                    assert not math.isnan(status.used)


OperatorChaos.TestCase.settings = settings(
    max_examples=int(os.environ.get("QG_CHAOS_EXAMPLES", "30")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestOperatorChaos = OperatorChaos.TestCase
