"""What `Guard` and `AsyncGuard` share: configuration, the request path and every operation.

The operations are generators of backend calls (see `quotaguard.guard.drivers`), written
once here; the two guards only drive them. One decision needs no driver: `_decide_now`
decides at once on a backend whose ``decide`` returns without awaiting (a `Guard`'s
backend, or the in-process memory backend of an `AsyncGuard`), so the hot path of the
memory backend pays for no generator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar

import quotaguard.guard.changes as changes
from quotaguard.backends.base import Backend
from quotaguard.clock import Clock
from quotaguard.core import inputs
from quotaguard.core.audit import AuditEntry
from quotaguard.core.customer import CustomerMeta
from quotaguard.core.decision import Decision, Outcome, Settlement
from quotaguard.core.errors import BackendUnavailable, ConfigurationError, shown
from quotaguard.core.policy import Cost
from quotaguard.core.rates import MAX_AMOUNT, parse_duration
from quotaguard.core.request import LeaseRequest, Request

from .arguments import PlansArgument, catalogue_of, check_request, check_settle
from .arguments import new_lease_id as _new_lease_id
from .decorate import limiter
from .drivers import BackendCall, Operation
from .failure import FailureLog, check_failure
from .observers import Observer, tell_decision, tell_settlement
from .records import Usage

P = ParamSpec("P")
R = TypeVar("R")

_new = tuple.__new__


class GuardBase:
    """Everything `Guard` and `AsyncGuard` share."""

    def __init__(
        self,
        plans: PlansArgument,
        *,
        default_plan: str | None = None,
        clock: Clock | None = None,
        failure: str = "open",
        shadow: bool = False,
        observers: Sequence[Observer] = (),
        lease_ttl: float | str | None = None,
    ) -> None:
        self.catalogue = catalogue_of(plans, default_plan)
        """The plans, by name, and the default plan."""
        self.failure = check_failure(failure)
        """What happens when the backend fails: "open" admits, "closed" refuses."""
        if not isinstance(shadow, bool):
            raise ConfigurationError(f"shadow must be True or False, got {shown(shadow)}")
        if clock is not None and not callable(getattr(clock, "now_us", None)):
            raise ConfigurationError(f"clock must have a now_us() method, got {shown(clock)}")
        if not isinstance(observers, Iterable) or isinstance(observers, str | bytes):
            raise ConfigurationError(f"observers must be a sequence, got {shown(observers)}")
        self.shadow = shadow
        """Global shadow mode: decide and report, never block."""
        self.clock = clock
        """The injected clock, or None to use the backend's clock."""
        self.observers: list[Observer] = list(observers)
        """Receivers of every decision."""
        self.lease_ttl_us = None if lease_ttl is None else parse_duration(lease_ttl, "lease_ttl")
        """The time-to-live of leases whose call gives none (None: the plan's
        concurrency ``lease_ttl``, else 10 minutes)."""
        self._failures = FailureLog()
        self._backend_name = ""

    def limit(
        self,
        customer: str | Callable[..., str] = "customer",
        *,
        cost: Cost | Callable[..., Cost] = 1,
        scope: str | None = None,
        plan: str | Callable[..., str | None] | None = None,
        fallback: Callable[..., Any] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator that checks this guard before every call of the function.

        ``customer``: the name of the argument holding the customer id, or a callable
        given the call's arguments. ``cost`` and ``plan``: values, or callables given the
        call's arguments. ``scope``: the scope of the calls. ``fallback(decision, *args,
        **kwargs)``: called instead of raising `QuotaExceeded` on denial (awaited if it
        returns an awaitable inside an async function).

        An async function may use either guard (a sync `Guard` is fine on the memory
        backend); a sync function needs a sync `Guard`. See
        `quotaguard.integrations.decorators`.
        """
        return limiter(self, customer, cost, scope, plan, fallback)

    # -- the request path ------------------------------------------------------------

    def _request(
        self,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        lease: LeaseRequest | None,
    ) -> Request:
        """The checked `Request`, stamped with the guard's clock (None: the backend's)."""
        if not (  # the common case, checked inline; anything else is checked in full
            customer.__class__ is str
            and customer
            and cost.__class__ is int
            and 0 <= cost <= MAX_AMOUNT
            and scope is None
            and plan is None
        ):
            customer, cost, scope, plan = check_request(self.catalogue, customer, cost, scope, plan)
        clock = self.clock
        now = None if clock is None else clock.now_us()
        return _new(Request, (customer, cost, scope, plan, now, lease, self.shadow))

    def _failed(self, backend: str, request: Request, error: BackendUnavailable) -> Decision:
        """The failure policy's decision for ``request`` (see `FailureLog.failed`)."""
        return self._failures.failed(self.failure, backend, request, error, self.observers)

    _inline: Backend | None = None
    """The backend that decides without awaiting (a `Guard`'s, or in-process memory)."""

    def _decide_now(
        self, customer: str, cost: Cost = 1, *, scope: str | None = None, plan: str | None = None
    ) -> Decision:
        """Decide whether ``customer`` may spend ``cost`` now, and consume it if so.

        All of the plan's limits are checked and consumed together, or none is.
        """
        # `_decide` without a driver, on `_inline`: the one entry point that decides at
        # once (`Guard.acquire` itself), without the cost of a generator or another call.
        backend: Backend = self._inline  # type: ignore[assignment]
        if not (  # `_request`, inline: a call costs a tenth of a memory decision
            customer.__class__ is str
            and customer
            and cost.__class__ is int
            and 0 <= cost <= MAX_AMOUNT
            and scope is None
            and plan is None
        ):
            customer, cost, scope, plan = check_request(self.catalogue, customer, cost, scope, plan)
        clock = self.clock
        now = None if clock is None else clock.now_us()
        request = _new(Request, (customer, cost, scope, plan, now, None, self.shadow))
        observers = self.observers
        started = time.perf_counter() if observers else 0.0
        try:
            decision = backend.decide(self.catalogue, request)
        except BackendUnavailable as error:
            decision = self._failed(backend.name, request, error)
        if observers:
            tell_decision(observers, decision, backend.name, time.perf_counter() - started)
        return decision

    def _decide(
        self,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        lease: LeaseRequest | None,
    ) -> Operation[Decision]:
        """Validate, decide, apply the failure policy, tell the observers."""
        request = self._request(customer, cost, scope, plan, lease)
        observers = self.observers
        started = time.perf_counter() if observers else 0.0
        try:
            decision = yield BackendCall("decide", (self.catalogue, request))
        except BackendUnavailable as error:
            decision = self._failed(self._backend_name, request, error)
        if observers:
            tell_decision(observers, decision, self._backend_name, time.perf_counter() - started)
        return decision  # type: ignore[no-any-return]

    def _reserve(
        self,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        ttl: float | str | None,
    ) -> Operation[tuple[str | None, Decision]]:
        """Decide with a new lease: (the lease id if the cost is held, the decision)."""
        lease_id = _new_lease_id()
        lease_ttl = self.lease_ttl_us if ttl is None else inputs.duration_us(ttl, "lease ttl")
        decision = yield from self._decide(customer, cost, scope, plan, (lease_id, lease_ttl))
        return (lease_id if decision.outcome is Outcome.ALLOWED else None), decision

    def _settle(
        self, lease_id: str, actual: Cost, customer: str | None, plan: str | None
    ) -> Operation[Settlement]:
        """Charge ``actual`` for the lease instead of its estimate."""
        lease_id, actual = check_settle(lease_id, actual, customer, plan)
        settlement = yield BackendCall("settle", (self.catalogue, lease_id, actual, self._now()))
        if self.observers:
            tell_settlement(self.observers, settlement, customer, plan)
        return settlement  # type: ignore[no-any-return]

    def _now(self) -> int | None:
        clock = self.clock
        return None if clock is None else clock.now_us()

    # -- views -----------------------------------------------------------------------

    def _usage(self, customer: str, scope: str | None, plan: str | None) -> Operation[Usage]:
        """The customer's usage of every limit of their plan, consuming nothing."""
        customer, _, scope, plan = check_request(self.catalogue, customer, 0, scope, plan)
        meta = yield BackendCall("load_meta", (customer,))
        name, statuses = yield BackendCall(
            "peek", (self.catalogue, customer, scope, plan, self._now())
        )
        return Usage(customer, name, statuses, meta)

    @staticmethod
    def _customer(customer: str) -> Operation[CustomerMeta]:
        """The customer's stored settings."""
        meta = yield BackendCall("load_meta", (inputs.customer_id(customer),))
        return meta  # type: ignore[no-any-return]

    @staticmethod
    def _customers(count: int) -> Operation[list[str]]:
        """Up to ``count`` customers with stored usage or settings."""
        found = yield BackendCall("list_customers", (inputs.count(count),))
        return found  # type: ignore[no-any-return]

    @staticmethod
    def _audit(customer: str, count: int) -> Operation[list[AuditEntry]]:
        """The customer's most recent audit entries."""
        entries = yield BackendCall("audit", (inputs.customer_id(customer), inputs.count(count)))
        return entries  # type: ignore[no-any-return]

    # -- operator changes ------------------------------------------------------------

    @staticmethod
    def _change(change: changes.Change) -> Operation[CustomerMeta]:
        """Apply a built change atomically, then record its audit entry."""
        customer, update, entry = change
        meta = yield BackendCall("update_meta", (customer, update))
        yield BackendCall("record_audit", (customer, entry))
        return meta  # type: ignore[no-any-return]

    @staticmethod
    def _reset(customer: str, limits: Collection[str] | None, actor: str | None) -> Operation[None]:
        """Forget the customer's usage of ``limits`` (all when None), then audit it."""
        customer, names, entry = changes.reset(customer, limits, actor)
        yield BackendCall("reset", (customer, names))
        yield BackendCall("record_audit", (customer, entry))
