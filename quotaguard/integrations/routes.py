"""Route rules: what a request costs, in which scope, and which paths are exempt.

A `Route` matches a path exactly (``"/v1/chat"``) or by prefix when it ends in ``*``
(``"/admin/*"``, or ``"*"`` for everything). An exact path wins over any prefix, a
longer prefix over a shorter one, and a rule limited to some methods is skipped for
other methods. Requests no rule matches use the default route: one request (charged to
limits counted in requests, nothing to limits in other units such as tokens), no scope.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

import attrs

from quotaguard.core.errors import ConfigurationError, QuotaguardError
from quotaguard.core.policy import Cost

from ._types import RawHeaders, Scope
from .dialects.config import Dialect, dialect_of

__all__ = ["CostFunction", "JSONBody", "Route", "Routes", "SettleCallback", "exempt", "is_cost"]

CostFunction: TypeAlias = Callable[[Scope], Cost]
"""Computes a request's cost (or estimate) from its ASGI scope."""

SettleCallback: TypeAlias = Callable[[Scope, int, RawHeaders], "Cost | None"]
"""Called once the response body is complete with (scope, status, response headers);
returns the actual cost, or None to keep the estimate."""


def _methods(value: Iterable[str] | str | None) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    return frozenset(method.upper() for method in value)


def _dialect(value: Dialect | str | None) -> Dialect | None:
    return None if value is None else dialect_of(value)


def is_cost(value: object) -> bool:
    """Whether ``value`` is a cost: a finite number >= 0, or units mapped to such numbers."""
    if isinstance(value, Mapping):
        return all(isinstance(unit, str) and unit and is_cost(n) for unit, n in value.items())
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value < math.inf


@attrs.frozen
class JSONBody:
    """A route cost estimated from the request's JSON body (e.g. its ``max_tokens``).

    ``Route("/v1/chat", cost=JSONBody(lambda body: body["max_tokens"], default=1000),
    unit="tokens", reports_cost=True)``. Before deciding, the middleware reads at most
    ``max_bytes`` of the body and hands every message it read to the app untouched.
    ``estimate(document)`` gets the parsed JSON and returns the cost (a number of the
    route's unit, or a per-unit mapping); ``default`` is charged instead when the body is
    larger than ``max_bytes``, is not JSON, or ``estimate`` raises or returns something
    that is not a finite number >= 0.
    """

    estimate: Callable[[Any], Any]
    """Computes the cost from the parsed JSON body."""
    default: Cost = attrs.field()
    """The cost when the body gives none."""
    max_bytes: int = attrs.field(default=65_536)
    """The most body bytes read before deciding."""

    @default.validator
    def _check_default(self, _: attrs.Attribute[Cost], value: Cost) -> None:
        if not is_cost(value):
            raise ConfigurationError(
                f"JSONBody default must be a cost (a number >= 0), got {value!r}"
            )

    @max_bytes.validator
    def _check_max_bytes(self, _: attrs.Attribute[int], value: int) -> None:
        if value.__class__ is not int or value < 1:
            raise ConfigurationError(
                f"JSONBody max_bytes must be a whole number >= 1, got {value!r}"
            )

    def __call__(self, body: bytes | None) -> Cost:
        """The estimate for a raw ``body`` (None: larger than ``max_bytes``), else the default."""
        if body is None:
            return self.default
        try:
            found = self.estimate(json.loads(body))
        except Exception:  # not JSON (or nested too deep), or the estimate failed on it
            return self.default
        return found if is_cost(found) else self.default


def _cost(value: Cost | CostFunction | JSONBody) -> Cost | CostFunction | JSONBody:
    if callable(value) or is_cost(value):
        return value
    raise ConfigurationError(f"a route cost must be a number >= 0 or a callable, got {value!r}")


