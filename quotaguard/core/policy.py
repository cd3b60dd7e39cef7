"""The policy model: limit kinds and plans, validated at construction.

Every time inside the model is kept in integer microseconds (``*_us``); the public
constructors accept seconds or duration strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TypeAlias

import attrs

from quotaguard.core.errors import ConfigurationError, shown
from quotaguard.core.rates import (
    MAX_AMOUNT,
    MAX_DURATION_US,
    SECOND_US,
    Rate,
    parse_duration,
    parse_rate,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

# Granularities tried, in order, when a rolling window does not name one: the first that
# divides the window into at most MAX_DEFAULT_BUCKETS buckets wins.
_NICE_GRANULARITIES_S = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
MAX_DEFAULT_BUCKETS = 200
MAX_BUCKETS = 10_000


def check_name(value: str, what: str) -> str:
    """Validate a limit, plan or scope name: 1-64 of ``A-Z a-z 0-9 _ . -``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"{what} name {shown(value)} is invalid: use 1-64 characters from "
            "A-Z a-z 0-9 _ . - starting with a letter or digit"
        )
    return str.__str__(value)  # a plain str, even from a str subclass


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise ConfigurationError(
            f"{what} must be a positive integer, got {shown(value)} (at most 2**53)"
        )
    return int(value)


def _rate(value: str | Rate) -> Rate:
    if not isinstance(value, Rate):
        return parse_rate(value)
    _positive_int(value.amount, "rate amount")
    period = value.period_us
    if isinstance(period, bool) or not isinstance(period, int) or not 0 < period <= MAX_DURATION_US:
        raise ConfigurationError(f"rate period must be 1 to 2**52 microseconds, got {period!r}")
    return value


def _limit_name(value: str) -> str:
    return check_name(value, "limit")


def _plan_name(value: str) -> str:
    return check_name(value, "plan")


def _window_us(value: str | float) -> int:
    return parse_duration(value, "rolling window length")


def _granularity_us(value: str | float | None) -> int:
    # 0 stands for "not given"; __attrs_post_init__ replaces it with the default.
    return 0 if value is None else parse_duration(value, "rolling window granularity")


def _lease_ttl_us(value: str | float) -> int:
    return parse_duration(value, "concurrency lease_ttl")


@attrs.frozen(cache_hash=True)
class TokenBucket:
    """A burst limit: up to ``capacity`` units at once, refilled at ``refill``.

    ``refill`` is a rate such as ``"1/second"`` or ``"100/minute"``. Implemented as GCRA
    (a token bucket stored as one timestamp).
    """

    name: str = attrs.field(converter=_limit_name)
    capacity: int = attrs.field()
    refill: Rate = attrs.field(converter=_rate)
    unit: str = attrs.field(default="requests", kw_only=True)
    interval_us: float = attrs.field(init=False)
    """Microseconds for one unit to refill."""
    room_us: float = attrs.field(init=False, eq=False, repr=False)
    """The most backlog, in microseconds, that still admits: ``capacity * interval_us``
    and a relative 2**-36 plus 1e-9 units of tolerance for the rounding of sums, at most
    2**52 (a bucket holds at most about 142 years of refill)."""

    @capacity.validator
    def _check_capacity(self, _: attrs.Attribute[int], value: int) -> None:
        _positive_int(value, f"token bucket {self.name!r} capacity")

    @unit.validator
    def _check_unit(self, _: attrs.Attribute[str], value: str) -> None:
        check_name(value, f"limit {self.name!r} unit")

    @interval_us.default
    def _interval(self) -> float:
        return self.refill.period_us / self.refill.amount

    @room_us.default
    def _room(self) -> float:
        burst = self.capacity * self.interval_us
        # the relative slack absorbs the rounding that adding fractional intervals
        # accumulates (a burst of `capacity` unit calls adds `capacity` roundings)
        room = burst + burst * 2**-36 + 1e-9 * self.interval_us
        return room if room < MAX_DURATION_US else float(MAX_DURATION_US)

    @property
    def kind(self) -> str:
        """``"token_bucket"``."""
        return "token_bucket"

    @property
    def quota(self) -> int:
        """The most units available at once (the capacity)."""
        return self.capacity

    @property
    def window_seconds(self) -> int:
        """Seconds to refill from empty, rounded up (the ``w`` of RateLimit-Policy)."""
        return max(1, math.ceil(self.capacity * self.interval_us / SECOND_US))

    def with_quota(self, quota: int) -> TokenBucket:
        """A copy with another capacity."""
        return attrs.evolve(self, capacity=quota)


