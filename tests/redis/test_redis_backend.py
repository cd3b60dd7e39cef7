"""The Redis backend against real redis-server processes: concurrency, recovery, keys,
TTLs, memory and failure policy."""

from __future__ import annotations

import json
import multiprocessing
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.cluster

from quotaguard import (
    AsyncGuard,
    BackendUnavailable,
    Guard,
    Outcome,
    Plan,
    RollingWindow,
    TokenBucket,
)
from quotaguard.backends import async_backend_from_uri, backend_from_client, backend_from_uri
from quotaguard.backends.redis import AsyncRedisBackend, RedisBackend
from quotaguard.backends.redis.codec import SCRIPTS
from quotaguard.backends.redis.keys import encode_id
from quotaguard.core.audit import AUDIT_KEEP, AuditEntry
from quotaguard.core.request import Request
from quotaguard.testing import FakeClock
from tests import redis_support

WINDOW = Plan("w", [RollingWindow("hundred", 100, 3600)])
THREE = Plan(
    "three",
    [
        TokenBucket("burst", 60, "1/second"),
        RollingWindow.from_rate("five_hour", "200000/5 hours", unit="tokens"),
        RollingWindow.from_rate("weekly", "5000000/week", unit="tokens"),
    ],
)


def _hammer(args: tuple[str, str, str, int, bool]) -> int:
    uri, prefix, customer, attempts, coalesce = args
    query = f"prefix={prefix}&coalesce={int(coalesce)}"
    backend = backend_from_uri(f"{uri}{'&' if '?' in uri else '?'}{query}")
    guard = Guard([WINDOW], backend, default_plan="w")
    admitted = sum(guard.acquire(customer).allowed for _ in range(attempts))
    guard.close()
    return admitted


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as workers:
        yield workers


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_eight_processes_admit_exactly_the_quota(kind: str, pool: Any, coalesce: bool) -> None:
    uri = redis_support.standalone().url if kind == "standalone" else redis_support.cluster().url
    prefix = redis_support.fresh_prefix()
    for trial in range(10):
        customer = f"hammered-{trial}"
        admitted = pool.map(_hammer, [(uri, prefix, customer, 20, coalesce)] * 8)
        assert sum(admitted) == 100, (trial, admitted)


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_script_flush_mid_run_is_recovered(kind: str) -> None:
    client = redis_support.sync_client(kind)
    clock = FakeClock()
    guard = Guard([WINDOW], RedisBackend(client, prefix=redis_support.fresh_prefix()), clock=clock)
    assert guard.acquire("c", 10, plan="w").allowed
    client.script_flush()
    assert guard.acquire("c", 10, plan="w").limit("hundred").remaining == 80
    client.script_flush()
    lease = guard.reserve("c", 30, plan="w")  # the pipelined path
    assert lease.allowed
    client.script_flush()
    assert lease.settle(5) is not None
    assert guard.usage("c", plan="w").limit("hundred").used == 25
    guard.close()


def test_async_script_flush_mid_run_is_recovered() -> None:
    async def main() -> None:
        client = redis_support.async_client("standalone")
        guard = AsyncGuard([WINDOW], AsyncRedisBackend(client, prefix=redis_support.fresh_prefix()))
        assert (await guard.acquire("c", 10, plan="w")).allowed
        await client.script_flush()
        lease = await guard.reserve("c", 30, plan="w")
        await client.script_flush()
        await lease.settle(5)
        assert (await guard.usage("c", plan="w")).limit("hundred").used == 15
        await guard.close()

    redis_support.run(main())


def test_redis_restart_mid_run_resumes_without_an_app_restart() -> None:
    server = redis_support.RedisServer().start()
    try:
        guard = Guard([WINDOW], backend_from_uri(server.url), default_plan="w", failure="closed")
        assert guard.acquire("c", 60).allowed
        server.restart()  # no persistence: usage starts over
        decision = guard.acquire("c", 60)
        assert decision.outcome is Outcome.ALLOWED
        assert decision.limit("hundred").remaining == 40
        server.stop()
        assert guard.acquire("c").outcome is Outcome.FAIL_CLOSED
        server.start()
        assert guard.acquire("c").outcome is Outcome.ALLOWED
        guard.close()
    finally:
        server.cleanup()


