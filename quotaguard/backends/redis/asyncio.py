"""The asyncio Redis backend: `AsyncRedisBackend` (``redis.asyncio`` clients).

Only the I/O lives here; everything else is in `quotaguard.backends.redis.codec`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from quotaguard.backends.base import LeaseRequest, MetaChange
from quotaguard.clock import Clock
from quotaguard.core.audit import AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Decision, LimitStatus, Settlement
from quotaguard.core.errors import BackendUnavailable, QuotaguardError
from quotaguard.core.policy import Cost

from .asking import where_the_key_is
from .batch import BATCH, BATCH_SOURCE
from .boundary import retry_pause
from .coalesce import TaskCoalescer
from .codec import (
    SCRIPTS,
    Call,
    CommandCall,
    NodesCall,
    Operation,
    RedisBackendBase,
    ReserveCall,
    ScanCall,
    ScriptCall,
    unavailable,
)
from .edge import Edge
from .eviction import EvictionHook
from .lanes import SINGLE
from .migration import can_migrate, during_migration, migrating
from .refresh import BackgroundRefresh
from .settings import ClientSettings

T = TypeVar("T")


class AsyncRedisBackend(RedisBackendBase):
    """The asyncio twin of `RedisBackend`, on ``redis.asyncio.Redis`` or ``RedisCluster``.

    Each call is cancelled when its ``settings.timeout`` budget runs out.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis | RedisCluster,
        *,
        prefix: str = "qg",
        clock: Clock | None = None,
        settings: ClientSettings | None = None,
        on_eviction_risk: EvictionHook | None = None,
    ) -> None:
        super().__init__(prefix, clock)
        self.client = client
        """The redis-py asyncio client."""
        self.edge = Edge(settings, on_eviction_risk)
        """Settings, failure log, local answers and eviction check of this backend."""
        self._gates: tuple[asyncio.AbstractEventLoop | None, asyncio.Semaphore, TaskCoalescer] = (
            None,
            asyncio.Semaphore(self.edge.settings.max_connections),
            TaskCoalescer(self._send_to, self.edge.settings.max_batch),
        )
        self._cluster = isinstance(client, RedisCluster)
        self._refresh = BackgroundRefresh(client) if self._cluster else None
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(source)
            for name, source in (*SCRIPTS.items(), (BATCH, BATCH_SOURCE))
        }

    def __repr__(self) -> str:
        return f"AsyncRedisBackend({self.client!r}, prefix={self.keys.prefix!r})"

    def _gate(self) -> asyncio.Semaphore:
        """The semaphore of the running loop (a semaphore belongs to one loop)."""
        loop = asyncio.get_running_loop()
        owner, gate, coalescer = self._gates
        if owner is not loop:
            if owner is not None:
                gate = asyncio.Semaphore(self.edge.settings.max_connections)
                coalescer = TaskCoalescer(self._send_to, self.edge.settings.max_batch)
            self._gates = (loop, gate, coalescer)
        return gate

    async def _run(self, operation: Operation[T]) -> T:
        """Drive ``operation`` within the call's budget; only QuotaguardErrors leave."""
        edge = self.edge
        budget = edge.settings.timeout
        if self._cluster and not edge.eviction_checked:
            await self._discover()
        deadline = time.monotonic() + budget
        try:
            async with asyncio.timeout(budget) as limit:
                if not edge.eviction_checked:
                    async with self._gate():
                        await self._check_eviction()
                return await self._drive(operation, deadline)
        except QuotaguardError:
            raise
        except Exception as error:
            if isinstance(error, TimeoutError) and limit.expired():
                raise BackendUnavailable(
                    f"redis: no answer within the {budget:g} s budget"
                ) from error
            edge.failures.record(error)
            raise unavailable(error) from error

    async def _bounded(self, call: Call, deadline: float, asking: bool = False) -> Any:
        """``call``'s reply, retried as `retry_pause` allows before ``deadline``.

        On a cluster, a decide that meets its slot in migration is made again in its
        single-key form (see `quotaguard.backends.redis.migration`), whose commands
        follow ``ASK`` on one connection (``asking``, see
        `quotaguard.backends.redis.asking`).
        """
        attempt = 0
        single_keys = False
        while True:
            try:
                if single_keys:
                    single_key_form = during_migration(call)  # type: ignore[arg-type]
                    return await self._drive(single_key_form, deadline, asking=True)
                return await self._execute(call, asking)
            except QuotaguardError:
                raise
            except Exception as error:
                if self._refresh is not None:
                    self._refresh.after_failure(error)
                if self._cluster and migrating(error) and can_migrate(call):
                    single_keys = True
                pause = retry_pause(error, attempt, deadline - time.monotonic(), self.edge.settings)
                if pause is None:
                    self.edge.failures.record(error)
                    raise unavailable(error) from error
            attempt += 1
            await asyncio.sleep(pause)

    async def _drive(self, operation: Operation[T], deadline: float, asking: bool = False) -> T:
        """Run ``operation``, each of its calls bounded by ``deadline``."""
        try:
            call = next(operation)
            while True:
                call = operation.send(await self._bounded(call, deadline, asking))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _discover(self) -> None:
        """Learn the cluster's topology once, before the first call's budget starts.

        Bounded by the connect and socket timeouts of each startup node tried.
        """
        try:
            await self.client.initialize()
        except Exception as error:
            self.edge.failures.record(error)
            raise unavailable(error) from error

    async def _check_eviction(self) -> None:
        try:
            if self._cluster:
                info = await self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
            else:
                info = await self.client.info("memory")
        except ResponseError:  # managed servers may refuse INFO: then say nothing
            self.edge.eviction_checked = True
            return
        except Exception:  # unreachable: check at the next call
            return
        self.edge.checked_eviction(info)

    async def _execute(self, call: Call, asking: bool = False) -> Any:
        """``call``'s reply, holding a connection only while the call is in flight.

        A decision waiting for its batch holds none: the batch's leader takes one.
        """
        coalesce = self.edge.settings.coalesce and not asking
        if coalesce and isinstance(call, ScriptCall) and can_migrate(call):
            node = self.client.get_node_from_key(call.keys[0]) if self._cluster else None  # type: ignore[union-attr]
            self._gate()  # the running loop's coalescer
            reply = await self._gates[2].call(call, node)
            if reply is not SINGLE:
                return reply
        async with self._gate():
            return await self._execute_alone(call, asking)

    async def _execute_alone(self, call: Call, asking: bool) -> Any:
        if isinstance(call, ScriptCall):
            return await self._evalsha(call, self._sender(call.keys, asking))
        if isinstance(call, CommandCall):
            if asking and self._cluster:  # single-key commands only: args[1] is the key
                return await where_the_key_is(self.client, call.args[1], *call.args)  # type: ignore[arg-type]
            return await self.client.execute_command(*call.args)
        if isinstance(call, ScanCall):
            return await self._scan(call)
        if isinstance(call, NodesCall):
            return self.client.get_primaries() if self._cluster else [None]  # type: ignore[union-attr]
        return await self._reserve(call)

    def _sender(self, keys: Sequence[Any], asking: bool) -> Callable[..., Awaitable[Any]]:
        """What sends a command about ``keys``: the client, or by hand after ``ASK``."""
        client: Any = self.client
        if asking and self._cluster and keys:
            return functools.partial(where_the_key_is, client, keys[0])
        return client.execute_command  # type: ignore[no-any-return]

    async def _evalsha(self, call: ScriptCall, send: Callable[..., Awaitable[Any]]) -> Any:
        """EVALSHA straight through ``send``, no ``Script`` wrapper per call.

        After NOSCRIPT (restart, failover, ``SCRIPT FLUSH``): load the script, retry once.
        """
        script = self._scripts[call.script]
        keys = call.keys
        try:
            return await send("EVALSHA", script.sha, len(keys), *keys, *call.args)
        except NoScriptError:
            script.sha = await self.client.script_load(script.script)
            return await send("EVALSHA", script.sha, len(keys), *keys, *call.args)

    async def _send_to(self, call: ScriptCall, node: Any) -> Any:
        """``call`` on ``node`` (None: where the client routes it by its keys)."""
        client: Any = self.client
        send = client.execute_command
        async with self._gate():
            if node is None:
                return await self._evalsha(call, send)
            return await self._evalsha(call, functools.partial(send, target_nodes=node))

    async def _scan(self, call: ScanCall) -> tuple[int, list[Any]]:
        client: Any = self.client
        if call.node is None:
            return await client.scan(call.cursor, match=call.match, count=call.count)  # type: ignore[no-any-return]
        cursors, keys = await client.scan(
            call.cursor, match=call.match, count=call.count, target_nodes=call.node
        )
        return next(iter(cursors.values())), keys

    async def _reserve(self, call: ReserveCall) -> Any:
        script = self._scripts[call.call.script]
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command(
                "EVALSHA", script.sha, len(call.call.keys), *call.call.keys, *call.call.args
            )
            pipe.set(call.owner_key, call.owner, px=call.px)
            replies = await pipe.execute(raise_on_error=False)
            if isinstance(replies[0], NoScriptError):
                script.sha = await self.client.script_load(script.script)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies[0]
        raise NoScriptError("NOSCRIPT persists after SCRIPT LOAD")

    async def decide(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        now: int | None,
        lease: LeaseRequest | None,
        shadow: bool,
    ) -> Decision:
        """See `RedisBackend.decide`."""
        edge = self.edge
        operation = self._decide(catalogue, customer, cost, scope, plan, now, lease, shadow)
        try:
            decision = await self._run(
                edge.unless_denied(catalogue, customer, cost, scope, plan, shadow, now, operation)
            )
        except BackendUnavailable as error:
            return edge.outage_answer(
                error, self._meta, catalogue, customer, cost, scope, plan, shadow, now
            )
        return decision

    async def settle(
        self, catalogue: PlanCatalogue, lease_id: str, actual: Cost, now: int | None
    ) -> Settlement:
        """See `quotaguard.backends.base.Backend.settle`."""
        return await self._run(self._settle(lease_id, actual, now, self.edge.local.forget))

    async def peek(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        scope: str | None,
        plan: str | None,
        now: int | None,
    ) -> tuple[str, tuple[LimitStatus, ...]]:
        """See `quotaguard.backends.base.Backend.peek`."""
        return await self._run(self._peek(catalogue, customer, scope, plan, now))

    async def load_meta(self, customer: str) -> CustomerMeta:
        """See `quotaguard.backends.base.Backend.load_meta`."""
        return await self._run(self._load_meta(customer))

    async def update_meta(self, customer: str, change: MetaChange) -> CustomerMeta:
        """See `quotaguard.backends.base.Backend.update_meta`."""
        self.edge.local.forget(customer)
        return await self._run(self._update_meta(customer, change))

    async def reset(self, customer: str, limits: Collection[str] | None) -> None:
        """See `quotaguard.backends.base.Backend.reset`."""
        self.edge.local.forget(customer)
        await self._run(self._reset(customer, limits))

    async def record_audit(self, customer: str, entry: AuditEntry) -> None:
        """See `quotaguard.backends.base.Backend.record_audit`."""
        await self._run(self._record_audit(customer, entry))

    async def audit(self, customer: str, count: int) -> list[AuditEntry]:
        """See `quotaguard.backends.base.Backend.audit`."""
        return await self._run(self._audit(customer, count))

    async def list_customers(self, count: int) -> list[str]:
        """See `quotaguard.backends.base.Backend.list_customers`."""
        return await self._run(self._list_customers(count))

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()
