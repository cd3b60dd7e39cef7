"""A decision whose customer's slot sits half migrated, driven by hand on Redis Cluster.

redis-py's asyncio cluster client follows an ``ASK`` redirection by sending ``ASKING``
and then the command as two pooled commands, which land on two different connections
as soon as the target node has more than one free connection. Redis then answers
``MOVED`` back to the source, which answers ``ASK`` again, until redis-py's redirection
limit ("TTL exhausted"). Each test here gives the target node several free connections
first, so that sequence happens on every decision unless the backend keeps ``ASKING``
and the command on one connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from quotaguard import AsyncGuard, Guard, Outcome, Plan, RollingWindow
from tests import redis_support

pytestmark = pytest.mark.slow

PLAN = Plan("p", [RollingWindow("calls", 1_000, 3600)])
DECISIONS = 20


@pytest.fixture(scope="module")
def cluster() -> Iterator[redis_support.RedisClusterServers]:
    servers = redis_support.RedisClusterServers().start()
    yield servers
    servers.cleanup()


def _node_id(node: redis_support.RedisServer) -> str:
    with node.client() as client:
        return str(client.execute_command("CLUSTER", "MYID").decode())


def _half_migrate(
    cluster: redis_support.RedisClusterServers, customer: str, *, keys_moved: bool
) -> redis_support.RedisServer:
    """Mark the customer's slot MIGRATING/IMPORTING; with ``keys_moved``, MIGRATE its keys."""
    source = cluster.node_for(f"{{{customer}}}")
    target = next(node for node in cluster.nodes if node is not source)
    slot = key_slot(f"{{{customer}}}".encode())
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target))
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if keys_moved:
            host = redis_support.HOST
            src.execute_command("MIGRATE", host, target.port, "", 0, 5000, "KEYS", *keys)
    return target


@pytest.mark.parametrize("keys_moved", [False, True])
def test_async_decisions_stay_exact_while_asking_the_target(
    cluster: redis_support.RedisClusterServers, keys_moved: bool
) -> None:
    customer = f"asking-{keys_moved}"
    uri = f"{cluster.url}?prefix={redis_support.fresh_prefix()}"

    async def main() -> list[Outcome]:
        guard = AsyncGuard([PLAN], uri, default_plan="p", failure="open")
        assert (await guard.acquire(customer)).outcome is Outcome.ALLOWED
        target = _half_migrate(cluster, customer, keys_moved=keys_moved)
        client = guard.backend.client  # type: ignore[attr-defined]
        node = client.get_node(host=redis_support.HOST, port=target.port)
        await asyncio.gather(*(node.execute_command("PING") for _ in range(4)))
        outcomes = [(await guard.acquire(customer)).outcome for _ in range(DECISIONS)]
        await guard.close()
        return outcomes

    outcomes = redis_support.run(main())
    assert outcomes == [Outcome.ALLOWED] * DECISIONS
    guard = Guard([PLAN], uri, default_plan="p")
    assert guard.usage(customer).limit("calls").used == DECISIONS + 1
    guard.close()
