"""The public entry point: `Guard` (sync) and `AsyncGuard` (async).

All logic lives in `GuardBase`: input validation, plan catalogue, failure policy, shadow
mode and observers. The two guards repeat only the lines that call the backend.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast

import attrs

from quotaguard.backends import async_backend_from_uri, backend_from_uri
from quotaguard.backends.base import (
    AsyncBackend,
    Backend,
    InProcessAsync,
    LeaseRequest,
    MetaChange,
)
from quotaguard.backends.memory import MemoryBackend
from quotaguard.clock import Clock
from quotaguard.core import inputs
from quotaguard.core.audit import AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import CustomerMeta, Revocation
from quotaguard.core.decision import Decision, LimitStatus, Outcome, Settlement
from quotaguard.core.errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidRequestError,
    UnknownLimitError,
    shown,
)
from quotaguard.core.policy import (
    Concurrency,
    Cost,
    Limit,
    Plan,
    RollingWindow,
    TokenBucket,
)
from quotaguard.core.rates import MAX_AMOUNT, parse_duration, parse_rate
from quotaguard.core.request import Request

if TYPE_CHECKING:
    from quotaguard.lease import AsyncLease, Lease

logger = logging.getLogger("quotaguard")

P = ParamSpec("P")
R = TypeVar("R")

PlansArgument = PlanCatalogue | Iterable[Plan] | Mapping[str, Plan] | str | Path
"""A catalogue, plans, or the path of a TOML plans file."""


class Observer(Protocol):
    """Receives every decision the guard makes (e.g. the Prometheus exporter)."""

    def on_decision(self, decision: Decision, backend: str, elapsed: float) -> None:
        """Called after each decision; ``elapsed`` is the backend time in seconds."""
        ...

    def on_backend_error(self, backend: str, error: BackendUnavailable) -> None:
        """Called when the backend failed and the failure policy decided."""
        ...


class SettlementObserver(Observer, Protocol):
    """An observer that also wants settlements (optional: checked with ``getattr``)."""

    def on_settlement(self, settlement: Settlement, customer: str, plan: str | None) -> None:
        """Called after a lease is settled for the first time."""
        ...


@attrs.frozen
class Usage:
    """A customer's usage of every limit of their plan, and their stored settings."""

    customer: str
    """The customer."""
    plan: str
    """The plan whose limits are shown."""
    limits: tuple[LimitStatus, ...]
    """Per limit: used, remaining, and when it refills."""
    meta: CustomerMeta
    """The stored settings: assigned plan, overrides, revocation, shadow."""

    @property
    def revocation(self) -> Revocation | None:
        """The revocation in force, if any."""
        return self.meta.revocation

    def limit(self, name: str) -> LimitStatus:
        """The status of the limit called ``name``; `KeyError` if the plan has none."""
        for status in self.limits:
            if status.limit.name == name:
                return status
        raise KeyError(name)


