"""The Prometheus exporter's cost per decision: a memory-backend guard with and without it.

One run: a 3-limit plan (burst token bucket, 5-hour window, weekly cap), never denying,
over 1 key and over 100k customers round-robin. Bare and exported rounds are interleaved;
the best (minimum) round of each is compared, the usual estimator of intrinsic cost on a
noisy shared machine, and the medians are printed beside it. Target: the
exporter adds at most 25 % to a decision.

    .venv/bin/python benchmarks/bench_exporter.py [--rounds 7] [--calls 100000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from quotaguard import Guard, Plan, RollingWindow, TokenBucket
from quotaguard.metrics import PrometheusExporter

PLAN = Plan(
    "pro",
    [
        TokenBucket("burst", 10**9, "1000000/second"),
        RollingWindow.from_rate("five_hour", "1000000000/5hour", unit="tokens"),
        RollingWindow.from_rate("weekly", "1000000000/week", unit="tokens"),
    ],
)
TARGET = 0.25


def make(keys: list[str], exported: bool) -> Callable[[int], float]:
    observers = [PrometheusExporter()] if exported else []
    guard = Guard([PLAN], default_plan="pro", observers=observers)
    for key in keys:  # warm: every customer has state
        guard.acquire(key, 1)
    acquire = guard.acquire
    position = 0

    def run(calls: int) -> float:
        nonlocal position
        batch = [keys[(position + i) % len(keys)] for i in range(calls)]
        position += calls
        gc.collect()
        started = time.perf_counter()
        for key in batch:
            acquire(key, 1)
        return (time.perf_counter() - started) / calls

    return run


def measure(keys: list[str], rounds: int, calls: int) -> tuple[float, float, float, float]:
    bare, exported = make(keys, False), make(keys, True)
    bare(calls // 10)
    exported(calls // 10)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        times[False].append(bare(calls))
        times[True].append(exported(calls))
    return (
        min(times[False]),
        min(times[True]),
        statistics.median(times[False]),
        statistics.median(times[True]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    workloads = {
        "memory, 1 key": ["customer-1"],
        "memory, 100k customers": [f"customer-{i}" for i in range(100_000)],
    }
    print(
        f"{'workload':<26}{'bare us':>10}{'exported us':>13}{'added us':>10}{'overhead':>10}"
        f"{'(median)':>10}"
    )
    worst = 0.0
    for name, keys in workloads.items():
        bare, exported, bare_median, exported_median = measure(keys, args.rounds, args.calls)
        overhead = exported / bare - 1
        worst = max(worst, overhead)
        print(
            f"{name:<26}{bare * 1e6:>10.2f}{exported * 1e6:>13.2f}"
            f"{(exported - bare) * 1e6:>10.2f}{overhead:>10.1%}"
            f"{exported_median / bare_median - 1:>10.1%}"
        )
    verdict = "met" if worst <= TARGET else "NOT met"
    print(f"worst overhead {worst:.1%} (target <= {TARGET:.0%}): {verdict}")


if __name__ == "__main__":
    main()
