"""The Prometheus exporter's cost per decision: a memory-backend guard with and without it.

One run: a 3-limit plan (burst token bucket, 5-hour window, weekly cap), never denying,
over 1 key and over 100k customers round-robin. Each round times the bare guard and the
exported guard back to back (the order alternates between rounds) and keeps their ratio,
so drift in the machine's load cancels out. Two clocks: the thread's CPU time (not
inflated while other processes hold the CPU, the figure for a shared machine) and wall
time. Printed per clock: the median of the per-round ratios, and the ratio of the best
rounds. Target: the exporter adds at most 25 % to a decision (CPU time, median).

``--dispatch`` also times a guard with an observer that does nothing: the part of the
overhead that is the guard's calling of observers, not the exporter's work.

    .venv/bin/python benchmarks/bench_exporter.py [--rounds 15] [--calls 50000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from quotaguard import Decision, Guard, Plan, RollingWindow, TokenBucket
from quotaguard.metrics import ExporterConfig, PrometheusExporter

PLAN = Plan(
    "pro",
    [
        TokenBucket("burst", 10**9, "1000000/second"),
        RollingWindow.from_rate("five_hour", "1000000000/5hour", unit="tokens"),
        RollingWindow.from_rate("weekly", "1000000000/week", unit="tokens"),
    ],
)
TARGET = 0.25


class NoOp:
    """An observer that does nothing: what calling observers costs the guard."""

    def on_decision(self, decision: Decision, backend: str, elapsed: float) -> None:
        """Ignore the decision."""


def make(
    keys: list[str], exported: bool, config: ExporterConfig | None = None, noop: bool = False
) -> Callable[[int], tuple[float, float]]:
    observers: list[object] = [NoOp()] if noop else []
    if exported and not noop:
        observers = [PrometheusExporter(config)]
    guard = Guard([PLAN], default_plan="pro", observers=observers)
    for key in keys:  # warm: every customer has state
        guard.acquire(key, 1)
    acquire = guard.acquire
    position = 0

    def run(calls: int) -> tuple[float, float]:
        nonlocal position
        batch = [keys[(position + i) % len(keys)] for i in range(calls)]
        position += calls
        gc.collect()
        cpu, wall = time.thread_time(), time.perf_counter()
        for key in batch:
            acquire(key, 1)
        return (time.thread_time() - cpu) / calls, (time.perf_counter() - wall) / calls

    return run


Figures = dict[str, tuple[float, float, float, float]]


def measure(
    keys: list[str],
    rounds: int,
    calls: int,
    config: ExporterConfig | None = None,
    noop: bool = False,
) -> Figures:
    """Per clock: (bare best, exported best, median ratio, ratio of the best rounds).

    ``noop``: an observer that does nothing stands in for the exporter.
    """
    bare, exported = make(keys, False), make(keys, True, config, noop)
    bare(calls // 10)
    exported(calls // 10)
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for round_ in range(rounds):
        for flag in (False, True) if round_ % 2 == 0 else (True, False):
            times[flag].append((exported if flag else bare)(calls))
    figures: Figures = {}
    for index, clock in enumerate(("cpu", "wall")):
        plain = [t[index] for t in times[False]]
        added = [t[index] for t in times[True]]
        ratios = [e / b for b, e in zip(plain, added, strict=True)]
        figures[clock] = (min(plain), min(added), statistics.median(ratios) - 1, 0.0)
        figures[clock] = (*figures[clock][:3], min(added) / min(plain) - 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=ExporterConfig().batch_size)
    parser.add_argument("--sample-every", type=int, default=ExporterConfig().sample_every)
    parser.add_argument("--dispatch", action="store_true", help="also time a no-op observer")
    args = parser.parse_args()
    config = ExporterConfig(batch_size=args.batch_size, sample_every=args.sample_every)
    workloads = {
        "memory, 1 key": ["customer-1"],
        "memory, 100k customers": [f"customer-{i}" for i in range(100_000)],
    }
    print(
        f"{'workload':<24}{'clock':>6}{'bare us':>9}{'exported us':>13}{'added us':>10}"
        f"{'median':>9}{'best':>9}"
    )
    worst = 0.0
    runs = [(name, keys, False) for name, keys in workloads.items()]
    if args.dispatch:
        runs += [(f"{name} no-op", keys, True) for name, keys in workloads.items()]
    for name, keys, noop in runs:
        for clock, (bare, exported, median, best) in measure(
            keys, args.rounds, args.calls, config, noop
        ).items():
            if clock == "cpu" and not noop:
                worst = max(worst, median)
            print(
                f"{name:<24}{clock:>6}{bare * 1e6:>9.2f}{exported * 1e6:>13.2f}"
                f"{(exported - bare) * 1e6:>10.2f}{median:>9.1%}{best:>9.1%}"
            )
    verdict = "met" if worst <= TARGET else "NOT met"
    print(f"worst overhead (cpu, median) {worst:.1%} (target <= {TARGET:.0%}): {verdict}")


if __name__ == "__main__":
    main()
