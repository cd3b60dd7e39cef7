"""`Guard`: the guard's operations driven with blocking backend calls."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TypeVar

import quotaguard.guard.changes as changes
from quotaguard.backends.base import Backend
from quotaguard.clock import Clock
from quotaguard.core.audit import AuditEntry
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Settlement
from quotaguard.core.policy import Cost, Limit
from quotaguard.lease import Lease

from .arguments import PlansArgument
from .base import GuardBase
from .drivers import Operation, run
from .observers import Observer
from .records import Usage
from .storage import sync_backend

T = TypeVar("T")


class Guard(GuardBase):
    """Decides, for each request of a customer, whether their plan's limits admit it.

    ::

        guard = Guard(plans, default_plan="free")      # memory:// by default
        decision = guard.acquire("customer-42", cost=1)
        if not decision.allowed:
            ...  # decision.retry_after seconds, decision.denied_by

    ``failure`` is the policy when the backend fails: "open" (admit, counted) or
    "closed" (refuse). ``shadow=True`` decides and reports but never blocks.
    """

    def __init__(
        self,
        plans: PlansArgument,
        storage: str | Backend = "memory://",
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
        self.backend: Backend = sync_backend(storage, clock)
        """The storage backend."""
        self._backend_name = self.backend.name
        self._inline = self.backend

    def _run(self, operation: Operation[T]) -> T:
        """Run ``operation`` with blocking calls of the backend (the sync driver)."""
        return run(operation, self.backend)

    async def _run_awaitable(self, operation: Operation[T]) -> T:
        """`_run`, awaitable (for async code using a sync guard on the memory backend)."""
        return run(operation, self.backend)

    acquire = GuardBase._decide_now
    """``acquire(customer, cost=1, *, scope=None, plan=None) -> Decision``: decide whether
    ``customer`` may spend ``cost`` now, and consume it if so.

    All of the plan's limits are checked and consumed together, or none is. (The sync
    driver needs no generator for a decision: this is `GuardBase._decide_now` itself.)"""

    def reserve(
        self,
        customer: str,
        cost: Cost,
        *,
        scope: str | None = None,
        plan: str | None = None,
        ttl: float | str | None = None,
    ) -> Lease:
        """Reserve an estimated ``cost`` now; settle the actual cost later.

        The returned `Lease` holds the estimate (and a concurrency slot) until
        ``lease.settle(actual)``; if never settled, its slot frees after ``ttl``.
        """
        return Lease(self, *self._run(self._reserve(customer, cost, scope, plan, ttl)))

    def settle(
        self,
        lease_id: str,
        actual: Cost,
        *,
        customer: str | None = None,
        plan: str | None = None,
    ) -> Settlement:
        """Charge ``actual`` for the lease instead of its estimate.

        A second call charges nothing, whatever its amount: it returns the first
        settlement's amount as ``actual``, with ``already_settled=True``.

        ``customer`` and ``plan`` are only passed on to observers (`Lease.settle` passes
        them).
        """
        return self._run(self._settle(lease_id, actual, customer, plan))

    def usage(self, customer: str, *, scope: str | None = None, plan: str | None = None) -> Usage:
        """The customer's usage of every limit of their plan, consuming nothing."""
        return self._run(self._usage(customer, scope, plan))

    def customer(self, customer: str) -> CustomerMeta:
        """The customer's stored settings (assigned plan, overrides, revocation, shadow)."""
        return self._run(self._customer(customer))

    def customers(self, count: int = 10_000) -> list[str]:
        """Up to ``count`` customers with stored usage or settings (for operator tools)."""
        return self._run(self._customers(count))

    def audit(self, customer: str, count: int = 100) -> list[AuditEntry]:
        """The customer's most recent audit entries (who changed what, when, why)."""
        return self._run(self._audit(customer, count))

    def assign(self, customer: str, plan: str | None, *, actor: str | None = None) -> CustomerMeta:
        """Put ``customer`` on ``plan`` for every worker (None: back to per-call/default)."""
        change = changes.assign(self.catalogue, customer, plan, actor)
        return self._run(self._change(change))

    def override(
        self,
        customer: str,
        limit: str | Limit,
        value: int | str | None = None,
        *,
        plan: str | None = None,
        actor: str | None = None,
    ) -> CustomerMeta:
        """Override one limit for one customer.

        ``override(c, "weekly", 10_000_000)`` raises the quota of the customer's plan's
        ``weekly`` limit; a rate string (``"1000/hour"``) replaces a window or a refill
        rate; a `Limit` object replaces the limit of its name; ``value=None`` removes
        the override.
        """
        change = changes.override(self.catalogue, customer, limit, value, plan, actor)
        return self._run(self._change(change))

    def revoke(
        self,
        customer: str,
        reason: str,
        *,
        allow_scopes: Mapping[str, str] | Collection[str] | None = None,
        actor: str | None = None,
    ) -> CustomerMeta:
        """Stop all use by ``customer`` at once, except ``allow_scopes``.

        ``allow_scopes`` maps each scope still allowed to the plan it runs on, e.g.
        ``{"benchmark": "benchmark"}``; a plain collection of names uses plans of the
        same names. ``reason`` is shown to the customer.
        """
        change = changes.revoke(self.catalogue, customer, reason, allow_scopes, actor)
        return self._run(self._change(change))

    def restore(self, customer: str, *, actor: str | None = None) -> CustomerMeta:
        """Lift a revocation."""
        return self._run(self._change(changes.restore(customer, actor)))

    def set_shadow(
        self, customer: str, shadow: bool | None, *, actor: str | None = None
    ) -> CustomerMeta:
        """Per-customer shadow mode: True (never block), False (enforce), None (inherit)."""
        return self._run(self._change(changes.shadow(customer, shadow, actor)))

    def reset(
        self, customer: str, limits: Collection[str] | None = None, *, actor: str | None = None
    ) -> None:
        """Forget the customer's usage of ``limits`` (all when None)."""
        self._run(self._reset(customer, limits, actor))

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
