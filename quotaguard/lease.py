"""Leases: a reserved cost waiting to be settled (`Guard.reserve`).

A lease's settlement is written once, as operations the guard drives (see
`quotaguard.guard.drivers`): `Lease` runs them with blocking calls, `AsyncLease` awaits.

Used as a context manager, a lease that the block leaves unsettled is settled by the
exit policy: ``on_exit`` after a normal exit, ``on_error`` when an exception leaves the
block. Either way its concurrency slot is released at once. A policy is "estimate"
(charge the reserved estimate, the default) or "refund" (charge nothing)::

    with guard.reserve("c-42", cost=4000).policy(on_error="refund") as lease:
        lease.settle(run_model())
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, TypeAlias, TypeVar

import attrs

from quotaguard.core import inputs
from quotaguard.core.decision import Decision, Settlement
from quotaguard.core.errors import ConfigurationError, QuotaExceeded, QuotaguardError, shown
from quotaguard.core.policy import Cost

if TYPE_CHECKING:
    from types import TracebackType

    from quotaguard.guard import AsyncGuard, Guard
    from quotaguard.guard.drivers import Operation

logger = logging.getLogger("quotaguard")

ExitPolicy: TypeAlias = Literal["estimate", "refund"]
"""What an unsettled lease is charged when its ``with`` block ends."""

_POLICIES = ("estimate", "refund")
_L = TypeVar("_L", bound="_LeaseBase")


def _check_policy(value: str, what: str) -> ExitPolicy:
    if not isinstance(value, str) or value not in _POLICIES:
        raise ConfigurationError(f"{what} must be 'estimate' or 'refund', got {shown(value)}")
    return value  # type: ignore[return-value]


class _LeaseBase:
    __slots__ = ("_guard", "decision", "lease_id", "on_error", "on_exit", "settlement")

    def __init__(
        self,
        guard: Guard | AsyncGuard,
        lease_id: str | None,
        decision: Decision,
        *,
        on_exit: ExitPolicy = "estimate",
        on_error: ExitPolicy = "estimate",
    ):
        self._guard = guard
        self.lease_id = lease_id
        """The lease id, or None when nothing was reserved (refused, revoked, failed)."""
        self.decision = decision
        """The decision taken when reserving."""
        self.settlement: Settlement | None = None
        """The settlement, once settled."""
        self.on_exit: ExitPolicy = _check_policy(on_exit, "on_exit")
        """The charge for a lease left unsettled by a normal exit from its block."""
        self.on_error: ExitPolicy = _check_policy(on_error, "on_error")
        """The charge for a lease left unsettled when an exception leaves its block."""

    def policy(
        self: _L, *, on_exit: ExitPolicy | None = None, on_error: ExitPolicy | None = None
    ) -> _L:
        """Set the exit policies ("estimate" or "refund"); returns the lease itself."""
        if on_exit is not None:
            self.on_exit = _check_policy(on_exit, "on_exit")
        if on_error is not None:
            self.on_error = _check_policy(on_error, "on_error")
        return self

    def _exit_cost(self, failed: bool) -> Cost:
        policy = self.on_error if failed else self.on_exit
        if policy == "estimate":
            return self.estimate
        estimate = self.estimate
        if isinstance(estimate, Mapping):
            return {unit: 0 for unit in estimate}
        return 0

    @staticmethod
    def _log_exit_failure(lease_id: str | None, error: QuotaguardError) -> None:
        logger.warning(
            "quotaguard: could not settle lease %s on exit (%s); its slot frees at its TTL",
            lease_id,
            error,
        )

    @property
    def allowed(self) -> bool:
        """Whether the caller may proceed."""
        return self.decision.allowed

    @property
    def estimate(self) -> Cost:
        """The cost reserved."""
        return self.decision.cost

    @property
    def settled(self) -> bool:
        """Whether the lease has been settled (or held nothing to settle)."""
        return self.settlement is not None or self.lease_id is None

    def _again(self, actual: Cost | None) -> Settlement:
        """The answer to settling a lease a second time: nothing is charged.

        As `Guard.settle` answers: the first settlement, its amount as ``actual``, with
        ``already_settled=True`` (``actual`` is still checked: bad input is refused).
        """
        if actual is not None:
            inputs.cost(actual, "actual cost")
        earlier: Settlement = self.settlement  # type: ignore[assignment]
        return attrs.evolve(earlier, already_settled=True)

    def _settling(self, actual: Cost | None) -> Operation[Settlement | None]:
        """Settle at ``actual`` (default: the estimate), once; the guard drives it."""
        if self.lease_id is None:
            return None
        if self.settlement is not None:
            return self._again(actual)
        self.settlement = yield from self._guard._settle(
            self.lease_id,
            self.estimate if actual is None else actual,
            self.decision.customer,
            self.decision.plan,
        )
        return self.settlement

    def _exiting(self, failed: bool) -> Operation[None]:
        """Settle by the exit policy if still unsettled; a failure is logged, not raised."""
        if self.settled:
            return
        try:
            yield from self._settling(self._exit_cost(failed))
        except QuotaguardError as error:
            self._log_exit_failure(self.lease_id, error)

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

    As a context manager it raises `QuotaExceeded` on entry when refused, and settles
    by its exit policy (default: at the estimate) if the block did not settle it; an
    exception inside the block still releases its concurrency slot. A backend failure
    while settling on exit is logged, never raised over the block's own outcome.
    """

    __slots__ = ()

    def settle(self, actual: Cost | None = None) -> Settlement | None:
        """Charge ``actual`` (default: the estimate) instead of the estimate.

        A second call charges nothing, whatever its amount: it reports the first
        settlement (its amount as ``actual``) with ``already_settled=True``. Returns None
        when nothing was reserved.
        """
        guard: Guard = self._guard  # type: ignore[assignment]
        return guard._run(self._settling(actual))

    def __enter__(self) -> Lease:
        self._check_enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        guard: Guard = self._guard  # type: ignore[assignment]
        guard._run(self._exiting(exc_type is not None))


class AsyncLease(_LeaseBase):
    """The asyncio twin of `Lease`: ``await lease.settle(actual)``, ``async with``."""

    __slots__ = ()

    async def settle(self, actual: Cost | None = None) -> Settlement | None:
        """See `Lease.settle`."""
        guard: AsyncGuard = self._guard  # type: ignore[assignment]
        return await guard._run(self._settling(actual))

    async def __aenter__(self) -> AsyncLease:
        self._check_enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        guard: AsyncGuard = self._guard  # type: ignore[assignment]
        await guard._run(self._exiting(exc_type is not None))
