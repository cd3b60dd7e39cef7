"""One set of guard operations, two drivers: `Guard` blocks, `AsyncGuard` awaits.

Both drivers must give the same answers for the same calls, on memory and on a real
Redis; backend errors reach the operation (the failure policy) through either driver.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from quotaguard import (
    AsyncGuard,
    BackendUnavailable,
    Concurrency,
    ConfigurationError,
    CustomerMeta,
    Decision,
    Guard,
    LeaseError,
    MemoryBackend,
    Outcome,
    Plan,
    RollingWindow,
    TokenBucket,
)
from quotaguard.backends import backend_from_uri
from quotaguard.backends.redis import AsyncRedisBackend, RedisBackend
from quotaguard.core.request import Request
from quotaguard.guard.drivers import BackendCall, Operation, run, run_async
from quotaguard.testing import FakeClock
from tests import redis_support

PLANS = [
    Plan("free", [TokenBucket("burst", 3, "1/minute"), Concurrency("in_flight", 2)]),
    Plan("bench", [RollingWindow.from_rate("daily", "50/day", unit="tokens")]),
]

Step = tuple[str, tuple[Any, ...], dict[str, Any]]
SCRIPT: list[Step] = [
    ("acquire", ("a",), {}),
    ("acquire", ("a", 2), {}),
    ("acquire", ("a",), {}),  # denied: the burst is spent
    ("usage", ("a",), {}),
    ("assign", ("b", "bench"), {"actor": "ops"}),
    ("acquire", ("b", {"tokens": 40}), {}),
    ("acquire", ("b", {"tokens": 40}), {}),  # denied: the daily window
    ("override", ("b", "daily", 100), {}),
    ("acquire", ("b", {"tokens": 40}), {}),
    ("revoke", ("c", "abuse"), {"allow_scopes": {"bench": "bench"}}),
    ("acquire", ("c",), {}),  # revoked
    ("acquire", ("c", {"tokens": 1}), {"scope": "bench"}),
    ("restore", ("c",), {}),
    ("set_shadow", ("a", True), {}),
    ("acquire", ("a",), {}),  # shadow-denied
    ("reset", ("a", ["burst"]), {}),
    ("acquire", ("a",), {}),
    ("customer", ("b",), {}),
]


def _plain(result: Any) -> Any:
    """A result without what differs between runs: lease ids and timestamps."""
    if isinstance(result, Decision):
        limits = tuple((status.name, status.allowed, status.remaining) for status in result.limits)
        return (result.outcome, result.plan, result.denied_by, limits)
    if isinstance(result, CustomerMeta) and result.revocation is not None:
        return attrs.evolve(result, revocation=attrs.evolve(result.revocation, revoked_at=0.0))
    return result


def _sync_results(guard: Guard) -> list[Any]:
    results = [_plain(getattr(guard, name)(*args, **kwargs)) for name, args, kwargs in SCRIPT]
    lease = guard.reserve("d", 1)
    results.append((lease.allowed, _plain(lease.decision)))
    results.append((lease.settle(0).actual, lease.settle(5).already_settled))  # type: ignore[union-attr]
    results.append([entry.action for entry in guard.audit("b")])
    return results


async def _async_results(guard: AsyncGuard) -> list[Any]:
    results = [_plain(await getattr(guard, name)(*args, **kwargs)) for name, args, kwargs in SCRIPT]
    lease = await guard.reserve("d", 1)
    results.append((lease.allowed, _plain(lease.decision)))
    first, second = await lease.settle(0), await lease.settle(5)
    results.append((first.actual, second.already_settled))  # type: ignore[union-attr]
    results.append([entry.action for entry in await guard.audit("b")])
    return results


def test_both_drivers_answer_alike_on_memory() -> None:
    expected = _sync_results(Guard(PLANS, default_plan="free", clock=FakeClock()))
    got = asyncio.run(_async_results(AsyncGuard(PLANS, default_plan="free", clock=FakeClock())))
    assert got == expected
    outcomes = [result[0] for result in expected if isinstance(result, tuple) and result]
    assert {Outcome.DENIED, Outcome.REVOKED, Outcome.SHADOW_DENIED} <= set(outcomes)


@pytest.mark.skipif(not redis_support.available(), reason="redis-server is not installed")
def test_both_drivers_answer_alike_on_redis() -> None:
    sync_backend = RedisBackend(
        redis_support.sync_client("standalone"), prefix=redis_support.fresh_prefix()
    )
    with Guard(PLANS, sync_backend, default_plan="free", clock=FakeClock()) as guard:
        expected = _sync_results(guard)

    async def main() -> list[Any]:
        backend = AsyncRedisBackend(
            redis_support.async_client("standalone"), prefix=redis_support.fresh_prefix()
        )
        async with AsyncGuard(PLANS, backend, default_plan="free", clock=FakeClock()) as guard:
            assert not guard.decides_inline
            assert guard.acquire_nowait("x") is None
            return await _async_results(guard)

    assert asyncio.run(main()) == expected


class _Down(MemoryBackend):
    """A memory backend whose decisions fail as an unreachable store does."""

    def decide(self, catalogue: Any, request: Request) -> Decision:
        raise BackendUnavailable("down")


class _AsyncDown:
    """The asyncio backend that is always down."""

    name = "down"

    async def decide(self, catalogue: Any, request: Request) -> Decision:
        raise BackendUnavailable("down")


@pytest.mark.parametrize("failure", ["open", "closed"])
def test_a_backend_error_reaches_the_failure_policy_through_either_driver(failure: str) -> None:
    sync = Guard(PLANS, _Down(), default_plan="free", failure=failure)
    reserved = sync.reserve("a", 1)
    asynchronous = AsyncGuard(PLANS, _AsyncDown(), default_plan="free", failure=failure)  # type: ignore[arg-type]

    async def main() -> tuple[Decision, Decision]:
        lease = await asynchronous.reserve("a", 1)
        return await asynchronous.acquire("a"), lease.decision

    decided, async_reserved = asyncio.run(main())
    expected = Outcome.FAIL_OPEN if failure == "open" else Outcome.FAIL_CLOSED
    assert sync.acquire("a").outcome is expected
    assert reserved.decision.outcome is expected and reserved.lease_id is None
    assert decided.outcome is expected and async_reserved.outcome is expected


def test_an_error_the_operation_does_not_handle_is_raised_by_either_driver() -> None:
    guard = Guard(PLANS, default_plan="free")
    with pytest.raises(LeaseError):
        guard.settle("no-such-lease", 1)
    twin = AsyncGuard.sharing(guard)
    with pytest.raises(LeaseError):
        asyncio.run(twin.settle("no-such-lease", 1))


def _echo() -> Operation[list[Any]]:
    replies = []
    for value in (1, 2):
        replies.append((yield BackendCall("echo", (value,))))
    try:
        yield BackendCall("fail", ())
    except ValueError as error:
        replies.append(str(error))
    return replies


class _Echo:
    def echo(self, value: int) -> int:
        return value * 10

    def fail(self) -> None:
        raise ValueError("failed")


class _AsyncEcho:
    async def echo(self, value: int) -> int:
        return value * 10

    async def fail(self) -> None:
        raise ValueError("failed")


def test_the_drivers_send_replies_and_throw_errors_into_the_operation() -> None:
    assert run(_echo(), _Echo()) == [10, 20, "failed"]  # type: ignore[arg-type]
    assert asyncio.run(run_async(_echo(), _AsyncEcho())) == [10, 20, "failed"]  # type: ignore[arg-type]


def test_sharing_decides_against_the_same_state_and_settings() -> None:
    clock = FakeClock()
    observed: list[Decision] = []

    class Seen:
        def on_decision(self, decision: Decision, backend: str, elapsed: float) -> None:
            observed.append(decision)

        def on_backend_error(self, backend: str, error: BackendUnavailable) -> None: ...

    guard = Guard(
        PLANS, default_plan="free", clock=clock, shadow=False, observers=[Seen()], lease_ttl=7
    )
    twin = AsyncGuard.sharing(guard)
    assert twin.decides_inline and twin.catalogue is guard.catalogue
    assert (twin.clock, twin.failure, twin.lease_ttl_us) == (clock, "open", 7_000_000)
    guard.acquire("a", 2)
    decision = twin.acquire_nowait("a", 2)
    assert decision is not None and decision.outcome is Outcome.DENIED
    assert asyncio.run(twin.acquire("a")).allowed
    assert not guard.acquire("a").allowed
    assert len(observed) == 4


@pytest.mark.skipif(not redis_support.available(), reason="redis-server is not installed")
def test_only_a_backend_without_io_can_be_shared() -> None:
    url = f"{redis_support.standalone().url}?prefix={redis_support.fresh_prefix()}"
    guard = Guard(PLANS, backend_from_uri(url), default_plan="free")
    with guard, pytest.raises(ConfigurationError, match="block the event loop"):
        AsyncGuard.sharing(guard)


def test_the_guard_does_not_import_the_integrations() -> None:
    code = (
        "import sys, quotaguard, quotaguard.guard, quotaguard.lease;"
        "g = quotaguard.Guard([quotaguard.Plan('p', [])], default_plan='p');"
        "g.limit('c')(lambda c: c)('x');"
        "print(sorted(m for m in sys.modules if m.startswith('quotaguard.integrations')))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


@pytest.fixture
def holding() -> Iterator[Guard]:
    yield Guard([Plan("slots", [Concurrency("in_flight", 1)])], default_plan="slots")


def test_an_async_function_may_use_a_sync_guard_and_still_frees_its_slot(holding: Guard) -> None:
    @holding.limit()
    async def work(customer: str, fail: bool = False) -> int:
        remaining = holding.usage(customer).limit("in_flight").remaining
        if fail:
            raise ValueError("boom")
        return remaining

    assert asyncio.run(work("c")) == 0
    with pytest.raises(ValueError):
        asyncio.run(work("c", fail=True))
    assert holding.usage("c").limit("in_flight").remaining == 1


def test_an_async_function_with_a_sync_guard_is_refused_with_the_fallback() -> None:
    guard = Guard([Plan("one", [TokenBucket("burst", 1, "1/hour")])], default_plan="one")

    async def later(decision: Decision, customer: str) -> str:
        return f"later {decision.outcome.value}"

    @guard.limit(fallback=later)
    async def work(customer: str) -> str:
        return "done"

    assert asyncio.run(work("c")) == "done"
    assert asyncio.run(work("c")) == "later denied"
