"""Redis decision speed and bytes per customer, quotaguard next to its peers.

Run: ``python benchmarks/bench_redis.py`` (``--quick`` for a short run). Starts its own
redis-server on a free loopback port (never 6379) and stops it afterwards.

``--server-ab OTHER_CHECKOUT`` compares only the server time per decision of this
checkout's scripts with another checkout's (e.g. a worktree of main): the two run in
alternation on one redis-server, each round in a fresh process and key prefix, and the
medians and the median of per-round ratios are reported, so a loaded machine weighs on
both alike.

Every contender answers never-denying limits on one connection (sync) or one event loop
with 64 tasks (async). Rounds are interleaved and the median rate is kept, so ratios
compare numbers taken under the same machine load. The physical reference is redis-py's
``EVALSHA`` of ``return 1`` on the same kind of client: one round trip, no work.

Issue 14's coalescing rows: 64 tasks (coalescing on and off) next to one ``return 1``
call per task; 16 threads sharing one sync guard next to the same threads sharing one
client; one task alone, on and off; Redis's own ``INFO commandstats`` time per decision.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if "--root" in sys.argv:  # measure another checkout's quotaguard (see --server-ab)
    sys.path.insert(0, sys.argv[sys.argv.index("--root") + 1])

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies
import redis
import redis.asyncio
from throttled import RateLimiterType, Throttled, rate_limiter
from throttled.store import RedisStore

from quotaguard import AsyncGuard, Guard, Plan, RollingWindow, TokenBucket
from quotaguard.backends.redis import AsyncRedisBackend, ClientSettings, RedisBackend
from quotaguard.testing import FakeClock
from tests.redis_support import RedisServer

HUGE = 10**12
THREE_LIMITS = Plan(
    "three",
    [
        TokenBucket("burst", 10**8, "1000/second"),
        RollingWindow("five_hour", HUGE, "5 hours", "5 minutes", unit="tokens"),
        RollingWindow("weekly", HUGE, "7 days", "1 hour", unit="tokens"),
    ],
)
LIMIT_ITEMS = [
    limits.parse(f"{HUGE}/second"),
    limits.parse(f"{HUGE}/5 hours"),
    limits.parse(f"{HUGE * 7}/7 days"),
]

Hit = Callable[[], object]
AsyncHit = Callable[[], Awaitable[object]]


def sync_contenders(url: str) -> dict[str, Hit]:
    client = redis.Redis.from_url(url)
    one = client.register_script("return 1")
    guard = Guard([THREE_LIMITS], RedisBackend(redis.Redis.from_url(url)), default_plan="three")
    storage = limits.storage.RedisStorage(url)
    window = limits.strategies.SlidingWindowCounterRateLimiter(storage)
    throttle = Throttled(
        using=RateLimiterType.GCRA.value,
        quota=rate_limiter.per_sec(HUGE, burst=HUGE),
        store=RedisStore(server=url),
    )

    def limits_three() -> object:
        for item in LIMIT_ITEMS:
            window.hit(item, "customer")
        return None

    return {
        "redis-py EVALSHA 'return 1' (reference)": lambda: one(),
        "quotaguard 3 limits, 1 EVALSHA": lambda: guard.acquire("customer"),
        "limits SlidingWindowCounter, 3 hits": limits_three,
        "throttled-py GCRA, 1 limit": lambda: throttle.limit("customer"),
    }


def async_contenders(url: str) -> dict[str, Callable[[], AsyncHit]]:
    """Factories: each builds its client on the running loop."""

    def reference() -> AsyncHit:
        script = redis.asyncio.Redis.from_url(url).register_script("return 1")
        return lambda: script()

    def quotaguard() -> AsyncHit:
        backend = AsyncRedisBackend(redis.asyncio.Redis.from_url(url))
        guard = AsyncGuard([THREE_LIMITS], backend, default_plan="three")
        return lambda: guard.acquire("customer")

    def limits_aio() -> AsyncHit:
        storage = limits.aio.storage.RedisStorage(
            url.replace("redis://", "async+redis://"), implementation="redispy"
        )
        window = limits.aio.strategies.SlidingWindowCounterRateLimiter(storage)

        async def hit() -> object:
            for item in LIMIT_ITEMS:
                await window.hit(item, "customer")
            return None

        return hit

    def limits_aio_one() -> AsyncHit:
        storage = limits.aio.storage.RedisStorage(
            url.replace("redis://", "async+redis://"), implementation="redispy"
        )
        window = limits.aio.strategies.SlidingWindowCounterRateLimiter(storage)
        return lambda: window.hit(LIMIT_ITEMS[0], "customer")

    return {
        "async EVALSHA 'return 1' (reference)": reference,
        "quotaguard 3 limits, 1 EVALSHA": quotaguard,
        "limits.aio (redispy) SlidingWindowCounter, 3 hits": limits_aio,
        "limits.aio (redispy) SlidingWindowCounter, 1 hit": limits_aio_one,
    }


def measure(hit: Hit, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        hit()
    return calls / (time.perf_counter() - start)


async def measure_async(hit: AsyncHit, calls: int, tasks: int) -> float:
    async def worker() -> None:
        for _ in range(calls // tasks):
            await hit()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return (calls // tasks) * tasks / (time.perf_counter() - start)


def table(title: str, rates: dict[str, float], reference: str) -> None:
    print(f"\n## {title}\n")
    print(f"| {'contender':52} | {'decisions/s':>11} | {'us/call':>8} | {'x ref':>6} |")
    print(f"| {'-' * 52} | {'-' * 11}: | {'-' * 8}: | {'-' * 6}: |")
    for name, rate in rates.items():
        print(f"| {name:52} | {rate:11,.0f} | {1e6 / rate:8.1f} | {rate / rates[reference]:6.2f} |")


def sync_speed(url: str, calls: int, rounds: int) -> dict[str, float]:
    hits = sync_contenders(url)
    for hit in hits.values():
        for _ in range(200):
            hit()
    samples: dict[str, list[float]] = {name: [] for name in hits}
    for _ in range(rounds):
        for name, hit in hits.items():
            gc.collect()
            samples[name].append(measure(hit, calls))
    rates = {name: statistics.median(values) for name, values in samples.items()}
    table(f"Sync, one client ({calls:,} calls x {rounds} rounds, median)", rates, next(iter(rates)))
    return rates


def async_speed(url: str, calls: int, rounds: int, tasks: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        hits = {name: make() for name, make in async_contenders(url).items()}
        for hit in hits.values():
            await measure_async(hit, tasks * 10, tasks)
        samples: dict[str, list[float]] = {name: [] for name in hits}
        for _ in range(rounds):
            for name, hit in hits.items():
                gc.collect()
                samples[name].append(await measure_async(hit, calls, tasks))
        return {name: statistics.median(values) for name, values in samples.items()}

    rates = asyncio.run(main())
    table(
        f"Async, {tasks} tasks on one loop ({calls:,} calls x {rounds} rounds, median)",
        rates,
        next(iter(rates)),
    )
    return rates


# -- coalescing (issue 14 item 1) ----------------------------------------------------

CUSTOMERS = [f"customer-{index}" for index in range(1000)]
"""Coalescing rows: call n decides for customer n % 1000."""
THREADS_REF = "redis-py EVALSHA 'return 1', one shared client"
TASKS_REF = "async EVALSHA 'return 1', one call per task"
ON, OFF = "quotaguard 3 limits, coalescing on", "quotaguard 3 limits, coalescing off"


def _guard(url: str, coalesce: bool) -> Guard:
    settings = ClientSettings(coalesce=coalesce)
    backend = RedisBackend(redis.Redis.from_url(url), prefix="co", settings=settings)
    return Guard([THREE_LIMITS], backend, default_plan="three")


def _async_guard(url: str, coalesce: bool) -> AsyncGuard:
    settings = ClientSettings(coalesce=coalesce)
    backend = AsyncRedisBackend(redis.asyncio.Redis.from_url(url), prefix="co", settings=settings)
    return AsyncGuard([THREE_LIMITS], backend, default_plan="three")


def _threads_rate(hit: Callable[[int], object], calls: int, threads: int) -> float:
    each = calls // threads

    def work(index: int) -> None:
        for turn in range(each):
            hit(index * each + turn)

    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(work, range(threads)))
        return each * threads / (time.perf_counter() - start)


async def _tasks_rate(hit: Callable[[int], Awaitable[object]], calls: int, tasks: int) -> float:
    each = calls // tasks

    async def work(index: int) -> None:
        for turn in range(each):
            await hit(index * each + turn)

    start = time.perf_counter()
    await asyncio.gather(*(work(index) for index in range(tasks)))
    return each * tasks / (time.perf_counter() - start)


def _interleaved(rounds: int, samplers: dict[str, Callable[[], float]]) -> dict[str, float]:
    """The median of ``rounds`` interleaved samples of each sampler; one warm-up round.

    Every other round runs the samplers in reverse order: none always goes first.
    """
    samples: dict[str, list[float]] = {name: [] for name in samplers}
    names = list(samplers)
    for turn in range(rounds + 1):
        for name in names if turn % 2 else names[::-1]:
            gc.collect()
            value = samplers[name]()
            if turn:
                samples[name].append(value)
    return {name: statistics.median(values) for name, values in samples.items()}


def threads_speed(url: str, calls: int, rounds: int, threads: int = 16) -> dict[str, float]:
    """``threads`` threads sharing one sync guard (coalescing on, off) or one client."""
    one = redis.Redis.from_url(url).register_script("return 1")
    on, off = _guard(url, True), _guard(url, False)
    hits: dict[str, Callable[[int], object]] = {
        THREADS_REF: lambda _: one(),
        ON: lambda n: on.acquire(CUSTOMERS[n % 1000]),
        OFF: lambda n: off.acquire(CUSTOMERS[n % 1000]),
    }
    rates = _interleaved(
        rounds,
        {name: functools.partial(_threads_rate, hit, calls, threads) for name, hit in hits.items()},
    )
    title = f"{threads} threads sharing one backend ({calls:,} calls x {rounds} rounds, median)"
    table(title, rates, THREADS_REF)
    return rates


def tasks_speed(url: str, calls: int, rounds: int, tasks: int = 64) -> dict[str, float]:
    """``tasks`` tasks on one loop, coalescing on and off, next to one call per task."""
    loop = asyncio.new_event_loop()
    one = redis.asyncio.Redis.from_url(url).register_script("return 1")
    on, off = _async_guard(url, True), _async_guard(url, False)
    hits: dict[str, Callable[[int], Awaitable[object]]] = {
        TASKS_REF: lambda _: one(),
        ON: lambda n: on.acquire(CUSTOMERS[n % 1000]),
        OFF: lambda n: off.acquire(CUSTOMERS[n % 1000]),
    }

    def sampler(hit: Callable[[int], Awaitable[object]]) -> Callable[[], float]:
        return lambda: loop.run_until_complete(_tasks_rate(hit, calls, tasks))

    try:
        rates = _interleaved(rounds, {name: sampler(hit) for name, hit in hits.items()})
    finally:
        loop.close()
    title = f"Async, {tasks} tasks on one loop ({calls:,} calls x {rounds} rounds, median)"
    table(title, rates, TASKS_REF)
    return rates


def lone_latency(url: str, calls: int, rounds: int) -> dict[str, float]:
    """One task alone, one decision at a time: microseconds per decision, on and off."""
    loop = asyncio.new_event_loop()
    guards = {ON: _async_guard(url, True), OFF: _async_guard(url, False)}

    async def one_by_one(guard: AsyncGuard) -> float:
        start = time.perf_counter()
        for n in range(calls):
            await guard.acquire(CUSTOMERS[n % 1000])
        return (time.perf_counter() - start) / calls * 1e6

    try:
        latency = _interleaved(
            rounds,
            {
                name: functools.partial(lambda g: loop.run_until_complete(one_by_one(g)), guard)
                for name, guard in guards.items()
            },
        )
    finally:
        loop.close()
    print(f"\n## One task alone ({calls:,} calls x {rounds} rounds, median)\n")
    print(f"| {'contender':52} | {'us/decision':>11} | {'x off':>6} |")
    print(f"| {'-' * 52} | {'-' * 11}: | {'-' * 6}: |")
    for name, value in latency.items():
        print(f"| {name:52} | {value:11.1f} | {value / latency[OFF]:6.2f} |")
    return latency


def server_usec_per_decision(url: str, calls: int, tasks: int = 64) -> dict[str, float]:
    """Redis's own accounting (``INFO commandstats``): script time per decision, 64 tasks."""

    async def run(coalesce: bool) -> float:
        guard = _async_guard(url, coalesce)
        await _tasks_rate(lambda n: guard.acquire(CUSTOMERS[n % 1000]), tasks * 4, tasks)
        admin = redis.asyncio.Redis.from_url(url)
        await admin.config_resetstat()
        await _tasks_rate(lambda n: guard.acquire(CUSTOMERS[n % 1000]), calls, tasks)
        stats = (await admin.info("commandstats"))["cmdstat_evalsha"]
        await admin.aclose()
        await guard.close()
        return float(stats["usec"]) / (calls // tasks * tasks)

    usec = {ON: asyncio.run(run(True)), OFF: asyncio.run(run(False))}
    print(f"\n## Redis server time per decision (INFO commandstats, {tasks} tasks)\n")
    print(f"| {'contender':52} | {'usec/decision':>13} |")
    print(f"| {'-' * 52} | {'-' * 13}: |")
    for name, value in usec.items():
        print(f"| {name:52} | {value:13.1f} |")
    return usec


def coalescing_targets(
    threads: dict[str, float], tasks: dict[str, float], lone: dict[str, float]
) -> list[tuple[str, float, float, bool]]:
    """(target, measured, needed, met) of issue 14's coalescing rows."""
    on_tasks = tasks[ON] / tasks[TASKS_REF]
    on_threads = threads[ON] / threads[THREADS_REF]
    alone = lone[ON] / lone[OFF]
    return [
        ("async 64 tasks: quotaguard vs one EVALSHA 'return 1' per task", on_tasks, 2.0,
         on_tasks >= 2.0),
        ("16 threads, one sync guard: vs EVALSHA 'return 1'", on_threads, 1.5, on_threads >= 1.5),
        ("one task alone: latency, coalescing on vs off (at most)", alone, 1.1, alone <= 1.1),
    ]  # fmt: skip


def _memory(client: Any, prefix: str, customer: str) -> int:
    keys = list(client.scan_iter(match=f"{prefix}:{{{customer}}}:*"))
    return sum(int(client.memory_usage(key, samples=0)) for key in keys)


def bytes_per_customer(url: str) -> tuple[int, int]:
    """MEMORY USAGE of a customer on a 3-limit plan: after one call, and with full rings."""
    client = redis.Redis.from_url(url)
    plan = Plan(
        "three",
        [
            TokenBucket("burst", 60, "1/second"),
            RollingWindow.from_rate("five_hour", "200000/5 hours", unit="tokens"),
            RollingWindow.from_rate("weekly", "5000000/week", unit="tokens"),
        ],
    )
    clock = FakeClock()
    guard = Guard([plan], RedisBackend(client, prefix="mem"), default_plan="three", clock=clock)
    guard.acquire("typical", {"tokens": 1200})
    for _ in range(7 * 24 * 20):  # 20 calls an hour for a week: every bucket used
        guard.acquire("busy", {"tokens": 1400})
        clock.advance(180)
    return _memory(client, "mem", "typical"), _memory(client, "mem", "busy")


def server_us_per_decision(
    url: str, customers: int = 200, rounds: int = 10, prefix: str = "cpu"
) -> float:
    """Redis server time per decision of the 3-limit plan: INFO commandstats usec per EVALSHA.

    Every customer has used the plan before (its rings hold buckets), as in production.
    """
    client = redis.Redis.from_url(url)
    clock = FakeClock()
    guard = Guard(
        [THREE_LIMITS], RedisBackend(client, prefix=prefix), default_plan="three", clock=clock
    )
    ids = [f"customer-{i}" for i in range(customers)]
    for _ in range(3):
        for customer in ids:
            guard.acquire(customer, {"tokens": 100})
        clock.advance(60)
    client.config_resetstat()
    for _ in range(rounds):
        for customer in ids:
            guard.acquire(customer, {"tokens": 100})
        clock.advance(1)
    stats = client.info("commandstats")["cmdstat_evalsha"]
    guard.close()
    return float(stats["usec"]) / float(stats["calls"])


def server_ab(other: str, rounds: int) -> None:
    """Server time per decision, this checkout against ``other``, interleaved rounds."""
    server = RedisServer().start()
    here, there = [], []
    try:
        for index in range(rounds):
            pair = [(here, []), (there, ["--root", other])]
            for samples, extra in pair if index % 2 == 0 else pair[::-1]:
                command = [sys.executable, os.path.abspath(__file__), *extra]
                command += ["--server-once", server.url, f"ab{index}{len(samples)}{len(extra)}"]
                samples.append(float(subprocess.check_output(command, text=True)))
    finally:
        server.cleanup()
    print("\n## Redis server time per decision, 3-limit plan: A/B\n")
    print(f"this checkout: median {statistics.median(here):.2f} us ({rounds} rounds)")
    print(f"{other}: median {statistics.median(there):.2f} us")
    ratios = [a / b for a, b in zip(here, there, strict=True)]
    print(f"this / other, median of per-round ratios: {statistics.median(ratios):.3f}")


def parser_name() -> str:
    """Which reply parser redis-py uses here: hiredis when installed, else pure Python."""
    try:
        return f"hiredis {version('hiredis')}"
    except PackageNotFoundError:
        return "hiredis not installed: pure-Python parser"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run for a smoke test")
    parser.add_argument("--server-ab", metavar="CHECKOUT", help="A/B of server time only")
    parser.add_argument("--ab-rounds", type=int, default=12, help="rounds of --server-ab")
    parser.add_argument("--server-once", nargs=2, metavar=("URL", "PREFIX"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server_once:
        print(server_us_per_decision(*args.server_once[:1], prefix=args.server_once[1]))
        return
    if args.server_ab:
        server_ab(args.server_ab, args.ab_rounds)
        return
    calls, async_calls, rounds = (3_000, 12_800, 5) if not args.quick else (500, 3_200, 2)
    server = RedisServer().start()
    try:
        url = server.url
        info = redis.Redis.from_url(url).info("server")
        print("# quotaguard Redis backend benchmark\n")
        print(
            f"Python {platform.python_version()}, redis-server {info['redis_version']} on "
            f"loopback, redis-py {version('redis')} ({parser_name()}), "
            f"limits {version('limits')}, throttled-py {version('throttled-py')}"
        )
        sync_rates = sync_speed(url, calls, rounds)
        async_rates = async_speed(url, async_calls, rounds, 64)
        threads = threads_speed(url, calls * 2, rounds)
        tasks = tasks_speed(url, async_calls, rounds)
        lone = lone_latency(url, calls, rounds)
        server_usec_per_decision(url, async_calls)
        typical, busy = bytes_per_customer(url)
        print("\n## Bytes per customer (MEMORY USAGE of all its keys), 3-limit plan\n")
        print(f"| {'customer':52} | {'bytes':>6} |")
        print(f"| {'-' * 52} | {'-' * 6}: |")
        print(f"| {'after one call':52} | {typical:6} |")
        print(f"| {'20 calls/hour for a week (both rings full)':52} | {busy:6} |")
        server_us = server_us_per_decision(url)
        print("\n## Redis server time per decision, 3-limit plan (INFO commandstats)\n")
        print(f"{server_us:.2f} us per EVALSHA (one decision per call)")

        qg = "quotaguard 3 limits, 1 EVALSHA"
        sync_ref = "redis-py EVALSHA 'return 1' (reference)"
        async_ref = "async EVALSHA 'return 1' (reference)"
        checks = [
            ("sync: quotaguard vs EVALSHA reference", sync_rates[qg] / sync_rates[sync_ref], 0.9),
            (
                "sync: quotaguard vs limits doing 3 hits",
                sync_rates[qg] / sync_rates["limits SlidingWindowCounter, 3 hits"],
                2.5,
            ),
            (
                "async 64 tasks: quotaguard vs async EVALSHA reference",
                async_rates[qg] / async_rates[async_ref],
                0.85,
            ),
        ]
        print("\n## Targets\n")
        print(f"| {'target':60} | {'ratio':>6} | {'needed':>6} | result |")
        print(f"| {'-' * 60} | {'-' * 6}: | {'-' * 6}: | ------ |")
        for label, ratio, needed in checks:
            verdict = "met" if ratio >= needed else "MISSED"
            print(f"| {label:60} | {ratio:6.2f} | {needed:6.2f} | {verdict} |")
        for label, ratio, needed, met in coalescing_targets(threads, tasks, lone):
            print(f"| {label:60} | {ratio:6.2f} | {needed:6.2f} | {'met' if met else 'MISSED'} |")
        for label, value in (("after one call", typical), ("full rings", busy)):
            verdict = "met" if value <= 1024 else "MISSED"
            name = f"bytes per customer, {label} (<= 1024)"
            print(f"| {name:60} | {value:6} | {1024:6} | {verdict} |")
    finally:
        server.cleanup()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
