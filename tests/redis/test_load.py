"""Bursts far beyond the connection count, on the default URI: the calls wait for a turn
within their budget, and exactly the quota is admitted (no fail-open)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from quotaguard import AsyncGuard, Guard, Outcome, Plan, RollingWindow
from quotaguard.backends.redis import DEFAULT_TIMEOUT, redis_backend_from_uri
from tests import redis_support

pytestmark = pytest.mark.slow

QUOTA = Plan("q", [RollingWindow("calls", 100, 3600)])


def _uri(kind: str, coalesce: bool = True) -> str:
    server = redis_support.standalone() if kind == "standalone" else redis_support.cluster()
    separator = "&" if "?" in server.url else "?"
    return f"{server.url}{separator}prefix={redis_support.fresh_prefix()}&coalesce={int(coalesce)}"


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_a_thousand_tasks_admit_exactly_the_quota(kind: str, coalesce: bool) -> None:
    uri = _uri(kind, coalesce)

    async def call(guard: AsyncGuard) -> tuple[Outcome, float]:
        started = time.monotonic()
        decision = await guard.acquire("burst")
        return decision.outcome, time.monotonic() - started

    async def main() -> list[tuple[Outcome, float]]:
        guard = AsyncGuard([QUOTA], uri, default_plan="q")
        # a process that has been serving has its connections open already
        await asyncio.gather(*(guard.acquire("warm-up") for _ in range(50)))
        results = await asyncio.gather(*(call(guard) for _ in range(1000)))
        await guard.close()
        return results

    results = redis_support.run(main())
    outcomes = Counter(outcome for outcome, _ in results)
    slowest = max(elapsed for _, elapsed in results)
    print(f"{kind}, coalesce={coalesce}: 1000 tasks {dict(outcomes)}, slowest call {slowest:.3f} s")
    assert outcomes == {Outcome.ALLOWED: 100, Outcome.DENIED: 900}
    assert slowest < DEFAULT_TIMEOUT * 2


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_three_hundred_threads_admit_exactly_the_quota(kind: str, coalesce: bool) -> None:
    guard = Guard([QUOTA], redis_backend_from_uri(_uri(kind, coalesce)), default_plan="q")
    guard.acquire("warm-up")

    def call(_: Any) -> tuple[Outcome, float]:
        started = time.monotonic()
        decision = guard.acquire("burst", 1)
        return decision.outcome, time.monotonic() - started

    with ThreadPoolExecutor(300) as pool:
        results = list(pool.map(call, range(600)))
    guard.close()
    outcomes = Counter(outcome for outcome, _ in results)
    slowest = max(elapsed for _, elapsed in results)
    print(
        f"{kind}, coalesce={coalesce}: 300 threads {dict(outcomes)}, slowest call {slowest:.3f} s"
    )
    assert outcomes == {Outcome.ALLOWED: 100, Outcome.DENIED: 500}
    assert slowest < DEFAULT_TIMEOUT * 2


def test_a_full_gate_is_backend_unavailable_never_an_admission() -> None:
    """With one connection and a budget too short to wait for it, the waiting calls
    follow the failure policy; none is admitted by accident under fail-closed."""
    uri = _uri("standalone")

    async def main() -> Counter[Outcome]:
        backend = redis_backend_from_uri(uri, asyncio=True, max_connections=1, timeout=0.001)
        guard = AsyncGuard([QUOTA], backend, default_plan="q", failure="closed")
        outcomes = await asyncio.gather(*(guard.acquire("c") for _ in range(200)))
        await guard.close()
        return Counter(decision.outcome for decision in outcomes)

    outcomes = redis_support.run(main())
    assert outcomes[Outcome.FAIL_CLOSED] > 0
    assert outcomes[Outcome.ALLOWED] <= 100
    assert set(outcomes) <= {Outcome.ALLOWED, Outcome.FAIL_CLOSED, Outcome.DENIED}