NASTY = ["a", "~YQ", "{a}", "}{", "a:b", "a b", " ", "ü", "日本語", "\u200b", "x" * 10_240]


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_ids_cannot_collide_or_inject(kind: str) -> None:
    client = redis_support.sync_client(kind)
    prefix = redis_support.fresh_prefix()
    guard = Guard(
        [WINDOW], RedisBackend(client, prefix=prefix), default_plan="w", clock=FakeClock()
    )
    for index, customer in enumerate(NASTY):
        assert guard.acquire(customer, index + 1).allowed
        assert guard.reserve(customer, 1).allowed
    for index, customer in enumerate(NASTY):
        assert guard.usage(customer).limit("hundred").used == index + 2
    tags = {encode_id(customer) for customer in NASTY}
    assert len(tags) == len(NASTY)
    for tag in tags:
        assert "{" not in tag and "}" not in tag and ":" not in tag and " " not in tag
    keys = [key.decode() for key in _keys(client, f"{prefix}:*")]
    for key in keys:
        if ":lease:" in key:
            continue
        tag = key[key.index("{") + 1 : key.index("}")]
        assert tag in tags
    assert sorted(guard.customers()) == sorted(NASTY)
    guard.close()


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_customer_listing_decodes_ids_and_keeps_to_its_prefix(kind: str) -> None:
    client = redis_support.sync_client(kind)
    fresh = redis_support.fresh_prefix()
    # glob characters in a prefix are literal: "p*" must not list "pX"'s customers
    prefixes = [f"{fresh}*?[ab]\\", f"{fresh}X?[ab]\\", f"{fresh}*?a\\"]
    guards = [
        Guard([WINDOW], RedisBackend(client, prefix=prefix), default_plan="w", clock=FakeClock())
        for prefix in prefixes
    ]
    many = [f"c{index}" for index in range(40)] + NASTY
    for customer in many:
        guards[0].acquire(customer)
    guards[0].assign("settings-only", "w")
    guards[0].reserve("leaseholder", 1)
    guards[1].acquire("other-prefix")
    guards[2].acquire("third-prefix")
    assert sorted(guards[0].customers()) == sorted([*many, "settings-only", "leaseholder"])
    assert len(guards[0].customers(7)) == 7
    assert guards[1].customers() == ["other-prefix"]
    assert guards[2].customers() == ["third-prefix"]
    for guard in guards:
        guard.close()


def test_audit_trail_keeps_the_newest_entries_without_expiry(server: Any) -> None:
    client = redis_support.sync_client("standalone")
    prefix = redis_support.fresh_prefix()
    backend = RedisBackend(client, prefix=prefix)
    customer = "{a}:ü b"
    client.script_load(SCRIPTS["audit"])
    with client.pipeline(transaction=False) as pipe:  # fast: pipelined script calls
        for index in range(AUDIT_KEEP + 5):
            entry = AuditEntry(float(index), "op", "assign", f"plan={index}", None)
            pipe.evalsha(
                backend._scripts["audit"].sha,
                1,
                backend.keys.audit(customer),
                json.dumps(entry.to_dict()),
                str(AUDIT_KEEP),
            )
        pipe.execute()
    backend.record_audit(customer, AuditEntry(1e9, "ünï", "revoke", "x", "Chargeback."))
    trail = backend.audit(customer, 5000)
    assert len(trail) == AUDIT_KEEP
    assert trail[0] == AuditEntry(1e9, "ünï", "revoke", "x", "Chargeback.")
    assert [entry.detail for entry in trail[1:3]] == [
        f"plan={AUDIT_KEEP + 4}",
        f"plan={AUDIT_KEEP + 3}",
    ]
    assert trail[-1].detail == "plan=6"
    assert backend.audit(customer, 0) == []
    assert client.pttl(backend.keys.audit(customer)) == -1
    assert backend.list_customers(10) == []  # an audit trail alone is not usage or settings
    backend.close()


def test_guards_accept_redis_py_clients(server: Any, cluster: Any) -> None:
    prefix_free = redis_support.fresh_prefix()  # the guard uses the default prefix "qg"
    guard = Guard(
        [WINDOW], redis.Redis(host=redis_support.HOST, port=server.port), default_plan="w"
    )
    assert isinstance(guard.backend, RedisBackend)
    assert guard.acquire(prefix_free, 10).limit("hundred").remaining == 90
    guard.close()
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in cluster.startup]
    guard = Guard([WINDOW], redis.cluster.RedisCluster(startup_nodes=nodes), default_plan="w")
    assert isinstance(guard.backend, RedisBackend)
    assert guard.acquire(prefix_free, 10).allowed
    guard.close()

    async def main() -> None:
        client = redis.asyncio.Redis(host=redis_support.HOST, port=server.port)
        aguard = AsyncGuard([WINDOW], client, default_plan="w")
        assert isinstance(aguard.backend, AsyncRedisBackend)
        assert (await aguard.acquire(prefix_free, 5)).limit("hundred").remaining == 85
        await aguard.close()

    redis_support.run(main())


def _keys(client: Any, pattern: str) -> list[bytes]:
    if isinstance(client, redis.cluster.RedisCluster):
        return list(client.scan_iter(match=pattern, target_nodes=client.ALL_NODES))
    return list(client.scan_iter(match=pattern))