@attrs.frozen(cache_hash=True)
class RollingWindow:
    """At most ``quota`` units in any rolling ``window`` (e.g. 5,000,000 per 7 days).

    Usage is kept in buckets of ``granularity``; the window is never calendar-aligned.
    The window counted is conservative by less than one bucket: it never admits more
    than ``quota`` within any span of ``window``.
    """

    name: str = attrs.field(converter=_limit_name)
    quota: int = attrs.field()
    window_us: int = attrs.field(alias="window", converter=_window_us)
    granularity_us: int = attrs.field(alias="granularity", default=None, converter=_granularity_us)
    unit: str = attrs.field(default="requests", kw_only=True)

    @quota.validator
    def _check_quota(self, _: attrs.Attribute[int], value: int) -> None:
        _positive_int(value, f"rolling window {self.name!r} quota")

    @unit.validator
    def _check_unit(self, _: attrs.Attribute[str], value: str) -> None:
        check_name(value, f"limit {self.name!r} unit")

    def __attrs_post_init__(self) -> None:
        if self.granularity_us == 0:
            object.__setattr__(self, "granularity_us", default_granularity_us(self.window_us))

    @granularity_us.validator
    def _check_granularity(self, _: attrs.Attribute[int], value: int) -> None:
        if value == 0:
            return
        if self.window_us % value:
            raise ConfigurationError(
                f"rolling window {self.name!r}: granularity of {value / SECOND_US:g}s does not "
                f"divide the window of {self.window_us / SECOND_US:g}s"
            )
        if self.window_us // value > MAX_BUCKETS:
            raise ConfigurationError(
                f"rolling window {self.name!r}: granularity of {value / SECOND_US:g}s makes "
                f"{self.window_us // value} buckets; at most {MAX_BUCKETS} are allowed"
            )

    @classmethod
    def from_rate(
        cls,
        name: str,
        rate: str | Rate,
        granularity: str | float | None = None,
        *,
        unit: str = "requests",
    ) -> RollingWindow:
        """Build from a rate string: ``RollingWindow.from_rate("weekly", "5000000/week")``."""
        parsed = _rate(rate)
        return cls(name, parsed.amount, parsed.period_us / SECOND_US, granularity, unit=unit)

    @property
    def kind(self) -> str:
        """``"rolling_window"``."""
        return "rolling_window"

    @property
    def window_seconds(self) -> int:
        """The window in whole seconds, rounded up (the ``w`` of RateLimit-Policy)."""
        return max(1, math.ceil(self.window_us / SECOND_US))

    @property
    def buckets(self) -> int:
        """How many buckets the window spans (one more is kept while it rolls)."""
        return self.window_us // self.granularity_us

    def with_quota(self, quota: int) -> RollingWindow:
        """A copy with another quota."""
        return RollingWindow(
            self.name,
            quota,
            self.window_us / SECOND_US,
            self.granularity_us / SECOND_US,
            unit=self.unit,
        )


