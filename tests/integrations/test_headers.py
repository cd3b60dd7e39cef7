"""The ``RateLimit`` values read from an unbuilt decision equal those of its statuses."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from quotaguard import AsyncGuard, Concurrency, Guard, Plan, RollingWindow, TokenBucket
from quotaguard.core.decision import Decision
from quotaguard.integrations import APIKey, HeaderOptions, QuotaMiddleware
from quotaguard.integrations.headers import HeaderBuilder, format_ratelimit
from quotaguard.testing import FakeClock

PLAN = Plan(
    "p",
    [
        TokenBucket("burst", 5, "5/10 seconds"),
        RollingWindow.from_rate("hourly", "12/hour"),
        RollingWindow.from_rate("daily", "7/day"),
    ],
)
WITH_SLOTS = Plan("slots", [TokenBucket("burst", 5, "5/10 seconds"), Concurrency("slots", 2)])

steps = st.lists(
    st.tuples(st.integers(0, 4), st.sampled_from([0, 0.001, 0.4, 1, 7, 59, 600, 3599, 86_400])),
    min_size=1,
    max_size=40,
)


def _both(builder: HeaderBuilder, decision: Decision) -> tuple[object, object]:
    fast = builder(decision)  # statuses not built yet: read from what the decision kept
    assert tuple(decision.limits)  # build them
    if fast:
        assert fast[1] == (b"ratelimit", format_ratelimit(decision.limits).encode())
    return fast, builder(decision)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_fast_values_match_the_statuses(moves: list[tuple[int, float]]) -> None:
    clock = FakeClock()
    guard = Guard([PLAN, WITH_SLOTS], clock=clock, default_plan="p")
    builder = HeaderBuilder(HeaderOptions(), clock)
    for cost, wait in moves:
        clock.advance(wait)
        for plan in ("p", "slots"):
            decision = guard.acquire("c", cost, plan=plan)
            fast, slow = _both(builder, decision)
            assert fast == slow, (decision.outcome, fast, slow)


def test_fresh_limits_show_their_quota() -> None:
    guard = Guard([PLAN], clock=FakeClock(), default_plan="p")
    lines = HeaderBuilder(HeaderOptions())(guard.acquire("c", 0))
    assert lines[1] == (b"ratelimit", b'"burst";r=5;t=0, "hourly";r=12;t=0, "daily";r=7;t=0')


def test_a_decision_with_a_plain_tuple_of_statuses_gets_the_same_headers() -> None:
    clock = FakeClock()
    guard = Guard([PLAN, WITH_SLOTS], clock=clock, default_plan="p")
    builder = HeaderBuilder(HeaderOptions(legacy=True), clock)
    for plan in ("p", "slots", "p"):
        decision = guard.acquire("c", 2, plan=plan)
        plain = decision._replace(limits=tuple(decision.limits))
        assert builder(plain) == builder(decision) != []


def test_legacy_headers_still_build_the_statuses() -> None:
    clock = FakeClock()
    guard = Guard([PLAN], clock=clock, default_plan="p")
    builder = HeaderBuilder(HeaderOptions(legacy=True), clock)
    decision = guard.acquire("c", 2)
    lines = dict(builder(decision))
    assert lines[b"x-ratelimit-remaining"] == b"3"
    assert lines[b"ratelimit"] == format_ratelimit(decision.limits).encode()


def test_inline_decisions_only_on_an_in_process_backend() -> None:
    memory = AsyncGuard([PLAN], default_plan="p")
    decision = memory.acquire_nowait("c", 2)
    assert decision is not None and decision.allowed

    class Wrapped:
        name = "wrapped"

        async def decide(self, *args: object) -> Decision:
            raise NotImplementedError

    assert AsyncGuard([PLAN], Wrapped(), default_plan="p").acquire_nowait("c") is None  # type: ignore[arg-type]


def test_inline_decisions_still_notify_observers() -> None:
    seen: list[str] = []

    class Seen:
        def on_decision(self, decision: Decision, backend: str, elapsed: float) -> None:
            seen.append(decision.outcome.value)

        def on_backend_error(self, backend: str, error: object) -> None:
            pass

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    async def call(middleware: QuotaMiddleware) -> None:
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"x-api-key", b"k")]}

        async def receive() -> dict[str, object]:
            return {"type": "http.request"}

        async def send(message: object) -> None:
            return None

        await middleware(scope, receive, send)

    guard = AsyncGuard([PLAN], default_plan="p", observers=[Seen()])
    asyncio.run(call(QuotaMiddleware(app, guard, identify=APIKey(accept_any_key=True))))
    assert seen == ["allowed"]
