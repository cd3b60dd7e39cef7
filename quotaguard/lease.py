"""Leases: a reserved cost waiting to be settled (`Guard.reserve`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quotaguard.core.decision import Decision, Settlement
from quotaguard.core.errors import QuotaExceeded

if TYPE_CHECKING:
    from types import TracebackType

    from quotaguard.guard import AsyncGuard, Guard


class _LeaseBase:
    __slots__ = ("_guard", "decision", "lease_id", "settlement")

    def __init__(self, guard: Guard | AsyncGuard, lease_id: str | None, decision: Decision):
        self._guard = guard
        self.lease_id = lease_id
        """The lease id, or None when nothing was reserved (refused, revoked, failed)."""
        self.decision = decision
        """The decision taken when reserving."""
        self.settlement: Settlement | None = None
        """The settlement, once settled."""

    @property
    def allowed(self) -> bool:
        """Whether the caller may proceed."""
        return self.decision.allowed

    @property
    def estimate(self) -> float:
        """The cost reserved."""
        return self.decision.cost

    @property
    def settled(self) -> bool:
        """Whether the lease has been settled (or held nothing to settle)."""
        return self.settlement is not None or self.lease_id is None

    def _check_enter(self) -> None:
        if not self.decision.allowed:
            raise QuotaExceeded(self.decision)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(lease_id={self.lease_id!r}, "
            f"outcome={self.decision.outcome.value!r}, estimate={self.estimate!r}, "
            f"settled={self.settled!r})"
        )


class Lease(_LeaseBase):
    """A reserved cost. Settle it with the actual cost once known.

    As a context manager it raises `QuotaExceeded` on entry when refused, and settles at
    the estimate on exit if the block did not settle it.
    """

    __slots__ = ()

    def settle(self, actual: float | None = None) -> Settlement | None:
        """Charge ``actual`` (default: the estimate) instead of the estimate.

        Idempotent: a second call changes nothing. Returns None when nothing was
        reserved.
        """
        if self.lease_id is None:
            return None
        if self.settlement is None:
            guard: Guard = self._guard  # type: ignore[assignment]
            self.settlement = guard.settle(
                self.lease_id, self.estimate if actual is None else actual
            )
        return self.settlement

    def __enter__(self) -> Lease:
        self._check_enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.settled:
            self.settle()


class AsyncLease(_LeaseBase):
    """The asyncio twin of `Lease`: ``await lease.settle(actual)``, ``async with``."""

    __slots__ = ()

    async def settle(self, actual: float | None = None) -> Settlement | None:
        """See `Lease.settle`."""
        if self.lease_id is None:
            return None
        if self.settlement is None:
            guard: AsyncGuard = self._guard  # type: ignore[assignment]
            self.settlement = await guard.settle(
                self.lease_id, self.estimate if actual is None else actual
            )
        return self.settlement

    async def __aenter__(self) -> AsyncLease:
        self._check_enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.settled:
            await self.settle()
