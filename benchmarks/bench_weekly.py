"""Rolling windows after a week of real use: cost per decision and bytes per customer.

Run: ``python benchmarks/bench_weekly.py`` (``--quick`` for a short run, ``--no-redis`` to
skip the Redis half).

The other benchmarks measure customers after one call. A weekly cap is about customers who
have used the product all week: here every customer makes one call per granule for a full
week on a FakeClock, so its ring of buckets is full, and then the timed calls go on at the
same pace (each call opens a bucket and retires the oldest one). The plans differ only in
the weekly window's granularity: 1 day (7 buckets), 1 hour (168) and 10 minutes (1,008).

Memory backend: microseconds per decision and tracemalloc bytes per customer. Redis: the
server's own time per decision (``INFO commandstats``, usec per EVALSHA call) and
``MEMORY USAGE`` of every key per customer, for the weekly 1-hour ring plus a 5-hour ring
of 5-minute buckets (the issue's 1 KiB target).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis

from quotaguard import Guard, Plan, RollingWindow
from quotaguard.testing import FakeClock
from tests.redis_support import RedisServer

HUGE = 10**12
WEEK_S = 7 * 86_400
GRANULES_S = {"1 day": 86_400, "1 hour": 3_600, "10 minutes": 600}


def weekly_plan(granularity: str) -> Plan:
    return Plan("weekly", [RollingWindow("weekly", HUGE, "7 days", granularity, unit="tokens")])


def five_hour_and_weekly_plan() -> Plan:
    return Plan(
        "busy",
        [
            RollingWindow("five_hour", HUGE, "5 hours", "5 minutes", unit="tokens"),
            RollingWindow("weekly", HUGE, "7 days", "1 hour", unit="tokens"),
        ],
    )


def fill_week(guard: Guard, clock: FakeClock, customers: list[str], step_s: int) -> None:
    """One call per customer per ``step_s`` for a whole week: every ring full."""
    for _ in range(WEEK_S // step_s):
        for customer in customers:
            guard.acquire(customer, {"tokens": 100})
        clock.advance(step_s)


def timed_calls(
    guard: Guard, clock: FakeClock, customers: list[str], step_s: int, rounds: int
) -> float:
    """Microseconds per decision for ``rounds`` more granules of calls (median of rounds)."""
    samples = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        for customer in customers:
            guard.acquire(customer, {"tokens": 100})
        samples.append((time.perf_counter() - start) * 1e6 / len(customers))
        clock.advance(step_s)
    return statistics.median(samples)


def memory_rows(customers: int, rounds: int) -> dict[str, tuple[float, float]]:
    rows: dict[str, tuple[float, float]] = {}
    for label, step_s in GRANULES_S.items():
        clock = FakeClock()
        ids = [f"customer-{i}" for i in range(customers)]
        gc.collect()
        tracemalloc.start()
        guard = Guard([weekly_plan(label)], default_plan="weekly", clock=clock)
        before = tracemalloc.get_traced_memory()[0]
        fill_week(guard, clock, ids, step_s)
        gc.collect()
        per_customer = (tracemalloc.get_traced_memory()[0] - before) / customers
        tracemalloc.stop()
        rows[label] = (timed_calls(guard, clock, ids, step_s, rounds), per_customer)
    return rows


def redis_rows(url: str, customers: int, rounds: int) -> tuple[dict[str, float], float]:
    client = redis.Redis.from_url(url)
    times: dict[str, float] = {}
    for label, step_s in GRANULES_S.items():
        client.flushall()
        clock = FakeClock()
        ids = [f"customer-{i}" for i in range(customers)]
        guard = Guard([weekly_plan(label)], url, default_plan="weekly", clock=clock)
        fill_week(guard, clock, ids, step_s)
        client.config_resetstat()
        timed_calls(guard, clock, ids, step_s, rounds)
        stats = client.info("commandstats")["cmdstat_evalsha"]
        times[label] = stats["usec"] / stats["calls"]
        guard.close()
    client.flushall()
    clock = FakeClock()
    ids = [f"customer-{i}" for i in range(customers)]
    guard = Guard([five_hour_and_weekly_plan()], url, default_plan="busy", clock=clock)
    fill_week(guard, clock, ids, 300)
    guard.close()
    total = sum(int(client.memory_usage(key) or 0) for key in client.scan_iter(count=1000))
    return times, total / customers


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" if i == 0 else "---:" for i in range(len(header))) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run for a smoke test")
    parser.add_argument("--no-redis", action="store_true", help="memory backend only")
    args = parser.parse_args()
    customers, rounds, redis_customers = (20, 50, 20) if not args.quick else (5, 10, 3)

    print("# Rolling windows after a week of real use\n")
    print(
        f"{customers} customers, one call per granule for a week, then {rounds} granules timed.\n"
    )
    memory = memory_rows(customers, rounds)
    print("## Memory backend\n")
    table(
        ("weekly granularity", "buckets", "us/decision", "bytes/customer"),
        [
            (label, f"{WEEK_S // step:,}", f"{memory[label][0]:.2f}", f"{memory[label][1]:,.0f}")
            for label, step in GRANULES_S.items()
        ],
    )
    checks: list[tuple[str, float, float]] = [
        (
            "memory: us/decision, 1,008 buckets / 7 buckets",
            memory["10 minutes"][0] / memory["1 day"][0],
            1.5,
        ),
        ("memory: bytes/customer, weekly 1-hour ring", memory["1 hour"][1], 1024),
    ]
    if not args.no_redis:
        server = RedisServer().start()
        try:
            times, usage = redis_rows(server.url, redis_customers, rounds)
        finally:
            server.stop()
        print("\n## Redis backend (server time from INFO commandstats)\n")
        table(
            ("weekly granularity", "buckets", "server us/decision"),
            [
                (label, f"{WEEK_S // step:,}", f"{times[label]:.2f}")
                for label, step in GRANULES_S.items()
            ],
        )
        print(f"\nMEMORY USAGE per customer, 5h/5min + weekly/1h rings full: {usage:,.0f} B")
        checks += [
            (
                "redis: server us/decision, 1,008 buckets / 7 buckets",
                times["10 minutes"] / times["1 day"],
                1.2,
            ),
            ("redis: MEMORY USAGE/customer, 5h/5min + weekly/1h rings", usage, 1024),
        ]
    print("\n## Targets (issue 16)\n")
    table(
        ("target", "value", "at most", "result"),
        [
            (label, f"{value:,.2f}", f"{limit:,}", verdict(value, limit))
            for label, value, limit in checks
        ],
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