def _catalogue(plans: PlansArgument, default_plan: str | None) -> PlanCatalogue:
    if isinstance(plans, PlanCatalogue):
        if default_plan is not None and default_plan != plans.default:
            return PlanCatalogue(plans.plans, default=default_plan)
        return plans
    if isinstance(plans, str | Path):
        loaded = PlanCatalogue.from_toml(plans)
        return PlanCatalogue(loaded.plans, default=default_plan or loaded.default)
    if isinstance(plans, Plan):
        plans = [plans]
    return PlanCatalogue(plans, default=default_plan)


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
        self.catalogue = _catalogue(plans, default_plan)
        """The plans, by name, and the default plan."""
        if not isinstance(failure, str) or failure not in ("open", "closed"):
            raise ConfigurationError(f"failure must be 'open' or 'closed', got {shown(failure)}")
        self.failure = failure
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
        self._last_error_log = 0.0

    # -- validation ------------------------------------------------------------------

    _check_customer = staticmethod(inputs.customer_id)
    _check_cost = staticmethod(inputs.cost)

    def _check_plan(self, plan: object) -> str:
        if not isinstance(plan, str):
            raise InvalidRequestError(f"plan must be a plan name, got {shown(plan)}")
        plan = str.__str__(plan)
        self.catalogue[plan]
        return plan

    def _check_request(
        self, customer: object, cost: object, scope: object, plan: object
    ) -> tuple[str, Cost, str | None, str | None]:
        """The request's arguments, checked and copied (see `quotaguard.core.inputs`)."""
        return (
            inputs.customer_id(customer),
            inputs.cost(cost),
            None if scope is None else inputs.name(scope, "scope"),
            None if plan is None else self._check_plan(plan),
        )

    def _now(self) -> int | None:
        clock = self.clock
        return None if clock is None else clock.now_us()

    def _lease_ttl(self, ttl: float | str | None) -> int | None:
        return self.lease_ttl_us if ttl is None else inputs.duration_us(ttl, "lease ttl")

    @staticmethod
    def _check_lease_id(lease_id: object) -> str:
        if not isinstance(lease_id, str) or not lease_id:
            raise InvalidRequestError(f"lease_id must be a non-empty string, got {shown(lease_id)}")
        return str.__str__(lease_id)

    def _check_settle(
        self, lease_id: object, actual: object, customer: object, plan: object
    ) -> tuple[str, Cost]:
        if customer is not None and not isinstance(customer, str):
            raise InvalidRequestError(f"customer must be a string, got {shown(customer)}")
        if plan is not None and not isinstance(plan, str):
            raise InvalidRequestError(f"plan must be a plan name, got {shown(plan)}")
        return self._check_lease_id(lease_id), inputs.cost(actual, "actual cost")

    @staticmethod
    def _new_lease_id() -> str:
        return os.urandom(12).hex()

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

        See `quotaguard.integrations.decorators.limit`.
        """
        from quotaguard.integrations.decorators import limit

        return limit(self, customer, cost=cost, scope=scope, plan=plan, fallback=fallback)

    def _decide_on(
        self,
        backend: Backend,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        lease: LeaseRequest | None,
    ) -> Decision:
        """Everything `Guard.acquire` does, on a synchronous ``backend``.

        Validate, decide, apply the failure policy, tell the observers.
        """
        if not (  # the common case, checked inline; anything else is checked in full
            customer.__class__ is str
            and customer
            and cost.__class__ is int
            and 0 <= cost <= MAX_AMOUNT
            and scope is None
            and plan is None
        ):
            customer, cost, scope, plan = self._check_request(customer, cost, scope, plan)
        observers = self.observers
        clock = self.clock
        started = time.perf_counter() if observers else 0.0
        try:
            decision = backend.decide(
                self.catalogue,
                Request(
                    customer,
                    cost,
                    scope,
                    plan,
                    None if clock is None else clock.now_us(),
                    lease,
                    self.shadow,
                ),
            )
        except BackendUnavailable as error:
            decision = self._failed(backend.name, customer, cost, scope, error)
        if observers:
            self._observe(decision, backend.name, started)
        return decision

    # -- outcomes --------------------------------------------------------------------

    def _failed(
        self, backend: str, customer: str, cost: Cost, scope: str | None, error: BackendUnavailable
    ) -> Decision:
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            logger.warning(
                "quotaguard backend %s unavailable (fail-%s): %s", backend, self.failure, error
            )
        for observer in self.observers:
            try:
                observer.on_backend_error(backend, error)
            except Exception:
                logger.exception("quotaguard observer %r failed", observer)
        if self.failure == "open":
            return Decision(
                True, Outcome.FAIL_OPEN, customer, None, scope, cost, (), 0.0, str(error)
            )
        return Decision(
            False, Outcome.FAIL_CLOSED, customer, None, scope, cost, (), 1.0, str(error)
        )

    def _observe(self, decision: Decision, backend: str, started: float) -> None:
        elapsed = time.perf_counter() - started
        for observer in self.observers:
            try:
                observer.on_decision(decision, backend, elapsed)
            except Exception:
                logger.exception("quotaguard observer %r failed", observer)

    # -- customer settings -----------------------------------------------------------

    def _override_change(
        self, customer: str, limit: str | Limit, value: int | str | None, plan: str | None
    ) -> Callable[[CustomerMeta], CustomerMeta]:
        if isinstance(limit, TokenBucket | RollingWindow | Concurrency):
            spec: Limit = limit
            return lambda meta: meta.with_override(spec)
        name = inputs.name(limit, "limit")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | str)):
            raise InvalidRequestError(
                f"an override of limit {name!r} must be an integer quota, a rate string or "
                f"None, got {shown(value)}"
            )
        if plan is not None:
            plan = self._check_plan(plan)
        if value is None:
            return lambda meta: meta.without_override(name)

        def change(meta: CustomerMeta) -> CustomerMeta:
            base = self.catalogue.assigned(meta.plan, plan)
            try:
                current = base.limit(name)
            except KeyError:
                names = ", ".join(base.names) or "none"
                raise UnknownLimitError(
                    f"plan {base.name!r} has no limit {name!r}; it has {names}"
                ) from None
            return meta.with_override(overridden_limit(current, value))

        return change

    def _revocation(self, reason: object, allow_scopes: object) -> Revocation:
        scopes = inputs.scope_plans(allow_scopes)
        revocation = Revocation(inputs.text(reason, "reason"), scopes, time.time())
        for _, plan in revocation.allow_scopes:
            self.catalogue[plan]
        return revocation

    @staticmethod
    def _audit_entry(
        action: str, detail: str, actor: str | None, reason: str | None = None
    ) -> AuditEntry:
        return AuditEntry(
            time.time(), inputs.text(actor, "actor", optional=True) or "api", action, detail, reason
        )

    @staticmethod
    def _override_detail(limit: str | Limit, value: int | str | None) -> str:
        if isinstance(limit, str):
            return f"{limit}={'removed' if value is None else value}"
        return f"{limit.name}={limit!r}"

    @staticmethod
    def _scopes_detail(revocation: Revocation) -> str:
        scopes = ",".join(f"{scope}:{plan}" for scope, plan in revocation.allow_scopes)
        return f"allow_scopes={scopes or 'none'}"

    # A customer change, built once for both guards: validated before anything is
    # stored, as (the change to the stored settings, its audit entry).

    def _assign(
        self, customer: str, plan: str | None, actor: str | None
    ) -> tuple[str, MetaChange, AuditEntry]:
        customer = self._check_customer(customer)
        if plan is not None:
            plan = self._check_plan(plan)
        entry = self._audit_entry("assign", f"plan={plan or 'none'}", actor)
        return customer, (lambda meta: attrs.evolve(meta, plan=plan)), entry

    def _override(
        self,
        customer: str,
        limit: str | Limit,
        value: int | str | None,
        plan: str | None,
        actor: str | None,
    ) -> tuple[str, MetaChange, AuditEntry]:
        customer = self._check_customer(customer)
        change = self._override_change(customer, limit, value, plan)
        entry = self._audit_entry("override", self._override_detail(limit, value), actor)
        return customer, change, entry

    def _revoke(
        self,
        customer: str,
        reason: str,
        allow_scopes: Mapping[str, str] | Collection[str] | None,
        actor: str | None,
    ) -> tuple[str, MetaChange, AuditEntry]:
        customer = self._check_customer(customer)
        revocation = self._revocation(reason, allow_scopes)
        entry = self._audit_entry("revoke", self._scopes_detail(revocation), actor, reason)
        return customer, (lambda meta: attrs.evolve(meta, revocation=revocation)), entry

    def _restore(self, customer: str, actor: str | None) -> tuple[str, MetaChange, AuditEntry]:
        customer = self._check_customer(customer)
        entry = self._audit_entry("restore", "revocation lifted", actor)
        return customer, (lambda meta: attrs.evolve(meta, revocation=None)), entry

    def _shadow(
        self, customer: str, shadow: bool | None, actor: str | None
    ) -> tuple[str, MetaChange, AuditEntry]:
        customer = self._check_customer(customer)
        shadow = inputs.flag(shadow, "shadow")
        entry = self._audit_entry("shadow", f"shadow={shadow}", actor)
        return customer, (lambda meta: attrs.evolve(meta, shadow=shadow)), entry

    def _reset(
        self, customer: str, limits: Collection[str] | None, actor: str | None
    ) -> tuple[str, frozenset[str] | None, AuditEntry]:
        customer = self._check_customer(customer)
        names = None if limits is None else inputs.names(limits, "limit")
        detail = "limits=" + (",".join(sorted(names)) if names is not None else "all")
        return customer, names, self._audit_entry("reset", detail, actor)

    def _notify_settlement(
        self, settlement: Settlement, lease_customer: str | None, plan: str | None
    ) -> None:
        if settlement.already_settled:
            return
        for observer in self.observers:
            hook = getattr(observer, "on_settlement", None)
            if hook is not None:
                try:
                    hook(settlement, lease_customer or "", plan)
                except Exception:
                    logger.exception("quotaguard observer %r failed", observer)

    def _usage(
        self, customer: str, peeked: tuple[str, tuple[LimitStatus, ...]], meta: CustomerMeta
    ) -> Usage:
        return Usage(customer, peeked[0], peeked[1], meta)


def check_scope(scope: object) -> str:
    """Validate a scope name; `InvalidRequestError` naming it when it is not one."""
    return inputs.name(scope, "scope")


def overridden_limit(current: Limit, value: int | str) -> Limit:
    """``current`` with an override ``value`` applied.

    An integer quota, or a rate string for a rolling window or a token bucket's refill;
    anything else raises `InvalidRequestError`.
    """
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return current.with_quota(value)
        if isinstance(value, str):
            text = value.strip()
            if text.isascii() and text.isdigit():
                return current.with_quota(int(text) if len(text) < 20 else 2**64)
            rate = parse_rate(value)
            if isinstance(current, RollingWindow):
                return RollingWindow.from_rate(current.name, rate, unit=current.unit)
            if isinstance(current, TokenBucket):
                return attrs.evolve(current, refill=rate)
    except ConfigurationError as error:
        raise InvalidRequestError(f"cannot override limit {current.name!r}: {error}") from None
    raise InvalidRequestError(
        f"cannot override limit {current.name!r} ({current.kind}) with {value!r}: give an "
        "integer quota, or a rate string for a rolling window or a token bucket's refill"
    )


def _storage(storage: str | Backend | Any, clock: Clock | None) -> Backend:
    if isinstance(storage, str) or not hasattr(storage, "decide"):
        return backend_from_uri(storage, clock)  # a URI or a redis-py client
    if _is_async(storage):
        raise ConfigurationError(
            f"Guard needs a synchronous backend; {storage!r} is asynchronous (use AsyncGuard)"
        )
    return cast(Backend, storage)


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
        self.backend: Backend = _storage(storage, clock)
        """The storage backend."""

    def acquire(
        self, customer: str, cost: Cost = 1, *, scope: str | None = None, plan: str | None = None
    ) -> Decision:
        """Decide whether ``customer`` may spend ``cost`` now, and consume it if so.

        All of the plan's limits are checked and consumed together, or none is.
        """
        return self._decide(customer, cost, scope, plan, None)

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
        from quotaguard.lease import Lease

        lease_id = self._new_lease_id()
        decision = self._decide(customer, cost, scope, plan, (lease_id, self._lease_ttl(ttl)))
        return Lease(self, lease_id if decision.outcome is Outcome.ALLOWED else None, decision)

    def _decide(
        self,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        lease: LeaseRequest | None,
    ) -> Decision:
        return self._decide_on(self.backend, customer, cost, scope, plan, lease)

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
        lease_id, actual = self._check_settle(lease_id, actual, customer, plan)
        settlement = self.backend.settle(self.catalogue, lease_id, actual, self._now())
        if self.observers:
            self._notify_settlement(settlement, customer, plan)
        return settlement

    def usage(self, customer: str, *, scope: str | None = None, plan: str | None = None) -> Usage:
        """The customer's usage of every limit of their plan, consuming nothing."""
        customer, _, scope, plan = self._check_request(customer, 0, scope, plan)
        meta = self.backend.load_meta(customer)
        peeked = self.backend.peek(self.catalogue, customer, scope, plan, self._now())
        return self._usage(customer, peeked, meta)

    def customer(self, customer: str) -> CustomerMeta:
        """The customer's stored settings (assigned plan, overrides, revocation, shadow)."""
        return self.backend.load_meta(self._check_customer(customer))

    def customers(self, count: int = 10_000) -> list[str]:
        """Up to ``count`` customers with stored usage or settings (for operator tools)."""
        return self.backend.list_customers(inputs.count(count))

    def audit(self, customer: str, count: int = 100) -> list[AuditEntry]:
        """The customer's most recent audit entries (who changed what, when, why)."""
        return self.backend.audit(self._check_customer(customer), inputs.count(count))

    def _change(self, customer: str, change: MetaChange, entry: AuditEntry) -> CustomerMeta:
        meta = self.backend.update_meta(customer, change)
        self.backend.record_audit(customer, entry)
        return meta

    def assign(self, customer: str, plan: str | None, *, actor: str | None = None) -> CustomerMeta:
        """Put ``customer`` on ``plan`` for every worker (None: back to per-call/default)."""
        return self._change(*self._assign(customer, plan, actor))

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
        return self._change(*self._override(customer, limit, value, plan, actor))

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
        return self._change(*self._revoke(customer, reason, allow_scopes, actor))

    def restore(self, customer: str, *, actor: str | None = None) -> CustomerMeta:
        """Lift a revocation."""
        return self._change(*self._restore(customer, actor))

    def set_shadow(
        self, customer: str, shadow: bool | None, *, actor: str | None = None
    ) -> CustomerMeta:
        """Per-customer shadow mode: True (never block), False (enforce), None (inherit)."""
        return self._change(*self._shadow(customer, shadow, actor))

    def reset(
        self, customer: str, limits: Collection[str] | None = None, *, actor: str | None = None
    ) -> None:
        """Forget the customer's usage of ``limits`` (all when None)."""
        customer, names, entry = self._reset(customer, limits, actor)
        self.backend.reset(customer, names)
        self.backend.record_audit(customer, entry)

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _async_storage(
    storage: str | Backend | AsyncBackend | Any, clock: Clock | None
) -> AsyncBackend:
    if isinstance(storage, str) or not hasattr(storage, "decide"):
        return async_backend_from_uri(storage, clock)  # a URI or a redis.asyncio client
    if isinstance(storage, InProcessAsync) or _is_async(storage):
        return cast(AsyncBackend, storage)
    if isinstance(storage, MemoryBackend):
        return InProcessAsync(storage)  # never waits on I/O, so it may run inline
    raise ConfigurationError(
        f"AsyncGuard needs an asynchronous backend; {storage!r} would block the event loop "
        "(use the async variant, e.g. a redis:// URI or AsyncRedisBackend)"
    )


