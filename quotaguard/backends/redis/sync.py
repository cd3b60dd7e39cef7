"""The synchronous Redis backend: `RedisBackend` (redis-py ``Redis`` or ``RedisCluster``).

A thin driver: only the blocking I/O lives here; the operations are in
`quotaguard.backends.redis.codec`, everything else the two drivers share in
`quotaguard.backends.redis.driver`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
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

from .boundary import Attempts
from .coalesce import ThreadCoalescer
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
from .settings import ClientSettings

T = TypeVar("T")


class RedisBackend(RedisDriver):
    """Shares every customer's limits between processes through Redis (or Redis Cluster).

    One script call per decision, or per batch of the decisions in flight together (see
    docs/redis.md, Coalescing). ``client`` is a ``redis.Redis`` or
    ``redis.cluster.RedisCluster``; ``prefix`` starts every key; without ``clock`` the
    Redis server's ``TIME`` is the clock. ``settings`` bound each call (time budget,
    calls in flight), size the local cache of denials and the batches;
    ``on_eviction_risk`` is called once if the server's ``maxmemory-policy`` can evict
    quotaguard's keys.
    """

    client: redis.Redis | RedisCluster

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = "qg",
        clock: Clock | None = None,
        settings: ClientSettings | None = None,
        on_eviction_risk: EvictionHook | None = None,
    ) -> None:
        super().__init__(client, prefix, clock, settings, on_eviction_risk)
        settings = self.edge.settings
        self._gate = threading.BoundedSemaphore(settings.max_connections)
        self._coalescer = ThreadCoalescer(self._send_to, settings.max_batch)

    def _run(self, operation: Operation[T]) -> T:
        """Drive ``operation`` within the call's budget; only QuotaguardErrors leave."""
        edge = self.edge
        budget = edge.settings.timeout
        deadline = time.monotonic() + budget
        if not self._gate.acquire(timeout=budget):
            raise BackendUnavailable(
                f"redis: no free connection within the {budget:g} s budget "
                f"(max_connections={edge.settings.max_connections})"
            )
        try:
            if not edge.eviction_checked:
                self._check_eviction()
            return self._drive(operation, deadline)
        except QuotaguardError:
            raise
        except Exception as error:
            edge.failures.record(error)
            raise unavailable(error) from error
        finally:
            self._gate.release()

    def _bounded(self, call: Call, deadline: float) -> Any:
        """``call``'s reply, retried as `quotaguard.backends.redis.boundary` allows."""
        edge = self.edge
        attempts = Attempts(edge.settings, edge.failures, deadline, self._cluster)
        while True:
            try:
                if attempts.single_keys:
                    return self._drive(during_migration(call), deadline)  # type: ignore[arg-type]
                return self._execute(call, deadline)
            except QuotaguardError:
                raise
            except Exception as error:
                pause = attempts.pause_after(error, call)
            if pause:
                time.sleep(pause)

    def _drive(self, operation: Operation[T], deadline: float) -> T:
        """Run ``operation``, each of its calls bounded by ``deadline``."""
        try:
            call = next(operation)
            while True:
                call = operation.send(self._bounded(call, deadline))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _check_eviction(self) -> None:
        info: Any
        try:
            info = self.client.info("memory", **self._info_options())
        except Exception as error:
            info = error
        self._read_eviction(info)

    def _execute(self, call: Call, deadline: float) -> Any:
        coalesced = self._coalesced(call)
        if coalesced is not None:
            reply = self._coalescer.call(coalesced, self._node_of(coalesced), deadline)
            if reply is not SINGLE:
                return reply
        client: Any = self.client
        if isinstance(call, ScriptCall):
            return self._send_to(call, None)
        if isinstance(call, CommandCall):
            return client.execute_command(*call.args)
        if isinstance(call, ScanCall):
            return scan_page(call, client.scan(call.cursor, **self._scan_options(call)))
        if isinstance(call, NodesCall):
            return self._nodes()
        return self._reserve(call)

    def _send_to(self, call: ScriptCall, node: Any) -> Any:
        """``call`` on ``node`` (None: where the client routes it by its keys).

        After NOSCRIPT (restart, failover, ``SCRIPT FLUSH``): load the script, retry once.
        """
        client: Any = self.client
        options = {} if node is None else {"target_nodes": node}
        try:
            return client.execute_command(*self._evalsha(call), **options)
        except NoScriptError:
            self._loaded(call, client.script_load(self._source(call)))
            return client.execute_command(*self._evalsha(call), **options)

    def _reserve(self, call: ReserveCall) -> Any:
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command(*self._evalsha(call.call))
            pipe.set(call.owner_key, call.owner, px=call.px)
            reply = reserve_reply(pipe.execute(raise_on_error=False))
            if reply is not None:
                return reply
            self._loaded(call.call, self.client.script_load(self._source(call.call)))
        raise NoScriptError("NOSCRIPT persists after SCRIPT LOAD")

    def decide(self, catalogue: PlanCatalogue, request: Request) -> Decision:
        """See `quotaguard.backends.base.Backend.decide`.

        A denial remembered from Redis may answer without a round trip (see
        `quotaguard.backends.redis.local`); while Redis is unreachable, a known revocation
        or denial answers instead of `BackendUnavailable`.
        """
        operation, outage = self._decision(catalogue, request)
        try:
            return self._run(operation)
        except BackendUnavailable as error:
            return outage(error)

    def settle(
        self, catalogue: PlanCatalogue, lease_id: str, actual: Cost, now: int | None
    ) -> Settlement:
        """See `quotaguard.backends.base.Backend.settle`."""
        return self._run(self._settling(lease_id, actual, now))

    def peek(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        scope: str | None,
        plan: str | None,
        now: int | None,
    ) -> tuple[str, tuple[LimitStatus, ...]]:
        """See `quotaguard.backends.base.Backend.peek`."""
        return self._run(self._peek(catalogue, customer, scope, plan, now))

    def load_meta(self, customer: str) -> CustomerMeta:
        """See `quotaguard.backends.base.Backend.load_meta`."""
        return self._run(self._load_meta(customer))

    def update_meta(self, customer: str, change: MetaChange) -> CustomerMeta:
        """See `quotaguard.backends.base.Backend.update_meta`."""
        return self._run(self._changing(customer, change))

    def reset(self, customer: str, limits: Collection[str] | None) -> None:
        """See `quotaguard.backends.base.Backend.reset`."""
        self._run(self._resetting(customer, limits))

    def record_audit(self, customer: str, entry: AuditEntry) -> None:
        """See `quotaguard.backends.base.Backend.record_audit`."""
        self._run(self._record_audit(customer, entry))

    def audit(self, customer: str, count: int) -> list[AuditEntry]:
        """See `quotaguard.backends.base.Backend.audit`."""
        return self._run(self._audit(customer, count))

    def list_customers(self, count: int) -> list[str]:
        """See `quotaguard.backends.base.Backend.list_customers`."""
        return self._run(self._list_customers(count))

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()
