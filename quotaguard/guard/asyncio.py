"""`AsyncGuard`: the guard's operations driven with awaited backend calls."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

import quotaguard.guard.changes as changes
from quotaguard.backends.base import AsyncBackend, Backend
from quotaguard.clock import Clock
from quotaguard.core.audit import AuditEntry
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Decision, Settlement
from quotaguard.core.policy import Cost, Limit
from quotaguard.lease import AsyncLease

from .arguments import PlansArgument
from .base import GuardBase
from .drivers import Operation, run, run_async
from .observers import Observer
from .records import Usage
from .storage import async_backend, inline_backend

if TYPE_CHECKING:
    from .sync import Guard

T = TypeVar("T")


class AsyncGuard(GuardBase):
    """The asyncio twin of `Guard`: the same arguments, the same results, awaited."""

    def __init__(
        self,
        plans: PlansArgument,
        storage: str | Backend | AsyncBackend = "memory://",
        *,
        default_plan: str | None = None,
        clock: Clock | None = None,
        failure: str = "open",
        shadow: bool = False,
        observers: Sequence[Observer] = (),
        lease_ttl: float | str | None = None,
    ) -> None:
        super().__init__(
            plans,
            default_plan=default_plan,
            clock=clock,
            failure=failure,
            shadow=shadow,
            observers=observers,
            lease_ttl=lease_ttl,
        )
        self.backend: AsyncBackend = async_backend(storage, clock)
        """The storage backend."""
        self._backend_name = self.backend.name
        self._inline = inline_backend(self.backend)

    @classmethod
    def sharing(cls, guard: Guard) -> AsyncGuard:
        """An `AsyncGuard` over the same plans, settings and state as the sync ``guard``.

        For an asyncio application (an ASGI middleware) given a `Guard`: both decide
        against one store. Only a backend that never waits on I/O (memory) can be shared
        this way; any other raises `ConfigurationError` (build an `AsyncGuard` on its
        asynchronous variant instead).
        """
        twin = cls(
            guard.catalogue,
            guard.backend,
            clock=guard.clock,
            failure=guard.failure,
            shadow=guard.shadow,
            observers=guard.observers,
        )
        twin.lease_ttl_us = guard.lease_ttl_us
        return twin

    @property
    def decides_inline(self) -> bool:
        """Whether decisions complete without awaiting (an in-process backend, memory).

        Then `acquire_nowait` answers instead of returning None.
        """
        return self._inline is not None

    async def _run(self, operation: Operation[T]) -> T:
        """Run ``operation`` with awaited calls of the backend (the async driver).

        An in-process backend answers inline, without awaiting.
        """
        inline = self._inline
        if inline is not None:
            return run(operation, inline)
        return await run_async(operation, self.backend)

    _run_awaitable = _run

    async def acquire(
        self, customer: str, cost: Cost = 1, *, scope: str | None = None, plan: str | None = None
    ) -> Decision:
        """See `Guard.acquire`."""
        if self._inline is not None:
            return self._decide_now(customer, cost, scope=scope, plan=plan)
        return await run_async(self._decide(customer, cost, scope, plan, None), self.backend)

    def acquire_nowait(
        self, customer: str, cost: Cost = 1, *, scope: str | None = None, plan: str | None = None
    ) -> Decision | None:
        """`acquire` without awaiting, when the backend is in-process (memory); else None.

        The memory backend never waits on I/O, so a caller on the event loop (the ASGI
        middleware) can decide inline and skip two coroutines. Same validation, failure
        policy and observers as `acquire`.
        """
        if self._inline is None:
            return None
        return GuardBase._decide_now(self, customer, cost, scope=scope, plan=plan)

    async def reserve(
        self,
        customer: str,
        cost: Cost,
        *,
        scope: str | None = None,
        plan: str | None = None,
        ttl: float | str | None = None,
    ) -> AsyncLease:
        """See `Guard.reserve`."""
        return AsyncLease(self, *await self._run(self._reserve(customer, cost, scope, plan, ttl)))

    async def settle(
        self,
        lease_id: str,
        actual: Cost,
        *,
        customer: str | None = None,
        plan: str | None = None,
    ) -> Settlement:
        """See `Guard.settle`."""
        return await self._run(self._settle(lease_id, actual, customer, plan))

    async def usage(
        self, customer: str, *, scope: str | None = None, plan: str | None = None
    ) -> Usage:
        """See `Guard.usage`."""
        return await self._run(self._usage(customer, scope, plan))

    async def customer(self, customer: str) -> CustomerMeta:
        """See `Guard.customer`."""
        return await self._run(self._customer(customer))

    async def customers(self, count: int = 10_000) -> list[str]:
        """See `Guard.customers`."""
        return await self._run(self._customers(count))

    async def audit(self, customer: str, count: int = 100) -> list[AuditEntry]:
        """See `Guard.audit`."""
        return await self._run(self._audit(customer, count))

    async def assign(
        self, customer: str, plan: str | None, *, actor: str | None = None
    ) -> CustomerMeta:
        """See `Guard.assign`."""
        return await self._run(self._change(changes.assign(self.catalogue, customer, plan, actor)))

    async def override(
        self,
        customer: str,
        limit: str | Limit,
        value: int | str | None = None,
        *,
        plan: str | None = None,
        actor: str | None = None,
    ) -> CustomerMeta:
        """See `Guard.override`."""
        change = changes.override(self.catalogue, customer, limit, value, plan, actor)
        return await self._run(self._change(change))

    async def revoke(
        self,
        customer: str,
        reason: str,
        *,
        allow_scopes: Mapping[str, str] | Collection[str] | None = None,
        actor: str | None = None,
    ) -> CustomerMeta:
        """See `Guard.revoke`."""
        change = changes.revoke(self.catalogue, customer, reason, allow_scopes, actor)
        return await self._run(self._change(change))

    async def restore(self, customer: str, *, actor: str | None = None) -> CustomerMeta:
        """See `Guard.restore`."""
        return await self._run(self._change(changes.restore(customer, actor)))

    async def set_shadow(
        self, customer: str, shadow: bool | None, *, actor: str | None = None
    ) -> CustomerMeta:
        """See `Guard.set_shadow`."""
        return await self._run(self._change(changes.shadow(customer, shadow, actor)))

    async def reset(
        self, customer: str, limits: Collection[str] | None = None, *, actor: str | None = None
    ) -> None:
        """See `Guard.reset`."""
        await self._run(self._reset(customer, limits, actor))

    async def close(self) -> None:
        """See `Guard.close`."""
        await self.backend.close()

    async def __aenter__(self) -> AsyncGuard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