def _is_async(storage: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(getattr(storage, "decide", None))


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
        self.backend: AsyncBackend = _async_storage(storage, clock)
        """The storage backend."""
        self._inline: Backend | None = (
            self.backend.backend if isinstance(self.backend, InProcessAsync) else None
        )

    async def acquire(
        self, customer: str, cost: Cost = 1, *, scope: str | None = None, plan: str | None = None
    ) -> Decision:
        """See `Guard.acquire`."""
        return await self._decide(customer, cost, scope, plan, None)

    def acquire_nowait(
        self, customer: str, cost: Cost = 1, *, scope: str | None = None, plan: str | None = None
    ) -> Decision | None:
        """`acquire` without awaiting, when the backend is in-process (memory); else None.

        The memory backend never waits on I/O, so a caller on the event loop (the ASGI
        middleware) can decide inline and skip two coroutines. Same validation, failure
        policy and observers as `acquire`.
        """
        inline = self._inline
        if inline is None:
            return None
        return self._decide_on(inline, customer, cost, scope, plan, None)

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
        from quotaguard.lease import AsyncLease

        lease_id = self._new_lease_id()
        decision = await self._decide(customer, cost, scope, plan, (lease_id, self._lease_ttl(ttl)))
        return AsyncLease(self, lease_id if decision.outcome is Outcome.ALLOWED else None, decision)

    async def _decide(
        self,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        lease: LeaseRequest | None,
    ) -> Decision:
        customer, cost, scope, plan = self._check_request(customer, cost, scope, plan)
        backend = self.backend
        observers = self.observers
        started = time.perf_counter() if observers else 0.0
        try:
            decision = await backend.decide(
                self.catalogue,
                Request(customer, cost, scope, plan, self._now(), lease, self.shadow),
            )
        except BackendUnavailable as error:
            decision = self._failed(backend.name, customer, cost, scope, error)
        if observers:
            self._observe(decision, backend.name, started)
        return decision

    async def settle(
        self,
        lease_id: str,
        actual: Cost,
        *,
        customer: str | None = None,
        plan: str | None = None,
    ) -> Settlement:
        """See `Guard.settle`."""
        lease_id, actual = self._check_settle(lease_id, actual, customer, plan)
        settlement = await self.backend.settle(self.catalogue, lease_id, actual, self._now())
        if self.observers:
            self._notify_settlement(settlement, customer, plan)
        return settlement

    async def usage(
        self, customer: str, *, scope: str | None = None, plan: str | None = None
    ) -> Usage:
        """See `Guard.usage`."""
        customer, _, scope, plan = self._check_request(customer, 0, scope, plan)
        meta = await self.backend.load_meta(customer)
        peeked = await self.backend.peek(self.catalogue, customer, scope, plan, self._now())
        return self._usage(customer, peeked, meta)

    async def customer(self, customer: str) -> CustomerMeta:
        """See `Guard.customer`."""
        return await self.backend.load_meta(self._check_customer(customer))

    async def customers(self, count: int = 10_000) -> list[str]:
        """See `Guard.customers`."""
        return await self.backend.list_customers(inputs.count(count))

    async def audit(self, customer: str, count: int = 100) -> list[AuditEntry]:
        """See `Guard.audit`."""
        return await self.backend.audit(self._check_customer(customer), inputs.count(count))

    async def _change(self, customer: str, change: MetaChange, entry: AuditEntry) -> CustomerMeta:
        meta = await self.backend.update_meta(customer, change)
        await self.backend.record_audit(customer, entry)
        return meta

    async def assign(
        self, customer: str, plan: str | None, *, actor: str | None = None
    ) -> CustomerMeta:
        """See `Guard.assign`."""
        return await self._change(*self._assign(customer, plan, actor))

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
        return await self._change(*self._override(customer, limit, value, plan, actor))

    async def revoke(
        self,
        customer: str,
        reason: str,
        *,
        allow_scopes: Mapping[str, str] | Collection[str] | None = None,
        actor: str | None = None,
    ) -> CustomerMeta:
        """See `Guard.revoke`."""
        return await self._change(*self._revoke(customer, reason, allow_scopes, actor))

    async def restore(self, customer: str, *, actor: str | None = None) -> CustomerMeta:
        """See `Guard.restore`."""
        return await self._change(*self._restore(customer, actor))

    async def set_shadow(
        self, customer: str, shadow: bool | None, *, actor: str | None = None
    ) -> CustomerMeta:
        """See `Guard.set_shadow`."""
        return await self._change(*self._shadow(customer, shadow, actor))

    async def reset(
        self, customer: str, limits: Collection[str] | None = None, *, actor: str | None = None
    ) -> None:
        """See `Guard.reset`."""
        customer, names, entry = self._reset(customer, limits, actor)
        await self.backend.reset(customer, names)
        await self.backend.record_audit(customer, entry)

    async def close(self) -> None:
        """See `Guard.close`."""
        await self.backend.close()

    async def __aenter__(self) -> AsyncGuard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