@pytest.mark.parametrize("kind", ["standalone", "cluster"])
def test_every_usage_key_has_a_ttl(kind: str) -> None:
    client = redis_support.sync_client(kind)
    prefix = redis_support.fresh_prefix()
    guard = Guard([THREE, WINDOW], RedisBackend(client, prefix=prefix), default_plan="three")
    guard.acquire("c", 5)
    guard.acquire("c", 5, plan="w")
    lease = guard.reserve("c", 50, ttl=30)
    assert lease.allowed
    lease.settle(20)
    guard.override("c", "weekly", 10)  # settings: persistent by design
    keys = _keys(client, f"{prefix}:*")
    assert len(keys) == 5  # state, settings, audit trail, lease record, lease owner
    for key in keys:
        ttl = client.pttl(key)
        if key.endswith((b":m", b":a")):  # operator records: persistent by design
            assert ttl == -1
        else:
            assert 0 < ttl <= 7 * 24 * 3600 * 1000 + 3600 * 1000 + 1000, key
    state_ttl = client.pttl(f"{prefix}:{{c}}:s")
    assert state_ttl > 7 * 24 * 3600 * 1000  # the weekly window's last bucket
    guard.close()


def _memory(client: Any, prefix: str, customer: str) -> int:
    keys = _keys(client, f"{prefix}:{{{customer}}}:*")
    return sum(client.memory_usage(key, samples=0) for key in keys)


def test_memory_per_customer_on_a_three_limit_plan(server: Any) -> None:
    client = redis_support.sync_client("standalone")
    prefix = redis_support.fresh_prefix()
    backend = RedisBackend(client, prefix=prefix)
    clock = FakeClock()
    guard = Guard([THREE], backend, default_plan="three", clock=clock)
    assert guard.acquire("typical", {"tokens": 1200}).allowed
    typical = _memory(client, prefix, "typical")
    # a busy customer: 20 calls an hour for a whole week fills both rings
    for _ in range(7 * 24 * 20):
        assert guard.acquire("busy", {"tokens": 1400}).allowed
        clock.advance(180)
    busy = _memory(client, prefix, "busy")
    print(f"MEMORY USAGE per customer: typical {typical} B, busy (full rings) {busy} B")
    assert typical <= 1024
    assert busy <= 1024
    guard.close()


def test_connection_refused_is_backend_unavailable_and_follows_the_policy() -> None:
    uri = f"redis://127.0.0.1:{redis_support.free_port()}"
    backend = backend_from_uri(uri)
    with pytest.raises(BackendUnavailable) as info:
        backend.decide(Guard([WINDOW]).catalogue, Request("c", 1, None, "w"))
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert Guard([WINDOW], backend, default_plan="w").acquire("c").outcome is Outcome.FAIL_OPEN
    closed = Guard([WINDOW], backend_from_uri(uri), default_plan="w", failure="closed")
    decision = closed.acquire("c")
    assert decision.outcome is Outcome.FAIL_CLOSED and not decision.allowed


def test_a_silent_server_times_out_quickly() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # accepts connections, never answers
        port = listener.getsockname()[1]
        guard = Guard([WINDOW], backend_from_uri(f"redis://127.0.0.1:{port}"), default_plan="w")
        started = time.monotonic()
        decision = guard.acquire("c")
        elapsed = time.monotonic() - started
    assert decision.outcome is Outcome.FAIL_OPEN
    assert elapsed < 1.5


def test_async_connection_refused_fails_open() -> None:
    async def main() -> None:
        uri = f"redis://127.0.0.1:{redis_support.free_port()}"
        guard = AsyncGuard([WINDOW], async_backend_from_uri(uri), default_plan="w")
        assert (await guard.acquire("c")).outcome is Outcome.FAIL_OPEN

    redis_support.run(main())


def test_uris_and_clients(server: Any, cluster: Any) -> None:
    plain = backend_from_uri(server.url + "?prefix=" + redis_support.fresh_prefix())
    assert isinstance(plain, RedisBackend)
    assert Guard([WINDOW], plain, default_plan="w").acquire("c").allowed
    clustered = backend_from_uri(cluster.url)
    assert isinstance(clustered, RedisBackend)
    assert (
        Guard([WINDOW], clustered, default_plan="w").acquire(redis_support.fresh_prefix()).allowed
    )
    wrapped = backend_from_client(redis_support.sync_client("standalone"))
    assert isinstance(wrapped, RedisBackend)
    assert isinstance(backend_from_client(redis_support.async_client("cluster")), AsyncRedisBackend)
    assert isinstance(async_backend_from_uri(cluster.url), AsyncRedisBackend)


def test_server_time_is_the_default_clock(server: Any) -> None:
    guard = Guard(
        [WINDOW],
        backend_from_uri(server.url + "?prefix=" + redis_support.fresh_prefix()),
        default_plan="w",
    )
    decision = guard.acquire("c", 10)
    # the bucket started at the server's time: its drop is within window + granularity
    assert 3600 < decision.limit("hundred").reset_after <= 3600 + 30
