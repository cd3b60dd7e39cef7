"""Coalescing on real Redis: batches form, keep arrival order, keep each customer's
decision whole, span the slots of a cluster node, and fail as single calls would."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotaguard import (
    AsyncGuard,
    ConfigurationError,
    Guard,
    MemoryBackend,
    Outcome,
    Plan,
    RollingWindow,
    TokenBucket,
)
from quotaguard.backends.redis import (
    AsyncRedisBackend,
    ClientSettings,
    RedisBackend,
    redis_backend_from_uri,
)
from quotaguard.testing import FakeClock
from tests import redis_support
from tests.redis.test_differential import CUSTOMERS, PLANS, costs, customers, plans

MANY = Plan("many", [RollingWindow("calls", 100_000, 3600)])
TEN = Plan("ten", [RollingWindow("units", 10, 3600)])
WHOLE = Plan("whole", [TokenBucket("burst", 100, "1/hour"), RollingWindow("three", 3, 3600)])


def _nodes(kind: str) -> list[redis_support.RedisServer]:
    if kind == "standalone":
        return [redis_support.standalone()]
    return redis_support.cluster().nodes


def _script_calls(kind: str) -> list[int]:
    """EVALSHA calls each node has served so far."""
    calls = []
    for node in _nodes(kind):
        with node.client() as client:
            stats = client.info("commandstats").get("cmdstat_evalsha", {})
        calls.append(int(stats.get("calls", 0)))
    return calls


def _uri(kind: str, **query: Any) -> str:
    server = redis_support.standalone() if kind == "standalone" else redis_support.cluster()
    extra = "".join(f"&{name}={value}" for name, value in query.items())
    separator = "&" if "?" in server.url else "?"
    return f"{server.url}{separator}prefix={redis_support.fresh_prefix()}{extra}"


def _async_backend(kind: str, clock: Any = None, **settings: Any) -> AsyncRedisBackend:
    client = redis_support.async_client(kind)
    prefix = redis_support.fresh_prefix()
    config = ClientSettings(timeout=10, **settings)
    return AsyncRedisBackend(client, prefix=prefix, clock=clock, settings=config)


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_tasks_in_flight_together_share_script_calls_on_every_node(kind: str) -> None:
    """64 tasks over customers spread across the nodes: far fewer calls than decisions on
    each node (a batch spans the slots of its node), and every admission counted once."""
    customers = [f"spread-{index}" for index in range(48)]
    rounds = 5

    async def main() -> Counter[str]:
        guard = AsyncGuard([MANY], _async_backend(kind), default_plan="many")
        await guard.acquire("warm-up")
        before = _script_calls(kind)

        async def work(index: int) -> list[str]:
            admitted = []
            for turn in range(rounds):
                customer = customers[(index + turn) % len(customers)]
                if (await guard.acquire(customer)).allowed:
                    admitted.append(customer)
            return admitted

        results = await asyncio.gather(*(work(index) for index in range(64)))
        after = _script_calls(kind)
        admitted = Counter(customer for result in results for customer in result)
        for customer in customers:
            assert (await guard.usage(customer)).limit("calls").used == admitted[customer]
        await guard.close()
        spent = [later - earlier for earlier, later in zip(before, after, strict=True)]
        print(f"{kind}: {64 * rounds} decisions in {spent} script calls per node")
        assert sum(admitted.values()) == 64 * rounds
        assert sum(spent) <= 64 * rounds // 4
        assert all(calls > 0 for calls in spent)  # every node served its own customers
        return admitted

    redis_support.run(main())


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_threads_sharing_a_backend_share_script_calls(kind: str) -> None:
    guard = Guard([MANY], redis_backend_from_uri(_uri(kind)), default_plan="many")
    guard.acquire("warm-up")
    before = sum(_script_calls(kind))

    def work(index: int) -> int:
        return sum(guard.acquire(f"thread-{(index + turn) % 8}").allowed for turn in range(50))

    with ThreadPoolExecutor(16) as pool:
        admitted = sum(pool.map(work, range(16)))
    spent = sum(_script_calls(kind)) - before
    used = sum(guard.usage(f"thread-{index}").limit("calls").used for index in range(8))
    guard.close()
    print(f"{kind}: 800 decisions from 16 threads in {spent} script calls")
    assert admitted == used == 800
    assert spent < 800


COSTS = [4, 4, 4, 1, 1, 3, 2, 1]


def test_a_batch_decides_in_arrival_order() -> None:
    """The first request leads alone; the others queue in the order they came and are
    decided in that order in one call: the same answers as one after the other."""
    clock = FakeClock()
    memory = Guard([TEN], MemoryBackend(clock=clock), default_plan="ten", clock=clock)
    expected = [memory.acquire("ordered", cost).allowed for cost in COSTS]

    async def main() -> tuple[list[bool], int]:
        guard = AsyncGuard([TEN], _async_backend("standalone"), default_plan="ten", clock=clock)
        # a batch first, so that the batch script is loaded (NOSCRIPT would cost a call)
        await asyncio.gather(*(guard.acquire(f"warm-up-{n}", 0) for n in range(3)))
        before = _script_calls("standalone")[0]
        decisions = await asyncio.gather(*(guard.acquire("ordered", cost) for cost in COSTS))
        spent = _script_calls("standalone")[0] - before
        await guard.close()
        return [decision.allowed for decision in decisions], spent

    allowed, spent = redis_support.run(main())
    assert allowed == expected == [True, True, False, True, True, False, False, False]
    assert spent == 2


def test_a_denied_request_consumes_nothing_from_its_other_limits_inside_a_batch() -> None:
    clock = FakeClock()

    async def main() -> None:
        guard = AsyncGuard([WHOLE], _async_backend("standalone"), default_plan="whole", clock=clock)
        await guard.acquire("warm-up")
        decisions = await asyncio.gather(
            *(guard.acquire(customer) for _ in range(8) for customer in ("x", "y"))
        )
        outcomes = Counter((d.customer, d.outcome) for d in decisions)
        assert outcomes == {
            ("x", Outcome.ALLOWED): 3,
            ("y", Outcome.ALLOWED): 3,
            ("x", Outcome.DENIED): 5,
            ("y", Outcome.DENIED): 5,
        }
        for customer in ("x", "y"):
            usage = await guard.usage(customer)
            assert usage.limit("burst").remaining == 97
            assert usage.limit("three").used == 3
        await guard.close()

    redis_support.run(main())


def test_a_request_whose_script_fails_fails_alone() -> None:
    """One customer's state key has the wrong type: their call fails (fail-closed), the
    other requests of the same batch are decided and counted."""

    async def main() -> None:
        backend = _async_backend("standalone")
        guard = AsyncGuard([MANY], backend, default_plan="many", failure="closed")
        await guard.acquire("warm-up")
        with redis_support.standalone().client() as admin:
            admin.rpush(backend.keys.customer("broken")[1], "not a state")
        names = ["ok-1", "broken", "ok-2"] * 6
        decisions = await asyncio.gather(*(guard.acquire(name) for name in names))
        outcomes = {(d.customer, d.outcome) for d in decisions}
        assert outcomes == {
            ("ok-1", Outcome.ALLOWED),
            ("ok-2", Outcome.ALLOWED),
            ("broken", Outcome.FAIL_CLOSED),
        }
        for name in ("ok-1", "ok-2"):
            assert (await guard.usage(name)).limit("calls").used == 6
        await guard.close()

    redis_support.run(main())


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_batch_whose_server_stops_fails_within_the_budget_and_admits_nothing(
    flavour: str,
) -> None:
    """The server stops with a batch in flight: every request of it fails (it may have
    run: none is sent again), each within its budget; the next calls succeed."""
    server = redis_support.RedisServer().start()
    budget = 0.5
    uri = f"{server.url}?timeout={budget}"
    try:
        if flavour == "sync":
            guard = Guard([MANY], uri, default_plan="many", failure="closed")
            guard.acquire("c")
            server.signal(signal.SIGSTOP)

            def call(_: int) -> tuple[Outcome, float]:
                started = time.monotonic()
                outcome = guard.acquire("c").outcome
                return outcome, time.monotonic() - started

            with ThreadPoolExecutor(12) as pool:
                results = list(pool.map(call, range(24)))
            server.signal(signal.SIGCONT)
            after = guard.acquire("c").outcome
            guard.close()
        else:

            async def main() -> tuple[list[tuple[Outcome, float]], Outcome]:
                aguard = AsyncGuard([MANY], uri, default_plan="many", failure="closed")
                await aguard.acquire("c")
                server.signal(signal.SIGSTOP)

                async def call() -> tuple[Outcome, float]:
                    started = time.monotonic()
                    outcome = (await aguard.acquire("c")).outcome
                    return outcome, time.monotonic() - started

                results = await asyncio.gather(*(call() for _ in range(24)))
                server.signal(signal.SIGCONT)
                after = (await aguard.acquire("c")).outcome
                await aguard.close()
                return results, after

            results, after = redis_support.run(main())
    finally:
        server.cleanup()
    assert {outcome for outcome, _ in results} == {Outcome.FAIL_CLOSED}
    assert max(elapsed for _, elapsed in results) < budget * 2
    assert after is Outcome.ALLOWED


def test_async_decisions_waiting_for_their_batch_hold_no_connection() -> None:
    """One connection, 40 tasks: all decided (none waits for a turn beyond its budget)."""

    async def main() -> tuple[Counter[Outcome], int]:
        backend = _async_backend("standalone", max_connections=1)
        guard = AsyncGuard([MANY], backend, default_plan="many", failure="closed")
        await asyncio.gather(*(guard.acquire("warm-up") for _ in range(3)))  # scripts loaded
        before = _script_calls("standalone")[0]
        decisions = await asyncio.gather(*(guard.acquire(f"one-{n % 5}") for n in range(40)))
        spent = _script_calls("standalone")[0] - before
        await guard.close()
        return Counter(decision.outcome for decision in decisions), spent

    outcomes, spent = redis_support.run(main())
    assert outcomes == {Outcome.ALLOWED: 40}
    assert spent == 2  # the first alone, the 39 others in one batch


def test_max_batch_bounds_every_batch() -> None:
    async def main() -> int:
        guard = AsyncGuard([MANY], _async_backend("standalone", max_batch=3), default_plan="many")
        await guard.acquire("warm-up")
        before = _script_calls("standalone")[0]
        await asyncio.gather(*(guard.acquire(f"m{index}") for index in range(31)))
        spent = _script_calls("standalone")[0] - before
        await guard.close()
        return spent

    assert redis_support.run(main()) >= 11  # one alone, then batches of at most 3


def test_coalescing_is_switched_off_by_the_uri_or_a_keyword() -> None:
    backend = redis_backend_from_uri(_uri("standalone", coalesce=0, max_batch=5))
    assert isinstance(backend, RedisBackend)
    assert backend.edge.settings.coalesce is False
    assert backend.edge.settings.max_batch == 5
    guard = Guard([MANY], backend, default_plan="many")
    guard.acquire("warm-up")
    before = _script_calls("standalone")[0]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda index: guard.acquire(f"off-{index % 4}"), range(80)))
    assert _script_calls("standalone")[0] - before == 80  # one call per decision
    guard.close()
    assert ClientSettings(coalesce=False).coalesce is False
    assert redis_backend_from_uri(_uri("standalone")).edge.settings.coalesce is True


@pytest.mark.parametrize(
    "values",
    [
        {"coalesce": 2},
        {"coalesce": "yes"},
        {"coalesce": None},
        {"max_batch": 0},
        {"max_batch": 1.5},
    ],
)
def test_junk_coalescing_settings_are_configuration_errors(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ClientSettings(**values)


def test_a_refused_customer_is_still_refused_in_process_with_coalescing() -> None:
    """The deny path: after the first denial, a flood of the same request stays local."""
    clock = FakeClock()

    async def main() -> tuple[Counter[Outcome], int]:
        guard = AsyncGuard([TEN], _async_backend("standalone"), default_plan="ten", clock=clock)
        await asyncio.gather(*(guard.acquire("warm-up", 0) for _ in range(3)))  # scripts loaded
        await guard.acquire("flood", 10)
        before = _script_calls("standalone")[0]
        decisions = []
        for _ in range(20):
            decisions += await asyncio.gather(*(guard.acquire("flood") for _ in range(50)))
        spent = _script_calls("standalone")[0] - before
        await guard.close()
        return Counter(decision.outcome for decision in decisions), spent

    outcomes, spent = redis_support.run(main())
    assert outcomes == {Outcome.DENIED: 1000}
    assert spent <= 2


def test_redis_errors_never_leak_from_a_batch() -> None:
    """A backend whose server is gone answers with the failure policy, batch or not."""

    async def main() -> set[Outcome]:
        client = redis.asyncio.Redis(port=redis_support.free_port(), socket_timeout=0.2)
        backend = AsyncRedisBackend(client, settings=ClientSettings(timeout=0.5))
        guard = AsyncGuard([MANY], backend, default_plan="many", failure="open")
        decisions = await asyncio.gather(*(guard.acquire(f"g{index}") for index in range(20)))
        await guard.close()
        return {decision.outcome for decision in decisions}

    assert redis_support.run(main()) == {Outcome.FAIL_OPEN}


group = st.lists(
    st.tuples(st.just("acquire"), customers, costs, plans, st.sampled_from([None, "bench"])),
    min_size=1,
    max_size=12,
)
usage = st.tuples(st.just("usage"), customers, plans, st.sampled_from([None, "bench"]))


@settings(
    max_examples=int(os.environ.get("QG_DIFF_EXAMPLES", "300")) // 3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.lists(
        st.tuples(group, usage, st.sampled_from([0, 1, 999, 250_000, 1_999_999, 3.6e9])),
        min_size=1,
        max_size=8,
    )
)
def test_batches_decide_exactly_like_memory_in_arrival_order(
    groups: list[tuple[list[tuple[Any, ...]], tuple[Any, ...], float]],
) -> None:
    """Groups of decisions in flight together (batches) against memory one after the
    other in the same order: the same decisions, then the same usage. (Remembered denials
    are off: an answer from memory is only as fresh as ``max_staleness`` allows.)"""
    clock = FakeClock()
    memory = Guard(PLANS, MemoryBackend(clock=clock), default_plan="a", clock=clock)

    def expected(op: tuple[Any, ...]) -> Any:
        if op[0] == "acquire":
            return memory.acquire(CUSTOMERS[op[1]], op[2], plan=op[3], scope=op[4])
        usage = memory.usage(CUSTOMERS[op[1]], plan=op[2], scope=op[3])
        return usage.plan, usage.limits

    async def actual(guard: AsyncGuard, op: tuple[Any, ...]) -> Any:
        if op[0] == "acquire":
            return await guard.acquire(CUSTOMERS[op[1]], op[2], plan=op[3], scope=op[4])
        usage = await guard.usage(CUSTOMERS[op[1]], plan=op[2], scope=op[3])
        return usage.plan, usage.limits

    async def main() -> None:
        backend = _async_backend("standalone", max_staleness=0)
        guard = AsyncGuard(PLANS, backend, default_plan="a", clock=clock)
        await guard.acquire("warm-up", 0)  # its first call checks the eviction policy
        try:
            for ops, peek, advance in groups:
                wanted = [expected(op) for op in ops]
                assert await asyncio.gather(*(actual(guard, op) for op in ops)) == wanted, ops
                assert await actual(guard, peek) == expected(peek), peek
                clock.advance(advance / 1e6)
        finally:
            await guard.close()

    redis_support.run(main())
