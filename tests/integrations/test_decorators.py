"""@guard.limit for sync and async functions, and leases as context managers."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest

from quotaguard import (
    AsyncGuard,
    BackendUnavailable,
    Concurrency,
    ConfigurationError,
    Decision,
    Guard,
    MemoryBackend,
    Outcome,
    Plan,
    QuotaExceeded,
    RollingWindow,
    TokenBucket,
)
from quotaguard.testing import FakeClock

PLANS = [
    Plan("free", [TokenBucket("burst", 2, "1/minute")]),
    Plan("tokens", [RollingWindow.from_rate("daily", "100/day", unit="tokens")]),
]
HOLDING = [Plan("slots", [Concurrency("in_flight", 1)])]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def guard(clock: FakeClock) -> Guard:
    return Guard(PLANS, default_plan="free", clock=clock)


def test_sync_function_by_argument_name(guard: Guard, clock: FakeClock) -> None:
    @guard.limit("customer_id")
    def answer(customer_id: str, question: str = "?") -> str:
        """Answers."""
        return f"{customer_id}: 42"

    assert answer("c1") == "c1: 42"
    assert answer(customer_id="c1", question="why") == "c1: 42"
    with pytest.raises(QuotaExceeded) as raised:
        answer("c1")
    decision = raised.value.decision
    assert decision.outcome is Outcome.DENIED
    assert decision.denied_by == ("burst",)
    assert decision.retry_after == pytest.approx(60)
    assert answer("c2") == "c2: 42"  # another customer
    clock.advance(60)
    assert answer("c1") == "c1: 42"


def test_signature_and_metadata_are_kept(guard: Guard) -> None:
    def original(customer: str, n: int, *, flag: bool = False) -> int:
        """Docs."""
        return n

    wrapped = guard.limit()(original)
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert wrapped.__name__ == "original" and wrapped.__doc__ == "Docs."
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]


def test_computed_cost_plan_and_callable_customer(guard: Guard) -> None:
    @guard.limit(
        lambda user, prompt: user["id"],
        cost=lambda user, prompt: {"tokens": len(prompt)},
        plan="tokens",
    )
    def complete(user: dict[str, str], prompt: str) -> int:
        return len(prompt)

    assert complete({"id": "u1"}, "x" * 60) == 60
    with pytest.raises(QuotaExceeded) as raised:
        complete({"id": "u1"}, "x" * 41)
    assert "Quota exceeded" in str(raised.value)
    assert complete({"id": "u1"}, "x" * 40) == 40
    assert guard.usage("u1", plan="tokens").limit("daily").used == 100


def test_fallback_instead_of_raising(guard: Guard) -> None:
    seen: list[Decision] = []

    def busy(decision: Decision, customer: str) -> str:
        seen.append(decision)
        return "busy"

    @guard.limit(fallback=busy)
    def work(customer: str) -> str:
        return "done"

    assert [work("c"), work("c"), work("c")] == ["done", "done", "busy"]
    assert seen[0].denied_by == ("burst",)


def test_methods(guard: Guard) -> None:
    class Service:
        def __init__(self) -> None:
            self.calls = 0

        @guard.limit("account")
        def call(self, account: str) -> int:
            self.calls += 1
            return self.calls

        @guard.limit(lambda self, account: account, scope="benchmark")
        async def acall(self, account: str) -> int:
            return 7

    service = Service()
    assert service.call("a") == 1
    assert service.call(account="a") == 2
    with pytest.raises(QuotaExceeded):
        service.call("a")
    assert asyncio.run(service.acall("b")) == 7


def test_async_function_with_async_guard(clock: FakeClock) -> None:
    guard = AsyncGuard(PLANS, default_plan="free", clock=clock)

    async def fallback(decision: Decision, customer: str) -> str:
        return f"retry in {decision.retry_after:.0f}s"

    @guard.limit(fallback=fallback)
    async def fetch(customer: str) -> str:
        await asyncio.sleep(0)
        return "ok"

    async def main() -> list[str]:
        return [await fetch("c") for _ in range(3)]

    assert asyncio.run(main()) == ["ok", "ok", "retry in 60s"]
    assert inspect.iscoroutinefunction(fetch)


def test_a_sync_function_cannot_use_an_async_guard(clock: FakeClock) -> None:
    guard = AsyncGuard(PLANS, default_plan="free", clock=clock)
    with pytest.raises(ConfigurationError, match="synchronous"):

        @guard.limit()
        def nope(customer: str) -> None: ...


def test_an_unknown_argument_name_fails_at_decoration(guard: Guard) -> None:
    with pytest.raises(ConfigurationError, match="no parameter 'user'"):

        @guard.limit("user")
        def nope(customer: str) -> None: ...


def test_concurrency_slots_are_held_while_running_and_freed_on_error(clock: FakeClock) -> None:
    guard = Guard(HOLDING, default_plan="slots", clock=clock)
    inside: list[int] = []

    @guard.limit()
    def work(customer: str, fail: bool = False) -> None:
        inside.append(guard.usage(customer).limit("in_flight").remaining)
        with pytest.raises(QuotaExceeded):
            nested(customer)
        if fail:
            raise ValueError("boom")

    @guard.limit()
    def nested(customer: str) -> None: ...

    work("c")
    with pytest.raises(ValueError):
        work("c", fail=True)
    assert inside == [0, 0]
    assert guard.usage("c").limit("in_flight").remaining == 1


def test_async_concurrency_slots_are_freed_on_cancellation(clock: FakeClock) -> None:
    guard = AsyncGuard(HOLDING, default_plan="slots", clock=clock)
    started = asyncio.Event()

    @guard.limit()
    async def work(customer: str) -> None:
        started.set()
        await asyncio.Event().wait()

    async def main() -> int:
        task = asyncio.create_task(work("c"))
        await started.wait()
        assert (await guard.usage("c")).limit("in_flight").remaining == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return (await guard.usage("c")).limit("in_flight").remaining

    assert asyncio.run(main()) == 1


def test_lease_exit_policies(clock: FakeClock) -> None:
    guard = Guard(PLANS + HOLDING, default_plan="tokens", clock=clock)
    with guard.reserve("c", {"tokens": 30}) as lease:
        pass
    assert lease.settled and guard.usage("c").limit("daily").used == 30
    with pytest.raises(RuntimeError), guard.reserve("c", {"tokens": 30}).policy(on_error="refund"):
        raise RuntimeError
    assert guard.usage("c").limit("daily").used == 30
    with guard.reserve("c", {"tokens": 30}).policy(on_exit="refund"):
        pass
    assert guard.usage("c").limit("daily").used == 30
    with guard.reserve("c", {"tokens": 30}) as lease:
        lease.settle({"tokens": 5})
    assert guard.usage("c").limit("daily").used == 35
    with pytest.raises(ConfigurationError):
        guard.reserve("c", 1).policy(on_exit="free")  # type: ignore[arg-type]
    # an exception inside releases the slot
    with pytest.raises(KeyError), guard.reserve("s", 1, plan="slots"):
        raise KeyError
    assert guard.usage("s", plan="slots").limit("in_flight").remaining == 1
    # refused on entry
    with guard.reserve("s", 1, plan="slots"), pytest.raises(QuotaExceeded):
        guard.reserve("s", 1, plan="slots").__enter__()


def test_async_lease_exit_policy(clock: FakeClock) -> None:
    guard = AsyncGuard(HOLDING, default_plan="slots", clock=clock)

    async def main() -> int:
        with pytest.raises(RuntimeError):
            async with (await guard.reserve("c", 1)).policy(on_error="refund"):
                raise RuntimeError
        return (await guard.usage("c")).limit("in_flight").remaining

    assert asyncio.run(main()) == 1


class _FlakySettle(MemoryBackend):
    def settle(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("redis went away")


def test_a_failing_settle_on_exit_is_logged_not_raised(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    guard = Guard(HOLDING, _FlakySettle(clock=clock), default_plan="slots", clock=clock)
    with caplog.at_level(logging.WARNING, logger="quotaguard"), guard.reserve("c", 1):
        pass
    assert "could not settle lease" in caplog.text
