"""What a storage backend provides to the guard, in a sync and an async flavour."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol, runtime_checkable

from quotaguard.core.audit import AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Decision, LimitStatus, Settlement
from quotaguard.core.policy import Cost
from quotaguard.core.request import LeaseRequest, Request

__all__ = ["AsyncBackend", "Backend", "InProcessAsync", "LeaseRequest", "MetaChange"]


MetaChange = Callable[[CustomerMeta], CustomerMeta]
"""A pure function from a customer's stored settings to the new ones."""


@runtime_checkable
class Backend(Protocol):
    """A synchronous backend. Every method is atomic per customer.

    ``now`` is the time in microseconds, or None to use the backend's own clock.
    Failures to reach storage raise `BackendUnavailable`.
    """

    name: str
    """A short, bounded label for metrics ("memory", "redis", ...)."""

    def decide(self, catalogue: PlanCatalogue, request: Request) -> Decision:
        """Decide ``request`` with `quotaguard.core.pipeline`, loading and storing atomically.

        With ``request.lease``, an admitted cost is held by that lease until settled.
        """
        ...

    def settle(
        self, catalogue: PlanCatalogue, lease_id: str, actual: Cost, now: int | None
    ) -> Settlement:
        """Charge ``actual`` instead of the lease's estimate and free its slots; idempotent."""
        ...

    def peek(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        scope: str | None,
        plan: str | None,
        now: int | None,
    ) -> tuple[str, tuple[LimitStatus, ...]]:
        """The plan name and the status of its limits, consuming nothing.

        A revocation is ignored here: this is a view of usage, not a decision.
        """
        ...

    def load_meta(self, customer: str) -> CustomerMeta:
        """The customer's stored settings."""
        ...

    def update_meta(self, customer: str, change: MetaChange) -> CustomerMeta:
        """Atomically replace the customer's settings with ``change(settings)``."""
        ...

    def reset(self, customer: str, limits: Collection[str] | None) -> None:
        """Forget the usage of the named limits (all when None)."""
        ...

    def record_audit(self, customer: str, entry: AuditEntry) -> None:
        """Append to the customer's audit trail (keeping the last `AUDIT_KEEP`)."""
        ...

    def audit(self, customer: str, count: int) -> list[AuditEntry]:
        """The customer's ``count`` most recent audit entries, newest first."""
        ...

    def list_customers(self, count: int) -> list[str]:
        """Up to ``count`` customers with stored usage or settings, in no set order."""
        ...

    def close(self) -> None:
        """Release connections and resources."""
        ...


@runtime_checkable
class AsyncBackend(Protocol):
    """The asynchronous twin of `Backend`: the same methods, awaited."""

    name: str
    """A short, bounded label for metrics."""

    async def decide(self, catalogue: PlanCatalogue, request: Request) -> Decision:
        """See `Backend.decide`."""
        ...

    async def settle(
        self, catalogue: PlanCatalogue, lease_id: str, actual: Cost, now: int | None
    ) -> Settlement:
        """See `Backend.settle`."""
        ...

    async def peek(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        scope: str | None,
        plan: str | None,
        now: int | None,
    ) -> tuple[str, tuple[LimitStatus, ...]]:
        """See `Backend.peek`."""
        ...

    async def load_meta(self, customer: str) -> CustomerMeta:
        """See `Backend.load_meta`."""
        ...

    async def update_meta(self, customer: str, change: MetaChange) -> CustomerMeta:
        """See `Backend.update_meta`."""
        ...

    async def reset(self, customer: str, limits: Collection[str] | None) -> None:
        """See `Backend.reset`."""
        ...

    async def record_audit(self, customer: str, entry: AuditEntry) -> None:
        """See `Backend.record_audit`."""
        ...

    async def audit(self, customer: str, count: int) -> list[AuditEntry]:
        """See `Backend.audit`."""
        ...

    async def list_customers(self, count: int) -> list[str]:
        """See `Backend.list_customers`."""
        ...

    async def close(self) -> None:
        """See `Backend.close`."""
        ...


class InProcessAsync:
    """Serves a non-blocking in-process `Backend` (memory) to `AsyncGuard`.

    The wrapped calls never wait on I/O, so they run inline on the event loop.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend: Backend = backend
        """The wrapped synchronous backend."""
        self.name = backend.name

    async def decide(self, catalogue: PlanCatalogue, request: Request) -> Decision:
        """See `Backend.decide`."""
        return self.backend.decide(catalogue, request)

    async def settle(
        self, catalogue: PlanCatalogue, lease_id: str, actual: Cost, now: int | None
    ) -> Settlement:
        """See `Backend.settle`."""
        return self.backend.settle(catalogue, lease_id, actual, now)

    async def peek(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        scope: str | None,
        plan: str | None,
        now: int | None,
    ) -> tuple[str, tuple[LimitStatus, ...]]:
        """See `Backend.peek`."""
        return self.backend.peek(catalogue, customer, scope, plan, now)

    async def load_meta(self, customer: str) -> CustomerMeta:
        """See `Backend.load_meta`."""
        return self.backend.load_meta(customer)

    async def update_meta(self, customer: str, change: MetaChange) -> CustomerMeta:
        """See `Backend.update_meta`."""
        return self.backend.update_meta(customer, change)

    async def reset(self, customer: str, limits: Collection[str] | None) -> None:
        """See `Backend.reset`."""
        self.backend.reset(customer, limits)

    async def record_audit(self, customer: str, entry: AuditEntry) -> None:
        """See `Backend.record_audit`."""
        self.backend.record_audit(customer, entry)

    async def audit(self, customer: str, count: int) -> list[AuditEntry]:
        """See `Backend.audit`."""
        return self.backend.audit(customer, count)

    async def list_customers(self, count: int) -> list[str]:
        """See `Backend.list_customers`."""
        return self.backend.list_customers(count)

    async def close(self) -> None:
        """See `Backend.close`."""
        self.backend.close()
