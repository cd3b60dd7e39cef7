"""Helpers of the chaos tests: load generators that record every outcome and latency."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from quotaguard import AsyncGuard, Decision, Guard, Outcome


@attrs.define
class Record:
    """What a load run saw: outcomes per customer and the slowest call."""

    outcomes: dict[str, Counter[Outcome]] = attrs.field(factory=dict)
    reasons: Counter[str] = attrs.field(factory=Counter)
    slowest: float = 0.0
    calls: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def add(self, customer: str, decision: Decision, elapsed: float) -> None:
        with self.lock:
            self.outcomes.setdefault(customer, Counter())[decision.outcome] += 1
            if decision.outcome in (Outcome.FAIL_OPEN, Outcome.FAIL_CLOSED):
                self.reasons[f"{customer}: {decision.reason}"[:120]] += 1
            self.slowest = max(self.slowest, elapsed)
            self.calls += 1

    def total(self, outcome: Outcome) -> int:
        return sum(counts[outcome] for counts in self.outcomes.values())

    def allowed(self, customer: str) -> int:
        return self.outcomes.get(customer, Counter())[Outcome.ALLOWED]

    def seen(self) -> set[Outcome]:
        return {outcome for counts in self.outcomes.values() for outcome in counts}


class ThreadLoad:
    """Threads calling ``guard.acquire`` on ``customers`` in turn until stopped.

    ``customers`` may be a list of groups: thread ``i`` then serves group ``i % len``.
    """

    def __init__(self, guard: Guard, customers: Iterable[Any], threads: int = 4) -> None:
        self.guard = guard
        self.groups = _groups(list(customers))
        self.record = Record()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, args=(index,), daemon=True)
            for index in range(threads)
        ]

    def _work(self, index: int) -> None:
        customers = self.groups[index % len(self.groups)]
        turn = index
        while not self._stop.is_set():
            customer = customers[turn % len(customers)]
            turn += 1
            started = time.monotonic()
            decision = self.guard.acquire(customer)
            self.record.add(customer, decision, time.monotonic() - started)
            time.sleep(0.002)

    def __enter__(self) -> ThreadLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def _groups(customers: list[Any]) -> list[list[str]]:
    if customers and isinstance(customers[0], list):
        return customers
    return [customers]


async def async_load(
    guard: AsyncGuard,
    customers: list[Any],
    during: Callable[[], Any],
    tasks: int = 8,
) -> Record:
    """Tasks calling ``guard.acquire`` while ``during()`` (blocking) runs in a thread.

    ``customers`` may be a list of groups, as for `ThreadLoad`.
    """
    record = Record()
    done = asyncio.Event()
    groups = _groups(customers)

    async def work(index: int) -> None:
        customers = groups[index % len(groups)]
        turn = index
        while not done.is_set():
            customer = customers[turn % len(customers)]
            turn += 1
            started = time.monotonic()
            decision = await guard.acquire(customer)
            record.add(customer, decision, time.monotonic() - started)
            await asyncio.sleep(0.002)

    workers = [asyncio.create_task(work(index)) for index in range(tasks)]
    try:
        await asyncio.to_thread(during)
    finally:
        done.set()
        await asyncio.gather(*workers)
    return record


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> float:
    """Seconds until ``condition()`` held (polled every 20 ms); fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started
