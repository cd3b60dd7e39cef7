"""What `RedisBackend` and `AsyncRedisBackend` share: everything but the I/O.

Each of the two drivers runs the operations of `quotaguard.backends.redis.codec` (sans-I/O
generators of calls) with blocking or awaited I/O. What each call sends, how its reply
is read, which calls are coalesced and where they go, and the local answers around a
decision (see `quotaguard.backends.redis.local`) are written here, once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import Any

import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import NoScriptError, ResponseError

from quotaguard.backends.base import MetaChange
from quotaguard.clock import Clock
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Decision, Settlement
from quotaguard.core.errors import BackendUnavailable
from quotaguard.core.policy import Cost
from quotaguard.core.request import Request

from .batch import BATCH, BATCH_SOURCE
from .codec import SCRIPTS, Call, Operation, RedisBackendBase, ScanCall, ScriptCall
from .edge import Edge
from .eviction import EvictionHook
from .migration import can_migrate
from .settings import ClientSettings

_CLUSTERS = (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)


class RedisDriver(RedisBackendBase):
    """The state and the I/O-free half of a Redis backend, sync or async."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        clock: Clock | None,
        settings: ClientSettings | None,
        on_eviction_risk: EvictionHook | None,
    ) -> None:
        super().__init__(prefix, clock)
        self.client = client
        """The redis-py client."""
        self.edge = Edge(settings, on_eviction_risk)
        """Settings, failure log, local answers and eviction check of this backend."""
        self._cluster = isinstance(client, _CLUSTERS)
        self._scripts: dict[str, Any] = {
            name: client.register_script(source)
            for name, source in (*SCRIPTS.items(), (BATCH, BATCH_SOURCE))
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r}, prefix={self.keys.prefix!r})"

    # -- the operations, with the local answers around them ---------------------------

    def _decision(
        self, catalogue: PlanCatalogue, request: Request
    ) -> tuple[Operation[Decision], Callable[[BackendUnavailable], Decision]]:
        """A decision operation, and the answer to give when Redis cannot make it.

        A remembered denial answers the operation without I/O; the answer in an outage is
        a known revocation or denial, else the `BackendUnavailable` raised again.
        """
        customer, cost, scope, plan, now, _, shadow = request
        operation = self._decide(catalogue, request)
        edge = self.edge
        outage = functools.partial(
            edge.outage_answer,
            seen=self._meta,
            catalogue=catalogue,
            customer=customer,
            cost=cost,
            scope=scope,
            plan=plan,
            shadow=shadow,
            now=now,
        )
        denied = edge.unless_denied(catalogue, customer, cost, scope, plan, shadow, now, operation)
        return denied, outage

    def _settling(self, lease_id: str, actual: Cost, now: int | None) -> Operation[Settlement]:
        """Settle a lease; the customer's remembered denial is forgotten."""
        return self._settle(lease_id, actual, now, self.edge.local.forget)

    def _changing(self, customer: str, change: MetaChange) -> Operation[CustomerMeta]:
        """Change a customer's settings; their remembered denial is forgotten first."""
        self.edge.local.forget(customer)
        return self._update_meta(customer, change)

    def _resetting(self, customer: str, limits: Collection[str] | None) -> Operation[None]:
        """Reset a customer's usage; their remembered denial is forgotten first."""
        self.edge.local.forget(customer)
        return self._reset(customer, limits)

    # -- what the calls send ---------------------------------------------------------

    def _coalesced(self, call: Call) -> ScriptCall | None:
        """``call`` when it joins a batch: a decide naming several keys, coalescing on."""
        if self.edge.settings.coalesce and isinstance(call, ScriptCall) and can_migrate(call):
            return call
        return None

    def _node_of(self, call: ScriptCall) -> Any:
        """The node whose batches ``call`` joins (None on a standalone server)."""
        return self.client.get_node_from_key(call.keys[0]) if self._cluster else None

    def _evalsha(self, call: ScriptCall) -> tuple[Any, ...]:
        """The EVALSHA command of ``call`` (straight through, no ``Script`` per call)."""
        keys = call.keys
        return ("EVALSHA", self._scripts[call.script].sha, len(keys), *keys, *call.args)

    def _source(self, call: ScriptCall) -> str:
        """The Lua source of ``call``'s script, to load it after NOSCRIPT."""
        return str(self._scripts[call.script].script)

    def _loaded(self, call: ScriptCall, sha: Any) -> None:
        """Record the SHA that ``SCRIPT LOAD`` answered for ``call``'s script."""
        self._scripts[call.script].sha = sha

    def _info_options(self) -> dict[str, Any]:
        """Where ``INFO memory`` goes: every primary of a cluster."""
        return {"target_nodes": _CLUSTERS[0].PRIMARIES} if self._cluster else {}

    def _read_eviction(self, info: Any) -> None:
        """Record the ``INFO memory`` reply, or the error that came instead.

        Managed servers may refuse INFO (a `ResponseError`): then say nothing. Any other
        error (unreachable): check at the next call.
        """
        if isinstance(info, ResponseError):
            self.edge.eviction_checked = True
        elif not isinstance(info, Exception):
            self.edge.checked_eviction(info)

    def _nodes(self) -> list[Any]:
        """The nodes to scan: every primary of a cluster, else the one server (None)."""
        return self.client.get_primaries() if self._cluster else [None]

    def _scan_options(self, call: ScanCall) -> dict[str, Any]:
        options: dict[str, Any] = {"match": call.match, "count": call.count}
        if call.node is not None:
            options["target_nodes"] = call.node
        return options


def scan_page(call: ScanCall, reply: Any) -> tuple[int, list[Any]]:
    """(cursor, keys) of a ``SCAN`` reply (a cluster answers per node)."""
    if call.node is None:
        return reply  # type: ignore[no-any-return]
    cursors, keys = reply
    return next(iter(cursors.values())), keys


def reserve_reply(replies: Sequence[Any]) -> Any:
    """The decide reply of a reserve's pipeline; None: the script must be loaded first."""
    if isinstance(replies[0], NoScriptError):
        return None
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies[0]