@attrs.frozen
class Route:
    """How requests to ``path`` (and ``methods``) are charged.

    ``cost`` is fixed, computed from the scope, or a `JSONBody` estimate from the
    request's JSON body. A number is an amount of ``unit``
    (default "requests"): limits counted in other units are not charged, except that
    ``requests`` limits always count the call as one request. So ``cost=800,
    unit="tokens"`` charges ``{"tokens": 800}`` (and one request), and the default
    charges one request. ``unit=None`` charges the number to every limit.

    When the actual cost is known only after the response, ``cost`` is the estimate
    reserved up front, and the actual cost comes from the response header
    ``settle_header``, from ``settle(scope, status, headers)``, or from the endpoint
    itself (``reports_cost=True``, then call `quotaguard.integrations.asgi.report_cost`).
    ``dialect`` (``"openai"``, ``"anthropic"``, a `Dialect`) overrides the middleware's
    wire dialect for these requests.
    ``exempt=True`` skips limiting entirely (health checks, ``/metrics``): no decision
    and no headers.
    """

    path: str = attrs.field()
    """An exact path, or a prefix followed by ``*``."""
    methods: frozenset[str] | None = attrs.field(default=None, converter=_methods)
    """The methods this rule applies to (upper-case); None for all."""
    cost: Cost | CostFunction | JSONBody = attrs.field(default=1, converter=_cost)
    """The cost, or the estimate when the actual cost is settled later."""
    unit: str | None = "requests"
    """The unit of numeric costs, estimates and actual costs (None: every limit's)."""
    scope: str | None = attrs.field(default=None)
    """The scope of the requests (e.g. "benchmark"), which revocations may allow."""
    exempt: bool = False
    """Do not limit these requests at all."""
    settle_header: str | None = None
    """A response header carrying the actual cost (e.g. "x-usage-tokens")."""
    settle: SettleCallback | None = None
    """A callback returning the actual cost once the body is complete."""
    reports_cost: bool = False
    """The endpoint reports the actual cost itself (`report_cost`)."""
    dialect: Dialect | None = attrs.field(default=None, converter=_dialect)
    """The wire dialect of these requests; None for the middleware's."""
    settle_header_name: bytes | None = attrs.field(init=False, repr=False, eq=False)
    """``settle_header`` as lower-case bytes."""
    fixed_cost: Cost | None = attrs.field(init=False, repr=False, eq=False)
    """The cost to charge, computed once, when ``cost`` is not a callable."""

    @path.validator
    def _check_path(self, _: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not (value.startswith("/") or value == "*"):
            raise ConfigurationError(f"a route path must start with '/' (or be '*'): {value!r}")
        if "*" in value[:-1]:
            raise ConfigurationError(f"'*' may only end a route path: {value!r}")

    @scope.validator
    def _check_scope(self, _: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None:
            from quotaguard.guard import check_scope

            try:
                check_scope(value)
            except QuotaguardError as error:
                raise ConfigurationError(f"route {self.path!r}: {error}") from None

    @settle_header_name.default
    def _settle_name(self) -> bytes | None:
        if self.settle_header is None:
            return None
        return self.settle_header.lower().encode("latin-1")

    @fixed_cost.default
    def _fixed(self) -> Cost | None:
        return None if callable(self.cost) else self.charge(self.cost)

    def charge(self, amount: Cost) -> Cost:
        """``amount`` as the cost to charge: ``{unit: amount}`` when the route has a unit."""
        if self.unit is None or isinstance(amount, Mapping):
            return amount
        return {self.unit: amount}

    def cost_of(self, scope: Scope) -> Cost:
        """The cost (or estimate) of the request ``scope`` (a `JSONBody`'s default)."""
        if self.fixed_cost is not None:
            return self.fixed_cost
        cost = self.cost
        if isinstance(cost, JSONBody):
            return self.charge(cost.default)
        return self.charge(cost(scope) if callable(cost) else cost)

    def estimate(self, body: bytes | None) -> Cost:
        """The cost to charge for a request with this JSON ``body`` (see `JSONBody`)."""
        cost = self.cost
        if not isinstance(cost, JSONBody):
            raise TypeError(f"route {self.path!r} does not estimate from the body")
        return self.charge(cost(body))

    @property
    def deferred(self) -> bool:
        """Whether the cost is an estimate settled after the response."""
        return self.settle_header is not None or self.settle is not None or self.reports_cost

    @property
    def prefix(self) -> bool:
        """Whether the path is a prefix pattern."""
        return self.path.endswith("*")


def exempt(path: str, methods: Iterable[str] | str | None = None) -> Route:
    """A rule that exempts ``path`` from limiting (e.g. ``exempt("/healthz")``)."""
    return Route(path, methods, exempt=True)


DEFAULT_ROUTE = Route("*")
"""Requests no rule matches cost one request (nothing from limits in other units)."""


class Routes:
    """The route rules of a middleware, compiled for fast matching."""

    __slots__ = ("_exact", "_prefixes", "default", "rules")

    def __init__(self, rules: Iterable[Route] = (), default: Route = DEFAULT_ROUTE) -> None:
        self.rules = tuple(rules)
        """The rules, as given."""
        self.default = default
        """The route used when no rule matches."""
        for rule in self.rules:
            if not isinstance(rule, Route):
                raise ConfigurationError(f"route rules must be Route objects, got {rule!r}")
        self._exact: dict[str, tuple[Route, ...]] = {}
        for rule in self.rules:
            if not rule.prefix:
                self._exact[rule.path] = (*self._exact.get(rule.path, ()), rule)
        self._prefixes = tuple(
            sorted((rule for rule in self.rules if rule.prefix), key=lambda r: -len(r.path))
        )

    def match(self, method: str, path: str) -> Route:
        """The rule for a request (the default route when none matches)."""
        candidates = self._exact.get(path)
        if candidates is not None:
            for rule in candidates:
                if rule.methods is None or method in rule.methods:
                    return rule
        for rule in self._prefixes:
            if path.startswith(rule.path[:-1]) and (rule.methods is None or method in rule.methods):
                return rule
        return self.default

    def __repr__(self) -> str:
        return f"Routes({list(self.rules)!r}, default={self.default!r})"
