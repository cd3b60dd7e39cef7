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
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
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
from quotaguard.backends.redis import AsyncRedisBackend, RedisBackend
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
        for label, value in (("after one call", typical), ("full rings", busy)):
            verdict = "met" if value <= 1024 else "MISSED"
            name = f"bytes per customer, {label} (<= 1024)"
            print(f"| {name:60} | {value:6} | {1024:6} | {verdict} |")
    finally:
        server.cleanup()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
