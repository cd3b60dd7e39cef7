"""In-memory decision speed and memory per customer, quotaguard next to its peers.

Run: ``python benchmarks/bench_memory.py`` (``--quick`` for a short run).

Every contender answers never-denying limits, so each call is a full admission. Rounds
are interleaved (round 1 of every contender, then round 2, ...) and the median rate is
kept, so the ratios compare numbers taken under the same machine load.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from importlib.metadata import version

import limits
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from throttled import RateLimiterType, Throttled, rate_limiter
from throttled.store import MemoryStore

from quotaguard import Guard, Plan, RollingWindow, TokenBucket

HUGE = 10**12

# A bucket whose state outlives the run (a fast refill would be full again before the
# next call to the same customer, so nothing would be stored), yet never runs dry.
BURST = TokenBucket("burst", 10**7, "1/minute")
ONE_LIMIT = Plan("one", [BURST])
THREE_LIMITS = Plan(
    "three",
    [
        BURST,
        RollingWindow("five_hour", HUGE, "5 hours", "5 minutes", unit="tokens"),
        RollingWindow("weekly", HUGE, "7 days", "1 hour", unit="tokens"),
    ],
)

Hit = Callable[[str], object]


def quotaguard_hit(plan: Plan) -> Hit:
    guard = Guard([plan], default_plan=plan.name)
    acquire = guard.acquire
    return lambda key: acquire(key)


def limits_hit(strategy: type) -> Hit:
    limiter = strategy(MemoryStorage())
    item = limits.parse(f"{HUGE}/hour")
    hit = limiter.hit
    return lambda key: hit(item, key)


def throttled_hit() -> Hit:
    store = MemoryStore(options={"MAX_SIZE": 4_000_000})  # no eviction of live keys
    throttle = Throttled(
        using=RateLimiterType.GCRA.value,
        quota=rate_limiter.per_sec(HUGE, burst=HUGE),
        store=store,
    )
    limit = throttle.limit
    return lambda key: limit(key)


CONTENDERS: dict[str, Callable[[], Hit]] = {
    "bare lambda call (reference)": lambda: lambda key: None,
    "quotaguard 1 limit (token bucket)": lambda: quotaguard_hit(ONE_LIMIT),
    "quotaguard 3 limits (burst+5h+weekly)": lambda: quotaguard_hit(THREE_LIMITS),
    "limits FixedWindow": lambda: limits_hit(FixedWindowRateLimiter),
    "limits MovingWindow": lambda: limits_hit(MovingWindowRateLimiter),
    "throttled-py GCRA": throttled_hit,
}


def measure(hit: Hit, keys: list[str], calls: int) -> float:
    """Calls per second for ``calls`` calls cycling over ``keys``."""
    count = len(keys)
    start = time.perf_counter()
    for index in range(calls):
        hit(keys[index % count])
    return calls / (time.perf_counter() - start)


def speed(workload: str, keys: list[str], calls: int, rounds: int) -> dict[str, float]:
    hits = {name: make() for name, make in CONTENDERS.items()}
    for hit in hits.values():  # warm up: every key has state before timing
        for key in keys:
            hit(key)
    rates: dict[str, list[float]] = {name: [] for name in hits}
    for _ in range(rounds):
        for name, hit in hits.items():
            gc.collect()
            rates[name].append(measure(hit, keys, calls))
    result = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\n## Speed, {workload} ({calls:,} calls x {rounds} rounds, median)\n")
    print(f"| {'contender':40} | {'decisions/s':>12} | {'us/decision':>11} |")
    print(f"| {'-' * 40} | {'-' * 12}: | {'-' * 11}: |")
    for name, rate in result.items():
        print(f"| {name:40} | {rate:12,.0f} | {1e6 / rate:11.2f} |")
    return result


def bytes_per_customer(make: Callable[[], Hit], customers: int) -> float:
    gc.collect()
    tracemalloc.start()
    hit = make()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(customers):
        hit(f"customer-{index}")  # the id is built here: a store that keeps it pays for it
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del hit
    return (after - before) / customers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run for a smoke test")
    args = parser.parse_args()
    calls, rounds, customers, memory_customers = 200_000, 5, 100_000, 1_000_000
    if args.quick:
        calls, rounds, customers, memory_customers = 20_000, 2, 10_000, 20_000

    print("# quotaguard memory backend benchmark\n")
    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"quotaguard {version('quotaguard')}, limits {version('limits')}, "
        f"throttled-py {version('throttled-py')}"
    )
    one = speed("1 key", ["customer"], calls, rounds)
    many = speed(
        f"{customers:,} customers round-robin",
        [f"customer-{i}" for i in range(customers)],
        calls,
        rounds,
    )

    print(f"\n## Memory per customer ({memory_customers:,} customers, tracemalloc)\n")
    print(f"| {'contender':40} | {'bytes/customer':>14} |")
    print(f"| {'-' * 40} | {'-' * 14}: |")
    memory: dict[str, float] = {}
    for name, make in CONTENDERS.items():
        if "reference" in name or "MovingWindow" in name:
            continue
        memory[name] = bytes_per_customer(make, memory_customers)
        print(f"| {name:40} | {memory[name]:14.0f} |")

    qg1 = "quotaguard 1 limit (token bucket)"
    qg3 = "quotaguard 3 limits (burst+5h+weekly)"
    peers = ["limits FixedWindow", "limits MovingWindow", "throttled-py GCRA"]
    best_peer = max(peers, key=lambda name: many[name])
    checks = [
        (
            f"3 limits over {customers:,} customers vs best peer's 1 limit ({best_peer})",
            many[qg3] / many[best_peer],
            1.0,
        ),
        ("1 limit, 1 key, vs limits FixedWindow", one[qg1] / one["limits FixedWindow"], 2.0),
        (
            f"1 limit over {customers:,} customers vs limits FixedWindow",
            many[qg1] / many["limits FixedWindow"],
            2.0,
        ),
    ]
    print("\n## Targets\n")
    print(f"| {'target':75} | {'ratio':>6} | {'needed':>6} | result |")
    print(f"| {'-' * 75} | {'-' * 6}: | {'-' * 6}: | ------ |")
    for label, ratio, needed in checks:
        verdict = "met" if ratio >= needed else "MISSED"
        print(f"| {label:75} | {ratio:6.2f} | {needed:6.2f} | {verdict} |")
    bytes_3 = memory[qg3]
    verdict = "met" if bytes_3 <= 600 else "MISSED"
    print(
        f"| {'bytes per customer, 3 limits (<= 600)':75} | {bytes_3:6.0f} | {600:6} | {verdict} |"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
