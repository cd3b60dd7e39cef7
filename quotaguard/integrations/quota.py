"""One request's quota, as the middleware leaves it in the ASGI scope for the endpoint.

An endpoint whose route settles later reports its actual cost through it
(`report_cost`, `add_cost`); the usage endpoint and the FastAPI dependency reuse the
identity the middleware found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quotaguard.core.decision import Decision
from quotaguard.core.policy import Cost
from quotaguard.lease import AsyncLease

from ._types import Scope
from .identify import Identifier, Identity
from .routes import Route

__all__ = ["SCOPE_KEY", "RequestQuota", "add_cost", "report_cost", "request_quota"]

SCOPE_KEY = "quotaguard"
"""The ASGI scope key under which the middleware leaves the request's `RequestQuota`."""


class RequestQuota:
    """One request's quota: who, the decision, and the cost reported by the endpoint.

    Found at ``scope["quotaguard"]`` (see `request_quota`). An endpoint whose route
    settles later reports the actual cost with `report` (a total) or `add` (an
    increment, e.g. per streamed chunk).
    """

    __slots__ = ("actual", "decision", "identity", "lease", "route")

    def __init__(
        self, identity: Identity, decision: Decision, lease: AsyncLease | None, route: Route
    ) -> None:
        self.identity = identity
        """Who the request was charged to."""
        self.decision = decision
        """The decision that admitted it."""
        self.lease = lease
        """The reservation to settle, when the route settles later."""
        self.route = route
        """The route rule applied."""
        self.actual: Cost | None = None
        """The actual cost reported so far, or None."""

    def report(self, total: Cost) -> None:
        """Set the actual cost of the request (in the route's unit, if it has one)."""
        self.actual = total

    def add(self, units: float) -> None:
        """Add ``units`` (in the route's unit) to the actual cost reported so far."""
        actual = self.actual
        if isinstance(actual, Mapping):
            raise TypeError("add() needs a numeric cost; report() set a per-unit mapping")
        self.actual = (actual or 0) + units


def request_quota(request: Any) -> RequestQuota | None:
    """The `RequestQuota` of a request (an ASGI scope, or anything with a ``.scope``)."""
    scope = getattr(request, "scope", request)
    found = scope.get(SCOPE_KEY)
    return found if isinstance(found, RequestQuota) else None


def report_cost(request: Any, total: Cost) -> None:
    """Report the actual cost of ``request`` (a scope or a Starlette/FastAPI Request)."""
    quota = request_quota(request)
    if quota is not None:
        quota.report(total)


def add_cost(request: Any, units: float) -> None:
    """Add ``units`` to the actual cost of ``request`` (e.g. per streamed chunk)."""
    quota = request_quota(request)
    if quota is not None:
        quota.add(units)


async def identified(scope: Scope, identify: Identifier) -> Identity | None:
    """Who made the request: the middleware's identity if it saw it, else ``identify``'s."""
    quota = scope.get(SCOPE_KEY)
    if isinstance(quota, RequestQuota):
        return quota.identity
    found: Any = identify(scope)
    if found is not None and not isinstance(found, Identity):
        found = await found
    return found  # type: ignore[no-any-return]