def default_granularity_us(window_us: int) -> int:
    """The granularity used when a rolling window names none.

    The first "round" span (1 s, 5 s, ..., 12 h) that divides the window into at most
    200 buckets; failing that, the window split into the most equal whole-second parts
    (at most 200).
    """
    for seconds in _NICE_GRANULARITIES_S:
        span = seconds * SECOND_US
        if window_us % span == 0 and window_us // span <= MAX_DEFAULT_BUCKETS:
            return span
    for count in range(MAX_DEFAULT_BUCKETS, 0, -1):
        if window_us % count == 0 and (window_us // count) % SECOND_US == 0:
            return window_us // count
    return window_us


@attrs.frozen(cache_hash=True)
class Concurrency:
    """At most ``max_in_flight`` leases held at once.

    Slots are held only by leases (``guard.reserve``); ``guard.acquire`` admits a call
    only while a slot is free. A slot that is never released frees itself after
    ``lease_ttl``.
    """

    name: str = attrs.field(converter=_limit_name)
    max_in_flight: int = attrs.field()
    lease_ttl_us: int = attrs.field(alias="lease_ttl", default=600, converter=_lease_ttl_us)
    unit: str = attrs.field(default="requests", kw_only=True)

    @max_in_flight.validator
    def _check_max(self, _: attrs.Attribute[int], value: int) -> None:
        _positive_int(value, f"concurrency limit {self.name!r} max_in_flight")

    @property
    def kind(self) -> str:
        """``"concurrency"``."""
        return "concurrency"

    @property
    def quota(self) -> int:
        """The most leases in flight at once."""
        return self.max_in_flight

    @property
    def window_seconds(self) -> int:
        """The lease time-to-live in whole seconds (the ``w`` of RateLimit-Policy)."""
        return max(1, math.ceil(self.lease_ttl_us / SECOND_US))

    def with_quota(self, quota: int) -> Concurrency:
        """A copy with another maximum."""
        return Concurrency(self.name, quota, self.lease_ttl_us / SECOND_US, unit=self.unit)


Limit: TypeAlias = TokenBucket | RollingWindow | Concurrency
"""Any limit kind."""


Cost = float | Mapping[str, float]
"""A cost: one number charged to every limit, or an amount per unit, e.g.
``{"tokens": 400}``; with a mapping, a limit whose unit is absent is charged nothing,
except ``"requests"`` limits, which are charged 1 (every call is one request)."""


def charge(limit: Limit, cost: Cost) -> float:
    """What ``cost`` charges to ``limit``."""
    if isinstance(cost, Mapping):
        return cost.get(limit.unit, 1 if limit.unit == "requests" else 0)
    return cost


def same_cost(first: Cost, second: Cost) -> bool:
    """Whether two costs are the same amounts (``1 == 1.0``; mappings unit by unit)."""
    if isinstance(first, Mapping) or isinstance(second, Mapping):
        if not (isinstance(first, Mapping) and isinstance(second, Mapping)):
            return False
        return dict(first) == dict(second)
    return first == second


def _limits(value: Iterable[Limit]) -> tuple[Limit, ...]:
    return tuple(value)


@attrs.frozen(cache_hash=True)
class Plan:
    """A named set of limits that all apply to every request of a customer on the plan.

    A plan without limits admits everything. ``shadow=True`` makes the plan decide and
    report but never block.
    """

    name: str = attrs.field(converter=_plan_name)
    limits: tuple[Limit, ...] = attrs.field(converter=_limits, default=())
    shadow: bool = attrs.field(default=False, kw_only=True)
    names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    """The limit names, in order."""

    @limits.validator
    def _check_limits(
        self, _: attrs.Attribute[tuple[Limit, ...]], value: tuple[Limit, ...]
    ) -> None:
        seen: set[str] = set()
        for limit in value:
            if not isinstance(limit, TokenBucket | RollingWindow | Concurrency):
                raise ConfigurationError(
                    f"plan {self.name!r}: {limit!r} is not a TokenBucket, RollingWindow or "
                    "Concurrency"
                )
            if limit.name in seen:
                raise ConfigurationError(f"plan {self.name!r}: duplicate limit name {limit.name!r}")
            seen.add(limit.name)

    @names.default
    def _names(self) -> tuple[str, ...]:
        return tuple(getattr(limit, "name", "") for limit in self.limits)

    def limit(self, name: str) -> Limit:
        """The limit called ``name``; `KeyError` if the plan has none."""
        for limit in self.limits:
            if limit.name == name:
                return limit
        raise KeyError(name)

    def with_overrides(self, overrides: Iterable[Limit]) -> Plan:
        """A copy whose limits of the same names are replaced by ``overrides``."""
        by_name = {limit.name: limit for limit in overrides}
        if not by_name:
            return self
        return attrs.evolve(
            self, limits=tuple(by_name.get(limit.name, limit) for limit in self.limits)
        )
