"""The synchronous Redis backend: `RedisBackend` (redis-py ``Redis`` or ``RedisCluster``).

Only the I/O lives here; everything else is in `quotaguard.backends.redis.codec`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError, ResponseError

from quotaguard.backends.base import LeaseRequest, MetaChange
from quotaguard.clock import Clock
from quotaguard.core.audit import AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Decision, LimitStatus, Settlement
from quotaguard.core.errors import BackendUnavailable, QuotaguardError
from quotaguard.core.policy import Cost

from .batch import BATCH, BATCH_SOURCE
from .boundary import retry_pause
from .coalesce import ThreadCoalescer
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
from .settings import ClientSettings

T = TypeVar("T")


class RedisBackend(RedisBackendBase):
    """Shares every customer's limits between processes through Redis (or Redis Cluster).

    One script call per decision. ``client`` is a ``redis.Redis`` or
    ``redis.cluster.RedisCluster``; ``prefix`` starts every key; without ``clock`` the
    Redis server's ``TIME`` is the clock. ``settings`` bound each call (time budget,
    calls in flight) and size the local cache of denials; ``on_eviction_risk`` is called
    once if the server's ``maxmemory-policy`` can evict quotaguard's keys.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = "qg",
        clock: Clock | None = None,
        settings: ClientSettings | None = None,
        on_eviction_risk: EvictionHook | None = None,
    ) -> None:
        super().__init__(prefix, clock)
        self.client = client
        """The redis-py client."""
        self.edge = Edge(settings, on_eviction_risk)
        """Settings, failure log, local answers and eviction check of this backend."""
        self._gate = threading.BoundedSemaphore(self.edge.settings.max_connections)
        self._cluster = isinstance(client, RedisCluster)
        self._scripts: dict[str, Script] = {
            name: client.register_script(source)
            for name, source in (*SCRIPTS.items(), (BATCH, BATCH_SOURCE))
        }
        settings = self.edge.settings
        self._coalescer = (
            ThreadCoalescer(self._send_to, settings.max_batch) if settings.coalesce else None
        )

    def __repr__(self) -> str:
        return f"RedisBackend({self.client!r}, prefix={self.keys.prefix!r})"

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
        """``call``'s reply, retried as `retry_pause` allows before ``deadline``.

        On a cluster, a decide that meets its slot in migration is made again in its
        single-key form (see `quotaguard.backends.redis.migration`).
        """
        attempt = 0
        single_keys = False
        while True:
            try:
                if single_keys:
                    return self._drive(during_migration(call), deadline)  # type: ignore[arg-type]
                return self._execute(call, deadline)
            except QuotaguardError:
                raise
            except Exception as error:
                if self._cluster and migrating(error) and can_migrate(call):
                    single_keys = True
                pause = retry_pause(error, attempt, deadline - time.monotonic(), self.edge.settings)
                if pause is None:
                    self.edge.failures.record(error)
                    raise unavailable(error) from error
            attempt += 1
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
        try:
            if self._cluster:
                info = self.client.info("memory", target_nodes=RedisCluster.PRIMARIES)
            else:
                info = self.client.info("memory")
        except ResponseError:  # managed servers may refuse INFO: then say nothing
            self.edge.eviction_checked = True
            return
        except Exception:  # unreachable: check at the next call
            return
        self.edge.checked_eviction(info)

    def _execute(self, call: Call, deadline: float) -> Any:
        if isinstance(call, ScriptCall):
            if self._coalescer is not None and can_migrate(call):
                node = self.client.get_node_from_key(call.keys[0]) if self._cluster else None  # type: ignore[union-attr]
                reply = self._coalescer.call(call, node, deadline)
                if reply is not SINGLE:
                    return reply
            return self._evalsha(call)
        if isinstance(call, CommandCall):
            return self.client.execute_command(*call.args)  # type: ignore[no-untyped-call]
        if isinstance(call, ScanCall):
            return self._scan(call)
        if isinstance(call, NodesCall):
            return self.client.get_primaries() if self._cluster else [None]  # type: ignore[union-attr]
        return self._reserve(call)

    def _evalsha(self, call: ScriptCall, **options: Any) -> Any:
        """EVALSHA straight through ``execute_command``, no ``Script`` wrapper per call.

        After NOSCRIPT (restart, failover, ``SCRIPT FLUSH``): load the script, retry once.
        """
        script = self._scripts[call.script]
        keys = call.keys
        client: Any = self.client
        try:
            return client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *call.args, **options
            )
        except NoScriptError:
            script.sha = client.script_load(script.script)
            return client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *call.args, **options
            )

    def _send_to(self, call: ScriptCall, node: Any) -> Any:
        """``call`` on ``node`` (None: where the client routes it by its keys)."""
        return self._evalsha(call) if node is None else self._evalsha(call, target_nodes=node)

    def _scan(self, call: ScanCall) -> tuple[int, list[Any]]:
        client: Any = self.client
        if call.node is None:
            return client.scan(call.cursor, match=call.match, count=call.count)  # type: ignore[no-any-return]
        cursors, keys = client.scan(
            call.cursor, match=call.match, count=call.count, target_nodes=call.node
        )
        return next(iter(cursors.values())), keys

    def _reserve(self, call: ReserveCall) -> Any:
        script = self._scripts[call.call.script]
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command(
                "EVALSHA", script.sha, len(call.call.keys), *call.call.keys, *call.call.args
            )
            pipe.set(call.owner_key, call.owner, px=call.px)
            replies = pipe.execute(raise_on_error=False)
            if isinstance(replies[0], NoScriptError):
                script.sha = self.client.script_load(script.script)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            return replies[0]
        raise NoScriptError("NOSCRIPT persists after SCRIPT LOAD")

    def decide(
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
        """See `quotaguard.backends.base.Backend.decide`.

        A denial remembered from Redis may answer without a round trip (see
        `quotaguard.backends.redis.local`); while Redis is unreachable, a known revocation
        or denial answers instead of `BackendUnavailable`.
        """
        edge = self.edge
        operation = self._decide(catalogue, customer, cost, scope, plan, now, lease, shadow)
        try:
            decision = self._run(
                edge.unless_denied(catalogue, customer, cost, scope, plan, shadow, now, operation)
            )
        except BackendUnavailable as error:
            return edge.outage_answer(
                error, self._meta, catalogue, customer, cost, scope, plan, shadow, now
            )
        return decision

    def settle(
        self, catalogue: PlanCatalogue, lease_id: str, actual: Cost, now: int | None
    ) -> Settlement:
        """See `quotaguard.backends.base.Backend.settle`."""
        return self._run(self._settle(lease_id, actual, now, self.edge.local.forget))

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
        self.edge.local.forget(customer)
        return self._run(self._update_meta(customer, change))

    def reset(self, customer: str, limits: Collection[str] | None) -> None:
        """See `quotaguard.backends.base.Backend.reset`."""
        self.edge.local.forget(customer)
        self._run(self._reset(customer, limits))

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
