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

The decorator is the guard's own (`Guard.limit`, in `quotaguard.guard.decorate`); this
module offers it as a function of the guard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from quotaguard.core.errors import ConfigurationError
from quotaguard.core.policy import Cost
from quotaguard.guard import AsyncGuard, Guard

__all__ = ["limit"]

P = ParamSpec("P")
R = TypeVar("R")


def limit(
    guard: Guard | AsyncGuard,
    customer: str | Callable[..., str] = "customer",
    *,
    cost: Cost | Callable[..., Cost] = 1,
    scope: str | None = None,
    plan: str | Callable[..., str | None] | None = None,
    fallback: Callable[..., Any] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator that checks ``guard`` before every call: ``guard.limit(...)``.

    The arguments are those of `Guard.limit`; anything but a `Guard` or an `AsyncGuard`
    raises `ConfigurationError`.
    """
    if not isinstance(guard, Guard | AsyncGuard):
        raise ConfigurationError(f"limit() needs a Guard or an AsyncGuard, got {guard!r}")
    return guard.limit(customer, cost=cost, scope=scope, plan=plan, fallback=fallback)
