"""`@guard.limit(...)`: guard any function, sync or async, with one decorator.

::

    @guard.limit("customer_id", cost=lambda customer_id, prompt: len(prompt))
    def complete(customer_id: str, prompt: str) -> str: ...

    @async_guard.limit(lambda self, request: request.user, scope="benchmark")
    async def run(self, request): ...

The customer comes from an argument (by name) or a callable given the call's
arguments; the cost is fixed or computed the same way. On denial the call raises
`QuotaExceeded` (its ``decision`` says why and when to retry), or returns what
``fallback(decision, *args, **kwargs)`` returns. Shadow-denied and fail-open calls run.
When the plans hold a concurrency limit, the call holds a slot while it runs and
releases it when it returns or raises.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast

from quotaguard.core.decision import Decision
from quotaguard.core.errors import ConfigurationError, QuotaExceeded
from quotaguard.core.policy import Concurrency, Cost
from quotaguard.guard import AsyncGuard, Guard, GuardBase

__all__ = ["limit"]

P = ParamSpec("P")
R = TypeVar("R")

_MISSING = object()


def _argument(func: Callable[..., Any], name: str, what: str) -> Callable[..., Any]:
    """A getter for argument ``name`` of ``func`` from (args, kwargs)."""
    signature = inspect.signature(func)
    parameter = signature.parameters.get(name)
    if parameter is None:
        raise ConfigurationError(
            f"{what}: {func.__qualname__}() has no parameter {name!r} "
            f"(it has {', '.join(signature.parameters) or 'none'})"
        )
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    index = list(signature.parameters).index(name) if parameter.kind in kinds else -1
    default = parameter.default
    keyword = parameter.kind is not inspect.Parameter.POSITIONAL_ONLY

    def get(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if 0 <= index < len(args):
            return args[index]
        if keyword and name in kwargs:
            return kwargs[name]
        if default is not inspect.Parameter.empty:
            return default
        raise TypeError(f"{func.__qualname__}() missing argument {name!r} for {what}")

    return get


def _resolver(
    func: Callable[..., Any], value: Any, what: str, by_name: bool
) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    if callable(value):
        return lambda args, kwargs: value(*args, **kwargs)
    if by_name and isinstance(value, str):
        return _argument(func, value, what)
    return lambda args, kwargs: value


def limit(
    guard: GuardBase,
    customer: str | Callable[..., str] = "customer",
    *,
    cost: Cost | Callable[..., Cost] = 1,
    scope: str | None = None,
    plan: str | Callable[..., str | None] | None = None,
    fallback: Callable[..., Any] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator that checks ``guard`` before every call of the function.

    ``customer``: the name of the argument holding the customer id, or a callable
    given the call's arguments. ``cost`` and ``plan``: values, or callables given the
    call's arguments. ``scope``: the scope of the calls. ``fallback(decision, *args,
    **kwargs)``: called instead of raising `QuotaExceeded` on denial (awaited if it
    returns an awaitable inside an async function).

    An async function may use either guard (a sync `Guard` is fine on the memory
    backend); a sync function needs a sync `Guard`.
    """
    if not isinstance(guard, Guard | AsyncGuard):
        raise ConfigurationError(f"limit() needs a Guard or an AsyncGuard, got {guard!r}")
    if scope is not None:
        from quotaguard.guard import check_scope

        check_scope(scope)
    hold = any(
        isinstance(item, Concurrency)
        for entry in guard.catalogue.plans.values()
        for item in entry.limits
    )

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        get_customer = _resolver(func, customer, "customer", by_name=True)
        get_cost = _resolver(func, cost, "cost", by_name=False)
        get_plan = _resolver(func, plan, "plan", by_name=False)
        is_async = inspect.iscoroutinefunction(func)
        if not is_async and isinstance(guard, AsyncGuard):
            raise ConfigurationError(
                f"{func.__qualname__} is synchronous but the guard is an AsyncGuard: "
                "use a Guard, or make the function async"
            )

        def refused(decision: Decision, args: Any, kwargs: Any) -> Any:
            if fallback is None:
                raise QuotaExceeded(decision)
            return fallback(decision, *args, **kwargs)

        if not is_async:
            sync_guard = cast(Guard, guard)

            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                who = get_customer(args, kwargs)
                units = get_cost(args, kwargs)
                chosen = get_plan(args, kwargs)
                if not hold:
                    decision = sync_guard.acquire(who, units, scope=scope, plan=chosen)
                    if not decision.allowed:
                        return cast(R, refused(decision, args, kwargs))
                    return func(*args, **kwargs)
                lease = sync_guard.reserve(who, units, scope=scope, plan=chosen)
                if not lease.decision.allowed:
                    return cast(R, refused(lease.decision, args, kwargs))
                with lease:  # settles on exit (slot released even if func raises)
                    return func(*args, **kwargs)

            return wrapper

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            who = get_customer(args, kwargs)
            units = get_cost(args, kwargs)
            chosen = get_plan(args, kwargs)
            call = cast(Callable[P, Awaitable[Any]], func)
            if not hold:
                if isinstance(guard, AsyncGuard):
                    decision = await guard.acquire(who, units, scope=scope, plan=chosen)
                else:
                    decision = guard.acquire(who, units, scope=scope, plan=chosen)
                if not decision.allowed:
                    return await _maybe_await(refused(decision, args, kwargs))
                return await call(*args, **kwargs)
            if isinstance(guard, AsyncGuard):
                lease = await guard.reserve(who, units, scope=scope, plan=chosen)
                if not lease.decision.allowed:
                    return await _maybe_await(refused(lease.decision, args, kwargs))
                async with lease:
                    return await call(*args, **kwargs)
            sync_lease = guard.reserve(who, units, scope=scope, plan=chosen)
            if not sync_lease.decision.allowed:
                return await _maybe_await(refused(sync_lease.decision, args, kwargs))
            with sync_lease:
                return await call(*args, **kwargs)

        return cast(Callable[P, R], async_wrapper)

    return decorate


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
