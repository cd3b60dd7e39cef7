"""`Guard.limit` / `AsyncGuard.limit`: a decorator that checks the guard before each call.

The admission (decide, or reserve when the plans hold a concurrency limit) and the
release of a held lease are operations written once (see `quotaguard.guard.drivers`); a
sync wrapper runs them with the guard's blocking driver, an async wrapper awaits them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import attrs

from quotaguard.core.decision import Decision
from quotaguard.core.errors import ConfigurationError, QuotaExceeded
from quotaguard.core.policy import Concurrency, Cost
from quotaguard.lease import Lease

from .arguments import check_scope
from .drivers import Operation

if TYPE_CHECKING:
    from .base import GuardBase

P = ParamSpec("P")
R = TypeVar("R")

Getter = Callable[[tuple[Any, ...], dict[str, Any]], Any]


def _argument(func: Callable[..., Any], name: str, what: str) -> Getter:
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


def _getter(func: Callable[..., Any], value: Any, what: str, by_name: bool) -> Getter:
    if callable(value):
        return lambda args, kwargs: value(*args, **kwargs)
    if by_name and isinstance(value, str):
        return _argument(func, value, what)
    return lambda args, kwargs: value


@attrs.frozen
class _Admission:
    """What one decorated function asks of the guard before and after each call."""

    guard: GuardBase
    customer: Getter
    cost: Getter
    plan: Getter
    scope: str | None
    hold: bool
    fallback: Callable[..., Any] | None

    def admit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Operation[Lease | Decision]:
        """The decision for this call, or the lease that holds its slot while it runs."""
        customer = self.customer(args, kwargs)
        cost: Cost = self.cost(args, kwargs)
        plan = self.plan(args, kwargs)
        if not self.hold:
            return (yield from self.guard._decide(customer, cost, self.scope, plan, None))
        lease_id, decision = yield from self.guard._reserve(customer, cost, self.scope, plan, None)
        return Lease(self.guard, lease_id, decision)  # type: ignore[arg-type]

    def refused(self, decision: Decision, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """What a refused call returns: the fallback's answer, else `QuotaExceeded`."""
        if self.fallback is None:
            raise QuotaExceeded(decision)
        return self.fallback(decision, *args, **kwargs)


def limiter(
    guard: GuardBase,
    customer: str | Callable[..., str],
    cost: Cost | Callable[..., Cost],
    scope: str | None,
    plan: str | Callable[..., str | None] | None,
    fallback: Callable[..., Any] | None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The decorator `GuardBase.limit` returns (its arguments are documented there)."""
    if scope is not None:
        check_scope(scope)
    hold = any(
        isinstance(item, Concurrency)
        for entry in guard.catalogue.plans.values()
        for item in entry.limits
    )
    blocking = not inspect.iscoroutinefunction(guard._run)  # type: ignore[attr-defined]

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        admission = _Admission(
            guard,
            _getter(func, customer, "customer", by_name=True),
            _getter(func, cost, "cost", by_name=False),
            _getter(func, plan, "plan", by_name=False),
            scope,
            hold,
            fallback,
        )
        if not inspect.iscoroutinefunction(func):
            if not blocking:
                raise ConfigurationError(
                    f"{func.__qualname__} is synchronous but the guard is an AsyncGuard: "
                    "use a Guard, or make the function async"
                )
            return _sync_wrapper(func, admission, guard._run)  # type: ignore[attr-defined]
        return cast(
            Callable[P, R],
            _async_wrapper(func, admission, guard._run_awaitable),  # type: ignore[attr-defined]
        )

    return decorate


def _decision(admitted: Lease | Decision) -> Decision:
    return admitted.decision if isinstance(admitted, Lease) else admitted


def _sync_wrapper(
    func: Callable[P, R], admission: _Admission, run: Callable[[Operation[Any]], Any]
) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        admitted = run(admission.admit(args, kwargs))
        decision = _decision(admitted)
        if not decision.allowed:
            return cast(R, admission.refused(decision, args, kwargs))
        if not isinstance(admitted, Lease):
            return func(*args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException:
            run(admitted._exiting(failed=True))  # the slot is released even on error
            raise
        run(admitted._exiting(failed=False))
        return result

    return wrapper


def _async_wrapper(
    func: Callable[P, Any],
    admission: _Admission,
    run: Callable[[Operation[Any]], Awaitable[Any]],
) -> Callable[P, Awaitable[Any]]:
    call = cast(Callable[P, Awaitable[Any]], func)

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
        admitted = await run(admission.admit(args, kwargs))
        decision = _decision(admitted)
        if not decision.allowed:
            refusal = admission.refused(decision, args, kwargs)
            return await refusal if inspect.isawaitable(refusal) else refusal
        if not isinstance(admitted, Lease):
            return await call(*args, **kwargs)
        try:
            result = await call(*args, **kwargs)
        except BaseException:
            await run(admitted._exiting(failed=True))
            raise
        await run(admitted._exiting(failed=False))
        return result

    return wrapper
