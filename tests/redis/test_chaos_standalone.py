"""Faults of a standalone Redis under load: stop/continue, SIGKILL and restart, eviction
policies, FLUSHALL; the local cache of denials and revocations. Each test asserts the
admissions, the failure policy and the slowest call (within twice the budget)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from quotaguard import AsyncGuard, Guard, Outcome, Plan, RollingWindow, TokenBucket
from quotaguard.backends.redis import DEFAULT_TIMEOUT, redis_backend_from_uri
from quotaguard.testing import FakeClock
from tests import redis_support
from tests.redis.chaos import ThreadLoad, wait_until

pytestmark = pytest.mark.slow

BUDGET = DEFAULT_TIMEOUT * 2
FIFTY = Plan("fifty", [RollingWindow("calls", 50, 3600)])


@pytest.fixture
def own_server() -> Iterator[redis_support.RedisServer]:
    server = redis_support.RedisServer().start()
    yield server
    server.cleanup()


def _evalsha_calls(server: redis_support.RedisServer) -> int:
    with server.client() as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_sigstop_fails_within_the_budget_and_phantom_usage_is_bounded(
    own_server: redis_support.RedisServer,
) -> None:
    guard = Guard([FIFTY], own_server.url, default_plan="fifty", failure="closed")
    assert sum(guard.acquire("c").allowed for _ in range(20)) == 20
    own_server.signal(signal.SIGSTOP)
    try:
        timed_out = 0
        for _ in range(4):
            started = time.monotonic()
            decision = guard.acquire("c")
            assert time.monotonic() - started < BUDGET
            assert decision.outcome is Outcome.FAIL_CLOSED
            timed_out += 1
    finally:
        own_server.signal(signal.SIGCONT)
    wait_until(lambda: guard.acquire("probe").outcome is Outcome.ALLOWED)
    used = guard.usage("c").limit("calls").used
    # the calls that timed out may still run once the server resumes: each at most once
    assert 20 <= used <= 20 + timed_out
    admitted = sum(guard.acquire("c").allowed for _ in range(60))
    assert 20 + admitted + (used - 20) == 50  # never more than the quota in all
    guard.close()


def test_sigkill_and_restart_mid_load_with_aof_keeps_the_quota() -> None:
    server = redis_support.RedisServer(
        extra=["--appendonly", "yes", "--appendfsync", "always"]
    ).start()
    try:
        quota = Plan("q", [RollingWindow("calls", 120, 3600)])
        guard = Guard([quota], server.url, default_plan="q", failure="closed")
        with ThreadLoad(guard, ["a", "b"], threads=4) as load:
            wait_until(lambda: load.record.calls > 40)
            server.kill()
            time.sleep(0.3)
            server.start()  # same port, same directory: the AOF is replayed
            wait_until(
                lambda: all(load.record.outcomes[c][Outcome.DENIED] > 5 for c in ("a", "b")), 30
            )
        record = load.record
        failed = record.total(Outcome.FAIL_CLOSED)
        print(f"SIGKILL+restart (AOF always): {record.outcomes}, slowest {record.slowest:.3f} s")
        assert record.seen() <= {Outcome.ALLOWED, Outcome.DENIED, Outcome.FAIL_CLOSED}
        for customer in ("a", "b"):
            # a call cut off by the kill may have been applied without its answer arriving
            assert 120 - failed <= record.allowed(customer) <= 120
            assert guard.usage(customer).limit("calls").used == 120
        assert record.slowest < BUDGET
        guard.close()
    finally:
        server.cleanup()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_revoked_and_denied_customers_stay_refused_through_an_outage(
    own_server: redis_support.RedisServer, flavour: str
) -> None:
    def scenario(acquire: Any, revoke: Any) -> None:
        revoke("abuser", "Chargeback.")
        assert acquire("abuser").outcome is Outcome.REVOKED
        while acquire("heavy").outcome is Outcome.ALLOWED:
            pass
        own_server.kill()
        started = time.monotonic()
        assert acquire("abuser").outcome is Outcome.REVOKED
        assert acquire("heavy").outcome is Outcome.DENIED
        assert acquire("someone-else").outcome is Outcome.FAIL_OPEN  # the policy
        assert time.monotonic() - started < 3 * BUDGET

    if flavour == "sync":
        guard = Guard([FIFTY], own_server.url, default_plan="fifty", failure="open")
        scenario(guard.acquire, guard.revoke)
        return

    async def main() -> None:
        aguard = AsyncGuard([FIFTY], own_server.url, default_plan="fifty", failure="open")
        loop = asyncio.get_running_loop()

        def sync(function: Any) -> Any:
            return lambda *args: asyncio.run_coroutine_threadsafe(function(*args), loop).result()

        await asyncio.to_thread(scenario, sync(aguard.acquire), sync(aguard.revoke))

    redis_support.run(main())


def test_ten_thousand_requests_of_a_denied_customer_make_a_handful_of_redis_calls(
    own_server: redis_support.RedisServer,
) -> None:
    guard = Guard([FIFTY], own_server.url, default_plan="fifty")
    while guard.acquire("denied").allowed:
        pass
    before = _evalsha_calls(own_server)
    started = time.monotonic()
    outcomes = {guard.acquire("denied").outcome for _ in range(10_000)}
    elapsed = time.monotonic() - started
    calls = _evalsha_calls(own_server) - before
    print(f"10,000 denied requests: {calls} EVALSHA calls in {elapsed:.2f} s")
    assert outcomes == {Outcome.DENIED}
    assert calls <= 2 + int(elapsed / guard.backend.edge.settings.max_staleness)  # type: ignore[attr-defined]
    guard.close()


def test_a_cached_denial_lasts_until_retry_after_or_the_staleness_bound() -> None:
    server = redis_support.standalone()
    prefix = redis_support.fresh_prefix()
    uri = f"{server.url}?prefix={prefix}&max_staleness=5"
    clock = FakeClock()
    bucket = Plan("b", [TokenBucket("burst", 2, "1/10 seconds")])
    here = Guard([bucket], uri, default_plan="b", clock=clock)
    elsewhere = Guard([bucket], uri, default_plan="b", clock=clock)  # another process
    assert here.acquire("c").allowed and here.acquire("c").allowed
    denied = here.acquire("c")
    assert denied.outcome is Outcome.DENIED and denied.retry_after == pytest.approx(10)
    elsewhere.reset("c")  # an operator's refund, made elsewhere
    assert here.acquire("c").outcome is Outcome.DENIED  # served from memory
    clock.advance(5)  # the staleness bound: the next call asks Redis again
    assert here.acquire("c").outcome is Outcome.ALLOWED
    while here.acquire("c").allowed:
        pass
    here.reset("c")  # a change made through this process applies at once
    assert here.acquire("c").outcome is Outcome.ALLOWED
    assert here.acquire("c", 2).outcome is Outcome.DENIED
    assert here.acquire("c", 1).outcome is Outcome.ALLOWED  # smaller than the denied cost
    here.close()
    elsewhere.close()


def test_a_cached_denial_keeps_retry_after_exact_and_answers_only_the_same_request() -> None:
    server = redis_support.standalone()
    uri = f"{server.url}?prefix={redis_support.fresh_prefix()}&max_staleness=5"
    clock = FakeClock()
    plan = Plan("b", [TokenBucket("burst", 4, "1/10 seconds")])
    guard = Guard([plan], uri, default_plan="b", clock=clock)
    assert guard.acquire("c", 3).allowed
    denied = guard.acquire("c", 2)
    assert denied.outcome is Outcome.DENIED and denied.retry_after == pytest.approx(10)
    clock.advance(4)
    before = _evalsha_calls(server)
    again = guard.acquire("c", 2)  # from memory: the wait that is left, never the old one
    assert _evalsha_calls(server) == before
    assert again.outcome is Outcome.DENIED and again.retry_after == pytest.approx(6)
    refusing = again.limit("burst")  # its per-limit waits are shortened by the time gone
    assert refusing.retry_after == pytest.approx(6) and refusing.reset_after <= 26
    larger = guard.acquire("c", 4)  # not the remembered request: Redis answers it exactly
    assert _evalsha_calls(server) == before + 1
    assert larger.outcome is Outcome.DENIED and larger.retry_after == pytest.approx(26)
    lease = guard.reserve("d", 3)
    assert guard.acquire("d", 2).outcome is Outcome.DENIED  # remembered
    lease.settle(0)  # a refund settled through this process forgets the denial at once
    assert guard.acquire("d", 2).outcome is Outcome.ALLOWED
    guard.close()


@pytest.mark.parametrize(
    ("policy", "risky"),
    [("noeviction", False), ("volatile-lru", True), ("allkeys-lru", True)],
)
def test_maxmemory_policies_are_checked_at_connect_and_a_full_server_follows_the_policy(
    policy: str, risky: bool
) -> None:
    server = redis_support.RedisServer(
        extra=["--maxmemory", "3mb", "--maxmemory-policy", policy]
    ).start()
    try:
        warnings: list[str] = []
        backend = redis_backend_from_uri(server.url, on_eviction_risk=warnings.append)
        guard = Guard([FIFTY], backend, default_plan="fifty", failure="closed")
        guard.revoke("abuser", "Fraud.")
        assert guard.acquire("c").outcome is Outcome.ALLOWED
        assert guard.acquire("c").outcome is Outcome.ALLOWED
        assert len(warnings) == (1 if risky else 0)
        assert (backend.edge.eviction_risk is not None) is risky
        if risky:
            assert policy in warnings[0]
        filler = server.client()
        try:
            for index in range(200):
                filler.set(f"junk:{index}", "x" * 10_000, ex=3600)
        except redis.exceptions.OutOfMemoryError:
            pass
        used = int(filler.info("memory")["used_memory"])
        filler.config_set("maxmemory", str(used - 200_000))  # full, with a margin
        started = time.monotonic()
        outcomes = Counter(guard.acquire(f"new-{index}").outcome for index in range(10))
        assert time.monotonic() - started < 10 * BUDGET
        filler.close()
        if policy == "noeviction":  # writes refused: the failure policy decides
            assert outcomes == {Outcome.FAIL_CLOSED: 10}
        else:  # eviction made room, at the price of other keys (usage state among them)
            assert outcomes == {Outcome.ALLOWED: 10}
        if policy != "allkeys-lru":  # only allkeys-* may evict settings (no TTL)
            assert guard.acquire("abuser").outcome is Outcome.REVOKED
        guard.close()
    finally:
        server.cleanup()


def test_flushall_erases_usage_and_revocations(own_server: redis_support.RedisServer) -> None:
    guard = Guard([FIFTY], own_server.url, default_plan="fifty")
    guard.revoke("abuser", "Fraud.")
    assert guard.acquire("abuser").outcome is Outcome.REVOKED
    assert guard.acquire("c", 30).allowed
    with own_server.client() as client:
        client.flushall()
        client.script_flush()
    assert guard.acquire("abuser").outcome is Outcome.ALLOWED  # the revocation is gone
    assert guard.acquire("c", 30).limit("calls").used == 30  # usage starts over
    guard.close()


def test_a_denial_holds_through_an_outage_until_its_retry_after(
    own_server: redis_support.RedisServer,
) -> None:
    clock = FakeClock()
    bucket = Plan("b", [TokenBucket("burst", 1, "1/minute")])
    guard = Guard([bucket], own_server.url, default_plan="b", clock=clock, failure="open")
    assert guard.acquire("c").allowed
    assert guard.acquire("c").outcome is Outcome.DENIED  # for 60 s
    own_server.kill()
    clock.advance(30)  # past the staleness bound, within retry_after
    assert guard.acquire("c").outcome is Outcome.DENIED
    clock.advance(30)  # retry_after has passed: the failure policy decides again
    assert guard.acquire("c").outcome is Outcome.FAIL_OPEN


def test_the_eviction_check_waits_for_a_reachable_server_and_warns_once() -> None:
    server = redis_support.RedisServer(extra=["--maxmemory-policy", "allkeys-lru"])
    try:
        warnings: list[str] = []
        backend = redis_backend_from_uri(server.url, on_eviction_risk=warnings.append)
        guard = Guard([FIFTY], backend, default_plan="fifty")
        assert guard.acquire("c").outcome is Outcome.FAIL_OPEN  # not started yet
        assert warnings == []
        server.start()
        assert guard.acquire("c").outcome is Outcome.ALLOWED
        assert guard.acquire("c").outcome is Outcome.ALLOWED
        assert len(warnings) == 1 and "allkeys-lru" in warnings[0]
        guard.close()
    finally:
        server.cleanup()
