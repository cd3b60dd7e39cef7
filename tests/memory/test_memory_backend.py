"""The memory backend: thread safety, bounded memory, nothing live ever evicted."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from quotaguard import (
    AsyncGuard,
    Concurrency,
    Guard,
    MemoryBackend,
    Plan,
    RollingWindow,
    TokenBucket,
)
from quotaguard.testing import FakeClock

THREADS = 8


@pytest.fixture
def fast_switching():
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def hammer(guard: Guard, customers: list[str], calls: int, cost: float = 1) -> list[int]:
    admitted = [0] * THREADS
    barrier = threading.Barrier(THREADS)

    def work(index: int) -> None:
        barrier.wait()
        for call in range(calls):
            if guard.acquire(customers[call % len(customers)], cost=cost).allowed:
                admitted[index] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return admitted


@pytest.mark.parametrize("trial", range(5))
def test_eight_threads_admit_exactly_the_capacity(fast_switching, trial):
    plan = Plan(
        "p",
        [
            TokenBucket("burst", 1000, "1/hour"),
            RollingWindow("daily", 100, "1 day", "1 hour"),
        ],
    )
    guard = Guard([plan], default_plan="p", clock=FakeClock())
    admitted = hammer(guard, ["one"], 200)
    assert sum(admitted) == 100


def test_eight_threads_over_many_customers_neither_over_nor_under_admit(fast_switching):
    plan = Plan("p", [TokenBucket("burst", 7, "1/hour")])
    guard = Guard([plan], default_plan="p", clock=FakeClock())
    customers = [f"c{i}" for i in range(50)]
    admitted = hammer(guard, customers, 400)
    assert sum(admitted) == 7 * 50


def test_concurrent_leases_never_exceed_the_slots(fast_switching):
    plan = Plan("p", [Concurrency("slots", 3, lease_ttl=60)])
    guard = Guard([plan], default_plan="p", clock=FakeClock())
    held: list[object] = []
    barrier = threading.Barrier(THREADS)

    def work() -> None:
        barrier.wait()
        for _ in range(50):
            lease = guard.reserve("one", cost=1)
            if lease.allowed:
                held.append(lease)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(held) == 3


def test_idle_state_is_dropped_without_a_background_thread():
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    plan = Plan("p", [TokenBucket("burst", 10, "10/second"), RollingWindow("m", 5, 60, 10)])
    guard = Guard([plan], backend, default_plan="p", clock=clock)
    threads_before = threading.active_count()
    for i in range(2000):
        guard.acquire(f"idle-{i}")
    assert len(backend) == 2000
    assert threading.active_count() == threads_before
    clock.advance(71)  # the window's last bucket has left; the bucket refilled long ago
    for _ in range(2000):
        guard.acquire("busy")
    assert len(backend) == 1


def test_live_state_is_never_evicted():
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    plan = Plan("p", [RollingWindow("weekly", 3, "7 days", "1 hour")])
    guard = Guard([plan], backend, default_plan="p", clock=clock)
    for _ in range(3):
        guard.acquire("heavy")
    for day in range(6):
        clock.advance(86_400)
        for i in range(3000):
            guard.acquire(f"other-{day}-{i}")
    assert not guard.acquire("heavy").allowed
    clock.advance(86_400 + 3600)
    assert guard.acquire("heavy").allowed


def test_lease_records_expire_too():
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    plan = Plan("p", [Concurrency("slots", 1, lease_ttl=10)])
    guard = Guard([plan], backend, default_plan="p", clock=clock)
    for i in range(500):
        guard.reserve(f"c{i}", cost=1)
    assert len(backend._leases) == 500
    clock.advance(21)
    for i in range(1500):
        guard.acquire(f"d{i}")
    assert len(backend._leases) == 0
    assert len(backend) == 0


def test_the_async_guard_shares_one_memory_backend_with_a_sync_guard():
    clock = FakeClock()
    backend = MemoryBackend(clock=clock)
    plan = Plan("p", [TokenBucket("burst", 2, "1/hour")])
    sync = Guard([plan], backend, default_plan="p", clock=clock)
    asynchronous = AsyncGuard([plan], backend, default_plan="p", clock=clock)
    assert sync.acquire("x").allowed
    assert asyncio.run(asynchronous.acquire("x")).allowed
    assert not sync.acquire("x").allowed


def test_storage_uris():
    assert isinstance(Guard([Plan("p")], "memory://").backend, MemoryBackend)
    from quotaguard import ConfigurationError

    with pytest.raises(ConfigurationError, match="'memcached://x'"):
        Guard([Plan("p")], "memcached://x")
    with pytest.raises(ConfigurationError, match="'nonsense'"):
        Guard([Plan("p")], "nonsense")
