"""The asyncio Redis backend: `AsyncRedisBackend` (``redis.asyncio`` clients).

A thin driver: only the awaited I/O lives here; the operations are in
`quotaguard.backends.redis.codec`, everything else the two drivers share in
`quotaguard.backends.redis.driver`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from quotaguard.backends.base import MetaChange
from quotaguard.clock import Clock
from quotaguard.core.audit import AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Decision, LimitStatus, Settlement
from quotaguard.core.errors import BackendUnavailable, QuotaguardError
from quotaguard.core.policy import Cost
from quotaguard.core.request import Request

from .asking import where_the_key_is
from .boundary import Attempts
from .coalesce import TaskCoalescer
from .codec import (
    Call,
    CommandCall,
    NodesCall,
    Operation,
    ReserveCall,
    ScanCall,
    ScriptCall,
    unavailable,
)
from .driver import RedisDriver, reserve_reply, scan_page
from .eviction import EvictionHook
from .lanes import SINGLE
from .migration import during_migration
from .refresh import BackgroundRefresh
from .settings import ClientSettings

T = TypeVar("T")


class AsyncRedisBackend(RedisDriver):
    """The asyncio twin of `RedisBackend`, on ``redis.asyncio.Redis`` or ``RedisCluster``.

    Each call is cancelled when its ``settings.timeout`` budget runs out.
    """

    client: redis.asyncio.Redis | RedisCluster

    def __init__(
        self,
        client: redis.asyncio.Redis | RedisCluster,
        *,
        prefix: str = "qg",
        clock: Clock | None = None,
        settings: ClientSettings | None = None,
        on_eviction_risk: EvictionHook | None = None,
    ) -> None:
        super().__init__(client, prefix, clock, settings, on_eviction_risk)
        self._refresh = BackgroundRefresh(client) if self._cluster else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gate, self._coalescer = self._turns()

    def _turns(self) -> tuple[asyncio.Semaphore, TaskCoalescer]:
        """A new gate (calls in flight at once) and coalescer: they belong to one loop."""
        settings = self.edge.settings
        return asyncio.Semaphore(settings.max_connections), TaskCoalescer(
            self._send_to, settings.max_batch
        )

    async def _run(self, operation: Operation[T]) -> T:
        """Drive ``operation`` within the call's budget; only QuotaguardErrors leave."""
        edge = self.edge
        budget = edge.settings.timeout
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                self._gate, self._coalescer = self._turns()
            self._loop = loop
        if self._cluster and not edge.eviction_checked:
            await self._discover()
        deadline = time.monotonic() + budget
        try:
            async with asyncio.timeout(budget) as limit:
                if not edge.eviction_checked:
                    async with self._gate:
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
        """``call``'s reply, retried as `quotaguard.backends.redis.boundary` allows.

        The single-key form of a decision in migration follows ``ASK`` on one connection
        (``asking``, see `quotaguard.backends.redis.asking`).
        """
        edge = self.edge
        attempts = Attempts(edge.settings, edge.failures, deadline, self._cluster)
        while True:
            try:
                if attempts.single_keys:
                    single_key_form = during_migration(call)  # type: ignore[arg-type]
                    return await self._drive(single_key_form, deadline, asking=True)
                return await self._execute(call, asking)
            except QuotaguardError:
                raise
            except Exception as error:
                if self._refresh is not None:
                    self._refresh.after_failure(error)
                pause = attempts.pause_after(error, call)
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
        info: Any
        try:
            info = await self.client.info("memory", **self._info_options())
        except Exception as error:
            info = error
        self._read_eviction(info)

    async def _execute(self, call: Call, asking: bool = False) -> Any:
        """``call``'s reply, holding a connection only while the call is in flight.

        A decision waiting for its batch holds none: the batch's leader takes one.
        """
        coalesced = None if asking else self._coalesced(call)
        if coalesced is not None:
            reply = await self._coalescer.call(coalesced, self._node_of(coalesced))
            if reply is not SINGLE:
                return reply
        async with self._gate:
            return await self._execute_alone(call, asking)

    async def _execute_alone(self, call: Call, asking: bool) -> Any:
        client: Any = self.client
        if isinstance(call, ScriptCall):
            return await self._evalsha_by(call, self._sender(call.keys, asking))
        if isinstance(call, CommandCall):
            if asking and self._cluster:  # single-key commands only: args[1] is the key
                return await where_the_key_is(client, call.args[1], *call.args)
            return await client.execute_command(*call.args)
        if isinstance(call, ScanCall):
            return scan_page(call, await client.scan(call.cursor, **self._scan_options(call)))
        if isinstance(call, NodesCall):
            return self._nodes()
        return await self._reserve(call)

    def _sender(self, keys: Sequence[Any], asking: bool) -> Callable[..., Awaitable[Any]]:
        """What sends a command about ``keys``: the client, or by hand after ``ASK``."""
        client: Any = self.client
        if asking and self._cluster and keys:
            return functools.partial(where_the_key_is, client, keys[0])
        return client.execute_command  # type: ignore[no-any-return]

    async def _evalsha_by(self, call: ScriptCall, send: Callable[..., Awaitable[Any]]) -> Any:
        """``call`` through ``send``; after NOSCRIPT: load the script, retry once."""
        try:
            return await send(*self._evalsha(call))
        except NoScriptError:
            self._loaded(call, await self.client.script_load(self._source(call)))
            return await send(*self._evalsha(call))

    async def _send_to(self, call: ScriptCall, node: Any) -> Any:
        """``call`` on ``node`` (None: where the client routes it by its keys)."""
        send: Any = self.client.execute_command
        async with self._gate:
            if node is None:
                return await self._evalsha_by(call, send)
            return await self._evalsha_by(call, functools.partial(send, target_nodes=node))

    async def _reserve(self, call: ReserveCall) -> Any:
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command(*self._evalsha(call.call))
            pipe.set(call.owner_key, call.owner, px=call.px)
            reply = reserve_reply(await pipe.execute(raise_on_error=False))
            if reply is not None:
                return reply
            self._loaded(call.call, await self.client.script_load(self._source(call.call)))
        raise NoScriptError("NOSCRIPT persists after SCRIPT LOAD")

    async def decide(self, catalogue: PlanCatalogue, request: Request) -> Decision:
        """See `RedisBackend.decide`."""
        operation, outage = self._decision(catalogue, request)
        try:
            return await self._run(operation)
        except BackendUnavailable as error:
            return outage(error)

    async def settle(
        self, catalogue: PlanCatalogue, lease_id: str, actual: Cost, now: int | None
    ) -> Settlement:
        """See `quotaguard.backends.base.Backend.settle`."""
        return await self._run(self._settling(lease_id, actual, now))

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
        return await self._run(self._changing(customer, change))

    async def reset(self, customer: str, limits: Collection[str] | None) -> None:
        """See `quotaguard.backends.base.Backend.reset`."""
        await self._run(self._resetting(customer, limits))

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
