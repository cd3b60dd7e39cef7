"""Hypothesis: random operation sequences give exactly equal results on Redis and memory."""

from __future__ import annotations

import os
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotaguard import (
    Concurrency,
    CustomerMeta,
    Guard,
    MemoryBackend,
    Plan,
    QuotaguardError,
    Revocation,
    RollingWindow,
    TokenBucket,
)
from quotaguard.backends.redis import ClientSettings, RedisBackend
from quotaguard.testing import FakeClock
from tests import redis_support

PLANS = [
    Plan(
        "a",
        [
            TokenBucket("burst", 5, "1/second"),
            RollingWindow("win", 20, 10, 2),
            TokenBucket("slow", 3, "7/minute"),
        ],
    ),
    Plan(
        "b",
        [
            Concurrency("slots", 2, lease_ttl=30),
            RollingWindow("tok", 1000, 3600, 600, unit="tokens"),
            TokenBucket("burst", 10, "3/second"),
            RollingWindow.from_rate("weekly", "100/week"),
        ],
    ),
    Plan("c", []),
    Plan("shadowy", [RollingWindow("win", 3, 60)], shadow=True),
]
CUSTOMERS = ["alice", "{b}:x y", "üüü", "a" * 300]

costs = st.one_of(
    st.integers(0, 12),
    st.sampled_from([0.1, 0.25, 2.5, 1e-3, 7.000000000000001, 19.99]),
    st.builds(lambda n: {"tokens": n}, st.integers(0, 400)),
    st.builds(lambda n: {"tokens": n, "requests": 2}, st.integers(0, 50)),
)
plans = st.sampled_from([None, None, "b", "c", "shadowy"])
customers = st.integers(0, len(CUSTOMERS) - 1)
operations = st.one_of(
    st.tuples(st.just("acquire"), customers, costs, plans, st.sampled_from([None, "bench"])),
    st.tuples(st.just("reserve"), customers, costs, plans, st.sampled_from([None, 5, 40])),
    st.tuples(st.just("settle"), st.integers(0, 20), costs),
    st.tuples(
        st.just("advance"),
        st.sampled_from([0, 1, 999, 1000, 250_000, 1_000_000, 1_999_999, 7e6, 3.6e9, 6e10]),
    ),
    st.tuples(st.just("usage"), customers, plans, st.sampled_from([None, "bench"])),
    st.tuples(st.just("assign"), customers, st.sampled_from([None, "a", "b", "c"])),
    st.tuples(
        st.just("override"), customers, st.sampled_from(["win", "burst", "tok"]), st.integers(1, 30)
    ),
    st.tuples(st.just("revoke"), customers),
    st.tuples(st.just("restore"), customers),
    st.tuples(st.just("shadow"), customers, st.sampled_from([None, True, False])),
    st.tuples(st.just("reset"), customers, st.sampled_from([None, ("win",), ("burst", "tok")])),
)


def _outcome(guard: Guard, leases: list[Any], op: tuple[Any, ...]) -> Any:
    try:
        result = _apply(guard, leases, op)
    except QuotaguardError as error:
        return type(error)
    if isinstance(result, CustomerMeta) and result.revocation is not None:
        # each guard stamps its own revocation time
        return attrs.evolve(
            result, revocation=Revocation("abuse", dict(result.revocation.allow_scopes), 0.0)
        )
    return result


def _apply(guard: Guard, leases: list[Any], op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "acquire":
        return guard.acquire(CUSTOMERS[op[1]], op[2], plan=op[3], scope=op[4])
    if kind == "reserve":
        lease = guard.reserve(CUSTOMERS[op[1]], op[2], plan=op[3], ttl=op[4])
        leases.append(lease)
        return lease.decision
    if kind == "settle":
        if not leases:
            return None
        lease = leases[op[1] % len(leases)]
        if lease.lease_id is None:
            return None
        return guard.settle(lease.lease_id, op[2])
    if kind == "usage":
        usage = guard.usage(CUSTOMERS[op[1]], plan=op[2], scope=op[3])
        return usage.plan, usage.limits
    if kind == "assign":
        return guard.assign(CUSTOMERS[op[1]], op[2])
    if kind == "override":
        return guard.override(CUSTOMERS[op[1]], op[2], op[3])
    if kind == "revoke":
        meta = guard.revoke(CUSTOMERS[op[1]], "abuse", allow_scopes={"bench": "c"})
        return meta.plan, meta.overrides, meta.revocation.allow_scopes  # type: ignore[union-attr]
    if kind == "restore":
        return guard.restore(CUSTOMERS[op[1]])
    if kind == "shadow":
        return guard.set_shadow(CUSTOMERS[op[1]], op[2])
    if kind == "reset":
        return guard.reset(CUSTOMERS[op[1]], op[2])
    raise AssertionError(op)


@pytest.mark.parametrize("coalesce", [True, False])
@settings(
    max_examples=int(os.environ.get("QG_DIFF_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(operations, min_size=1, max_size=40))
def test_redis_decides_exactly_like_memory(
    server: Any, coalesce: bool, ops: list[tuple[Any, ...]]
) -> None:
    """One operation at a time: with coalescing on, every decision is a batch of one."""
    clock = FakeClock()
    memory = Guard(PLANS, MemoryBackend(clock=clock), default_plan="a", clock=clock)
    client = redis_support.sync_client("standalone")
    redis_guard = Guard(
        PLANS,
        RedisBackend(
            client,
            prefix=redis_support.fresh_prefix(),
            settings=ClientSettings(coalesce=coalesce),
        ),
        default_plan="a",
        clock=clock,
    )
    memory_leases: list[Any] = []
    redis_leases: list[Any] = []
    try:
        for op in ops:
            if op[0] == "advance":
                clock.advance(op[1] / 1e6)
                continue
            expected = _outcome(memory, memory_leases, op)
            actual = _outcome(redis_guard, redis_leases, op)
            if op[0] == "settle" and hasattr(expected, "lease_id"):
                expected = (expected.estimate, expected.actual, expected.already_settled)
                actual = (actual.estimate, actual.actual, actual.already_settled)
            assert actual == expected, op
    finally:
        redis_guard.close()
